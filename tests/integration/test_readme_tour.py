"""The README's front door stays true: its five-minute tour and its minimal broker run as
written (with a free port and a temporary data directory in place of 9878 and /tmp)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

from tests.serve_process import REPO

README = (REPO / "README.md").read_text()


def _tour_commands() -> list[str]:
    block = README.split("<!-- tour -->", 1)[1].split("<!-- /tour -->", 1)[0]
    commands = []
    for code in re.findall(r"```\n(.*?)```", block, re.S):
        commands += [line for line in code.splitlines() if line.strip()]
    return commands


def _run(line: str, port: int, data_dir) -> subprocess.CompletedProcess:
    line = line.replace("/tmp/ccerx-tour", str(data_dir)).replace("9878", str(port))
    argv = shlex.split(line)
    if argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_the_five_minute_tour_runs_as_written(tmp_path, start_serve):
    commands = _tour_commands()
    assert commands[0].startswith("ccerx serve --data-dir /tmp/ccerx-tour")
    data_dir = tmp_path / "tour"
    server = start_serve("--data-dir", str(data_dir))
    outputs = {}
    for line in commands[1:]:
        done = _run(line, server.port, data_dir)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        outputs[line] = done.stdout
    broker = next(out for line, out in outputs.items() if "tour_broker" in line)
    assert "ExecutionReport new" in broker and "traded 100 t of CCER-AFF at 62.00" in broker
    state = next(out for line, out in outputs.items() if line.endswith(" state"))
    assert re.search(r"CCER-AFF\s.*\s100\s+6,200\.00\s+1", state), state
    statement = next(out for line, out in outputs.items() if "ledger statement" in line)
    assert "EMIT01" in statement and "HOLD02" in statement and "37.20" in statement


def test_the_minimal_broker_reads_what_its_comments_say(start_serve, tmp_path):
    code = README.split("**A minimal broker**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    server = start_serve("--data-dir", str(tmp_path / "data"))
    done = subprocess.run([sys.executable, "-c", code.replace("9878", str(server.port))],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    # each print's comment in the README names the message it shows
    assert "35=A" in printed[0]
    assert "35=h" in printed[1] and "340=2" in printed[1]
    assert "35=8" in printed[2] and "150=0" in printed[2] and "37=BROKER01:order-1" in printed[2]

"""benchmarks/engine_ab.py lockstep mode: two worker processes replay their flows chunk by
chunk in turn and report each one's throughput and state hash (the hash `ccerx replay` gives
for the same flow and rules), and the ratio B/A."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ccerx.benchmarks.lots_flows import LotFlowParams, write_lot_accounts, write_lot_flow
from ccerx.scripts.ccerx import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


def replay_hash(flow, accounts, rules, capsys) -> str:
    capsys.readouterr()
    assert main(["replay", str(flow), "--accounts", str(accounts), "--rules", rules,
                 "--json"]) == 0
    return json.loads(capsys.readouterr().out)["state_hash"]


def test_lockstep_reports_both_sides_with_the_replay_hashes(tmp_path, capsys):
    lots, accounts = tmp_path / "lots.ndjson", tmp_path / "accounts.json"
    write_lot_flow(lots, 9, 2_500, LotFlowParams(rules="cbeex-2023"))
    write_lot_accounts(accounts)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "engine_ab.py"),
         str(SAMPLES / "sample-flow.ndjson"), "--accounts", str(SAMPLES / "accounts.json"),
         "--rules", "continuous", "--repeat", "2", "--clock", "cpu", "--b-flow", str(lots),
         "--b-accounts", str(accounts), "--b-rules", "cbeex-2023"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    a, b = re.findall(r"^([AB]): ([\d,]+) cmd/s engine-only  state hash (\w+)", done.stdout, re.M)
    assert a[0] == "A" and b[0] == "B" and int(a[1].replace(",", "")) > 0
    assert a[2] == replay_hash(SAMPLES / "sample-flow.ndjson", SAMPLES / "accounts.json",
                               "continuous", capsys)
    assert b[2] == replay_hash(lots, accounts, "cbeex-2023", capsys)
    assert re.search(r"^B/A \d+\.\d{3}  \(cpu clock, fastest of 2 per chunk\)$", done.stdout,
                     re.M)


def test_lockstep_compiled_against_pure_python_gives_one_hash():
    """--b-pure-python: A the normal build, B the same sources as Python (CCERX_PURE_PYTHON);
    the compiled core's figure against the fallback's, with the same end state."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "engine_ab.py"),
         str(SAMPLES / "sample-flow.ndjson"), "--accounts", str(SAMPLES / "accounts.json"),
         "--repeat", "1", "--clock", "cpu", "--b-pure-python"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    a, b = re.findall(r"^([AB]): [\d,]+ cmd/s engine-only  state hash (\w+)  \((.*)\)$",
                      done.stdout, re.M)
    assert a[1] == b[1]
    assert "pure Python" in b[2] and "pure Python" not in a[2]

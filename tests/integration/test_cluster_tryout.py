"""The README's three-node try-out ("Try it: a three-node exchange on one machine") runs as
written: three NATS servers, three `ccerx serve --cluster` nodes, `ccerx cluster status`, the
tour's brokers trading through the leader, a kill -9 of the leader and a standby taking over.
Ports and the directory are replaced by free ones; nothing else is changed."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from ccerx.benchmarks.replication import NATS_SERVER, free_port
from tests.serve_process import REPO

README = (REPO / "README.md").read_text()
PORTS = (4322, 4323, 4324, 6222, 6223, 6224, 9878, 9879, 9880)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not os.path.exists(NATS_SERVER) and not os.environ.get("CCERX_REQUIRE_SERVICES"),
    reason="nats-server is not installed (.ci/run installs it)")]


def _block(name: str) -> str:
    block = README.split(f"<!-- {name} -->", 1)[1].split(f"<!-- /{name} -->", 1)[0]
    return re.search(r"```\n(.*?)```", block, re.S).group(1)


def test_the_three_node_tryout_runs_as_written(tmp_path):
    ports = {old: free_port() for old in PORTS}

    def local(text: str) -> str:
        for old, new in ports.items():
            text = text.replace(str(old), str(new))
        return text.replace("/tmp/ccerx-cluster", str(tmp_path))

    start, failover = local(_block("cluster-tryout")), local(_block("cluster-tryout-failover"))
    assert "nats-server -js" in start and "ccerx cluster status" in start
    assert failover.startswith("kill -9")
    env_line = next(line for line in start.splitlines() if line.startswith("export NATS="))
    # the processes the script starts in the background stay in its session (killed below)
    started = subprocess.Popen(["bash", "-c", start], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    sessions = [started.pid]
    try:
        out, err = started.communicate(timeout=90)
        assert started.returncode == 0, out + err      # the last status: healthy
        first, second = out.split("\nhealthy\n", 1)
        assert f"leader: n1 (FIX 127.0.0.1:{ports[9878]}; holds the lease)" in first
        assert f"node n1: leader" in first
        for node in ("n1", "n2", "n3"):
            assert re.search(rf"node {node}: (leader|standby), term \d+, stream seq \d+ "
                             r"\(behind by \d+\), command \d+", second), second
        assert second.count("copy on s") == 3 and "NOT current" not in second
        # the tour's brokers trade through the leader
        tour = subprocess.run([sys.executable, "samples/tour_broker.py", "--port",
                               str(ports[9878])], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
        assert "traded 100 t of CCER-AFF at 62.00" in tour.stdout, tour.stdout + tour.stderr
        # the same shell, as far as the reader's is concerned: its directory and $NATS
        failed_over = subprocess.Popen(["bash", "-c", f"cd {tmp_path}\n{env_line}\n{failover}"],
                                       cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, start_new_session=True)
        sessions.append(failed_over.pid)
        out, err = failed_over.communicate(timeout=120)
        assert failed_over.returncode == 0, out + err       # the last status: healthy again
        during, after = out.split("NOT HEALTHY:", 1)
        leader = re.search(r"leader: (n\d) \(FIX 127\.0\.0\.1:(\d+)", during)
        assert leader and leader.group(1) in ("n2", "n3"), out
        assert int(leader.group(2)) == ports[{"n2": 9879, "n3": 9880}[leader.group(1)]]
        assert re.search(r"node n1 has not reported for [\d.]+ s", after), out
        assert after.rstrip().endswith("healthy"), out
        assert f"leader: {leader.group(1)} " in after and re.search(r"node n1: standby", after)
    finally:
        for session in sessions:
            try:
                os.killpg(session, signal.SIGKILL)
            except ProcessLookupError:
                pass
        started.wait(10)

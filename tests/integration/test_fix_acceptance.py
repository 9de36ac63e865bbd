"""The QuickFIX FIX 4.4 server acceptance suite (59 scripts) against our gateway.

A GatewayServer with the ISLD/TW44 session on the echo application runs in a thread of
this process on a free port; ../shared/fix-acceptance/atrun.py (beside the repository) runs
every script over real TCP. Takes about 55 s: scripts 4a and 6 wait for heartbeat timers.
"""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ccerx.gateway.server import GatewayServer, conformance_session

pytestmark = pytest.mark.slow   # a long suite: CI runs it; -m "not slow" skips it

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO.parent / "shared" / "fix-acceptance"


class ServerThread:
    def __init__(self, server: GatewayServer):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_quickfix_acceptance_suite_passes_completely(tmp_path):
    if not (SUITE / "atrun.py").exists():
        pytest.fail("acceptance suite not found at %s" % SUITE)
    server = GatewayServer("127.0.0.1", 0, [conformance_session()], store_dir=tmp_path)
    with ServerThread(server):
        proc = subprocess.run(
            [sys.executable, str(SUITE / "atrun.py"), "-p", str(server.port), str(SUITE / "defs")],
            capture_output=True, text=True, timeout=300)
    summary = re.search(r"(\d+) passed, (\d+) failed", proc.stdout)
    assert summary, proc.stdout + proc.stderr
    failures = "\n".join(line for line in proc.stdout.splitlines() if "FAIL" in line or "reason" in line)
    assert (int(summary.group(1)), int(summary.group(2))) == (59, 0), failures
    assert proc.returncode == 0

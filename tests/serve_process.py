"""The one way tests start `ccerx serve`: a subprocess on a free port (`--port 0`), its log in
a file (not a pipe nobody drains), the port and control socket read from its start line.

    with ServeProcess(["--data-dir", str(tmp_path / "data")]) as server:
        Broker("BROKER01", server.port) ...

`tests/conftest.py` wraps it as the `start_serve` fixture, which also stops what a test left
running.
"""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_LINE = re.compile(r"listening on ([\d.]+):(\d+)")


class ServeProcess:
    def __init__(self, args: list[str], log_path: Path | None = None, start_timeout: float = 20,
                 env: dict | None = None):
        self.log_path = log_path
        self.log = open(log_path, "w+") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "ccerx.scripts.ccerx", "serve",
                                      "--port", "0", *args],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        try:
            self.start_line = self._wait_for_start(start_timeout)
        except BaseException:
            self.kill()
            raise
        found = START_LINE.search(self.start_line)
        self.host, self.port = found.group(1), int(found.group(2))
        control = re.search(r"control ([^)\s]+)\)?$", self.start_line.strip())
        self.control = None if control is None or control.group(1) == "none" else Path(control.group(1))

    def _wait_for_start(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if START_LINE.search(line):
                    return line
            if self.proc.poll() is not None:
                raise RuntimeError(f"ccerx serve exited {self.proc.returncode}: {self.log_text()[-2000:]}")
        raise RuntimeError(f"ccerx serve did not start listening within {timeout} s")

    def log_text(self) -> str:
        if self.log_path is None:
            return ""
        return Path(self.log_path).read_text(errors="replace")

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM (a clean shutdown) and its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """kill -9: no shutdown, no flush (what a crash leaves)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.log is not subprocess.DEVNULL and not self.log.closed:
            self.log.close()

    def __enter__(self) -> "ServeProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

"""Code run in an interpreter of its own, for tests whose measure is the whole process: what
gc.collect() finds counts every thread's garbage, and in a test process threads that earlier
tests left winding down (a Dask cluster's, an MQTT consumer's) or pytest-xdist's own make some
while the collector is off."""
from __future__ import annotations

import subprocess
import sys


def run_isolated(code: str, *args: str, timeout: float = 120) -> list[int]:
    """Run `code` with `args` as sys.argv[1:]; the integers it printed."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr
    return [int(word) for word in done.stdout.split()]

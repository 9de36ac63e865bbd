"""Fixtures shared by every suite. `start_serve(*args)` starts `ccerx serve` (see
serve_process.py) and stops it after the test; the FIX client is tests/fixclient.py."""
from __future__ import annotations

import pytest

from tests.serve_process import ServeProcess


@pytest.fixture
def start_serve(tmp_path):
    started: list[ServeProcess] = []

    def start(*args: str, log_name: str = "serve.log", **kwargs) -> ServeProcess:
        server = ServeProcess(list(args), log_path=tmp_path / log_name, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()

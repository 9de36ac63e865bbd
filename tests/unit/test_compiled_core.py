"""The compiled core (engine/native.py, setup.py): one source, compiled or pure Python.

`ccerx --version` says which runs; CCERX_PURE_PYTHON=1 runs the .py sources even where the
core was compiled, and both give the same state on the sample flow. CI sets
CCERX_EXPECT_COMPILED=1 for its normal run, so a build that silently fell back to pure
Python fails there instead of being tested as if it were compiled.
"""
from __future__ import annotations

import copy
import importlib
import importlib.machinery
import json
import os
import pickle
import subprocess
import sys

import pytest

from ccerx.engine import native
from tests.serve_process import REPO

STATE_OF_THE_SAMPLE_FLOW = """
import importlib.machinery, sys
from ccerx.engine import native
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.config import load_accounts
from ccerx.engine.formats.ndjson import parse_command
exchange = Exchange(accounts=load_accounts(sys.argv[1] + "/accounts.json"))
events = 0
for line in open(sys.argv[1] + "/sample-flow.ndjson", "rb"):
    events += len(exchange.apply(parse_command(line)))
print(native.status())
print(sys.modules["ccerx.engine.core.exchange"].__file__)
print(events, exchange.state_hash())
"""


def run_python(code: str, *args: str, pure: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_PYTHON_VARIABLE}
    if pure:
        env[native.PURE_PYTHON_VARIABLE] = "1"
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd="/", timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_status_says_what_is_loaded():
    loaded = [importlib.import_module(m) for m in native.COMPILED]
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled = [m for m in loaded if m.__file__.endswith(suffixes)]
    if compiled:
        assert len(compiled) == len(native.COMPILED), "a mix of compiled and .py modules"
        assert native.status() == f"compiled core: mypyc, {len(native.COMPILED)} modules"
    else:
        assert native.status().startswith("pure Python: ")
    if os.environ.get("CCERX_EXPECT_COMPILED") == "1":
        assert compiled, f"CI expects the compiled core, but: {native.status()}"


def test_pure_python_on_request_gives_the_same_state_as_the_normal_build():
    samples = str(REPO / "samples")
    normal = run_python(STATE_OF_THE_SAMPLE_FLOW, samples, pure=False)
    pure = run_python(STATE_OF_THE_SAMPLE_FLOW, samples, pure=True)
    assert pure[0] == f"pure Python: {native.PURE_PYTHON_VARIABLE} is set"
    assert pure[1].endswith("exchange.py")
    if os.environ.get("CCERX_EXPECT_COMPILED") == "1":
        assert normal[0].startswith("compiled core: mypyc")
    assert int(pure[2].split()[0]) > 20_000            # the flow traded and cancelled
    assert normal[2] == pure[2]                         # same events count, same state hash


def test_version_says_pure_python_when_asked():
    out = run_python("from ccerx.scripts.ccerx import main; main(['--version'])", pure=True)
    assert out[0].endswith(f"(pure Python: {native.PURE_PYTHON_VARIABLE} is set)")


def test_a_source_edited_after_the_build_is_stale(tmp_path):
    """An edit in a checkout after `pip install -e .` must run: the sources run, not the
    compiled modules of the old source."""
    engine = tmp_path / "engine"
    for module in native.COMPILED:
        path = native.source_path(module, engine)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(native.source_path(module).read_bytes())
    record = tmp_path / native.BUILD_RECORD
    record.write_text(json.dumps({"compiler": "mypyc", "sources": native.source_hashes(engine)}))
    assert native.stale_sources(record, engine) == []
    book = native.source_path("ccerx.engine.core.book", engine)
    book.write_text(book.read_text() + "\n# an edit\n")
    assert native.stale_sources(record, engine) == ["ccerx.engine.core.book"]
    record.write_text("{not json")
    assert native.stale_sources(record, engine) == ["(unreadable build record)"]


@pytest.mark.parametrize("value, pure", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_the_variable(monkeypatch, value, pure):
    monkeypatch.setenv(native.PURE_PYTHON_VARIABLE, value)
    assert native.pure_python_requested() is pure


def test_engine_values_survive_pickle_and_copy():
    """The journal pickles commands it cannot write as JSON and Dask ships specs to its
    workers: a compiled frozen dataclass (InstrumentSpec) must still round-trip."""
    from ccerx.engine.core.commands import DefineInstrument
    from ccerx.engine.core.risk import Account
    from ccerx.engine.core.types import DEFAULT_INSTRUMENTS
    spec = DEFAULT_INSTRUMENTS[0].with_ref_ticks(6300)
    for value in (spec, DefineInstrument(spec, ts=5),
                  Account("A1", cash=100, credits={"CCER-AFF": 3})):
        assert pickle.loads(pickle.dumps(value)) == value
        assert copy.deepcopy(value) == value
    assert pickle.loads(pickle.dumps(spec)).max_units == spec.max_units   # derived fields too

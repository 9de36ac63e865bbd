"""The compiled core: which engine modules are compiled to native code, and whether they run.

One source. The modules in COMPILED are ordinary typed Python that a newcomer reads as
Python; at install, setup.py compiles them with mypyc into native extension modules next to
their .py files (an editable install builds them in place) and records a hash of each
source in BUILD_RECORD. When `ccerx.engine` is imported, `choose()` decides what runs:

- the compiled modules, if they were built from the sources as they are now;
- the .py sources, all of them, if CCERX_PURE_PYTHON is set to anything but "" or "0" (the
  pure-Python fallback; CI runs the engine's property and differential tests this way too),
  or if any source changed since the build (an edit in a checkout must take effect: the
  sources run until `pip install -e .` rebuilds; a one-line warning says so on stderr).

Mixing is never done: compiled modules check the types of what crosses their boundaries
(an Order from a compiled book is not one from a .py book), so it is all or nothing.

A build without a C compiler, without mypy, or with CCERX_PURE_PYTHON=1 set at install
compiles nothing, and the same source runs as plain Python. `status()` is the one line
`ccerx --version` prints. setup.py reads this file without importing the package, so it
uses the standard library only.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

COMPILER = "mypyc"
# the hot path: vocabulary, commands and events, book, matching, reservations, routing,
# and the event encoder of replay's --events-out
COMPILED = (
    "ccerx.engine.core.types",
    "ccerx.engine.core.commands",
    "ccerx.engine.core.events",
    "ccerx.engine.core.book",
    "ccerx.engine.core.risk",
    "ccerx.engine.core.matching",
    "ccerx.engine.core.exchange",
    "ccerx.engine.formats.ndjson_events",
)
SHARED_LIBRARY = "ccerx.engine._core"   # mypyc's group name: one library holds all the code
PURE_PYTHON_VARIABLE = "CCERX_PURE_PYTHON"
BUILD_RECORD = "_compiled.json"         # in the engine package: compiler and source hashes
ENGINE_DIR = Path(__file__).resolve().parent

_why_pure = ""                          # set by choose() when the sources were preferred


def source_path(module: str, engine_dir: Path = ENGINE_DIR) -> Path:
    """ccerx.engine.core.book -> <engine_dir>/core/book.py"""
    return engine_dir.joinpath(*module.split(".")[2:]).with_suffix(".py")


def source_hashes(engine_dir: Path = ENGINE_DIR) -> dict[str, str]:
    return {module: hashlib.sha256(source_path(module, engine_dir).read_bytes()).hexdigest()
            for module in COMPILED}


def pure_python_requested() -> bool:
    return os.environ.get(PURE_PYTHON_VARIABLE, "") not in ("", "0")


class _SourcesFirst:
    """Finds the compiled modules' .py files, ahead of the extension modules beside them."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname not in COMPILED or not path:
            return None
        name = fullname.rpartition(".")[2] + ".py"
        for entry in path:
            source = os.path.join(entry, name)
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def stale_sources(record: Path, engine_dir: Path = ENGINE_DIR) -> list[str]:
    """The compiled modules whose source differs from what the build recorded."""
    try:
        built = json.loads(record.read_text())["sources"]
        return sorted(m for m, digest in source_hashes(engine_dir).items()
                      if built.get(m) != digest)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ["(unreadable build record)"]


def choose() -> None:
    """Run the sources instead of the compiled modules when asked to, when nothing was
    compiled, or when they are stale (see the module's docstring). Called once, by
    ccerx/engine/__init__.py, before any of them is imported."""
    global _why_pure
    record = ENGINE_DIR / BUILD_RECORD
    if pure_python_requested():
        _why_pure = f"{PURE_PYTHON_VARIABLE} is set"
    elif not record.is_file():       # nothing compiled (or the build failed)
        _why_pure = "the core was not compiled at install"
    else:
        stale = stale_sources(record)
        if not stale:
            return                   # the compiled modules load as usual
        _why_pure = (f"{', '.join(m.rpartition('.')[2] for m in stale)} changed since the "
                     f"core was compiled; `pip install -e .` rebuilds it")
        print(f"ccerx: running the engine as pure Python: {_why_pure}", file=sys.stderr)
    if not any(isinstance(f, _SourcesFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourcesFirst())


def compiled_modules() -> list[str]:
    """The modules of COMPILED that this process runs as native code."""
    native = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [name for name in COMPILED
            if (getattr(importlib.import_module(name), "__file__", None) or "").endswith(native)]


def status() -> str:
    """'compiled core: mypyc, 8 modules' or 'pure Python: why'; for `ccerx --version`."""
    native = compiled_modules()
    if native:
        partial = "" if len(native) == len(COMPILED) else f" of {len(COMPILED)}"
        return f"compiled core: {COMPILER}, {len(native)}{partial} modules"
    return f"pure Python: {_why_pure}"

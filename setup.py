"""Build of the compiled core: the modules engine/native.py lists are compiled with mypyc.

Everything else about the package is in pyproject.toml. At `pip install` (editable or not),
build_ext runs mypyc on those modules and the C compiler builds one shared library plus a
small extension per module, placed next to the .py files. It compiles nothing, and the
same source installs as pure Python, when:

- CCERX_PURE_PYTHON=1 is set at install;
- mypy (a build requirement in pyproject.toml) cannot be imported;
- the C compiler is missing or fails (a warning says so; the install goes on).

A typing error in a compiled module fails the build with mypy's message: the source must
stay typed (fix it, or install with CCERX_PURE_PYTHON=1).
"""
from __future__ import annotations

import json
import os
import runpy
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

ROOT = Path(__file__).resolve().parent
NATIVE = runpy.run_path(str(ROOT / "engine" / "native.py"))   # without importing the package
BUILD = ROOT / "build"
RECORD = ROOT / "engine" / NATIVE["BUILD_RECORD"]
# stands for the compiled extensions until build_ext knows them (running mypyc is slow, and
# setup.py is also run just to read metadata)
PLACEHOLDER = Extension("ccerx.engine._core_placeholder", sources=[])


def _warn(text: str) -> None:
    print(f"ccerx build: {text}", file=sys.stderr)


def _staged_sources() -> list[str]:
    """Copy the modules to compile under build/mypyc-src/ccerx/engine/..., so that mypy names
    them ccerx.engine.* (the checkout's folders are engine/..., mapped by package-dir)."""
    stage = BUILD / "mypyc-src"
    shutil.rmtree(stage, ignore_errors=True)
    paths = []
    for module in NATIVE["COMPILED"]:
        source = NATIVE["source_path"](module, ROOT / "engine")
        staged = stage.joinpath(*module.split(".")).with_suffix(".py")
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, staged)
        package, package_source = staged.parent, source.parent
        while package != stage / "ccerx":    # each package's __init__.py up to the namespace
            shutil.copyfile(package_source / "__init__.py", package / "__init__.py")
            package, package_source = package.parent, package_source.parent
        paths.append(str(staged))
    return paths


def _remove_compiled(engine_dir: Path = ROOT / "engine") -> None:
    """Delete what an earlier build compiled into engine_dir (in place: an editable install's
    .so files; or build/lib/ccerx/engine, which a later wheel would otherwise ship again)."""
    for module in NATIVE["COMPILED"] + (NATIVE["SHARED_LIBRARY"] + "__mypyc",):
        source = NATIVE["source_path"](module, engine_dir)
        for built in source.parent.glob(source.stem + ".*"):
            if built.suffix in (".so", ".pyd"):
                built.unlink()
    (engine_dir / NATIVE["BUILD_RECORD"]).unlink(missing_ok=True)


def compiled_extensions() -> list[Extension]:
    _remove_compiled()
    if os.environ.get(NATIVE["PURE_PYTHON_VARIABLE"], "") not in ("", "0"):
        _warn(f"{NATIVE['PURE_PYTHON_VARIABLE']} is set: the engine installs as pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypy (mypyc) is not installed: the engine installs as pure Python")
        return []
    paths = _staged_sources()
    os.environ["MYPYPATH"] = str(BUILD / "mypyc-src")
    # modules outside the list are not compiled and are seen as untyped (Any)
    options = ["--explicit-package-bases", "--follow-imports=skip", "--ignore-missing-imports",
               "--cache-dir", str(BUILD / "mypy-cache"), "--config-file", os.devnull]
    extensions = mypycify(options + paths, opt_level="3", group_name=NATIVE["SHARED_LIBRARY"],
                          target_dir=str(BUILD / "mypyc"))
    RECORD.write_text(json.dumps({"compiler": NATIVE["COMPILER"],
                                  "sources": NATIVE["source_hashes"](ROOT / "engine")},
                                 indent=1, sort_keys=True) + "\n")
    return extensions


class BuildCompiledCore(build_ext):
    def finalize_options(self) -> None:
        modules = self.distribution.ext_modules
        if modules and modules[0] is PLACEHOLDER:
            modules[:] = compiled_extensions()
        super().finalize_options()

    def run(self) -> None:
        if not self.inplace:
            _remove_compiled(Path(self.build_lib, "ccerx", "engine"))
        try:
            super().run()
            if self.extensions and not self.inplace:    # (a wheel: build_py ran already)
                shutil.copyfile(RECORD, Path(self.build_lib, "ccerx", "engine", RECORD.name))
        except (CCompilerError, CompileError, LinkError, ExecError, PlatformError, OSError) as why:
            # no compiler (or a broken one): leave nothing half-built, run the sources
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            RECORD.unlink(missing_ok=True)
            _warn(f"could not compile the engine ({type(why).__name__}: {str(why)[:160]}); "
                  f"it installs as pure Python")


RECORD.unlink(missing_ok=True)   # written again only by a build that compiles
setup(ext_modules=[PLACEHOLDER], cmdclass={"build_ext": BuildCompiledCore})

"""The layout contract: one installed namespace (`ccerx.*`), floors that import only downward,
and no sys.path games. Read from the source with `ast`, so a violation fails here, in CI."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib

from tests.serve_process import REPO

# floor of each package: a module may import its own package or lower floors only. The
# benchmarks measure the gateway too, so they sit above it; the gateway never imports them.
FLOORS = {"engine": 0, "gateway": 1, "benchmarks": 2, "scripts": 3}
OURS = tuple(FLOORS)


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def _our_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "ccerx" and len(parts) > 1 and parts[1] in FLOORS:
        return parts[1]
    if parts[0] in FLOORS:
        return "bare:" + parts[0]
    return None


def test_nothing_imports_upward_or_sideways_or_by_a_bare_name():
    problems = []
    for package, floor in FLOORS.items():
        for path in sorted((REPO / package).rglob("*.py")):
            for line, module in _imports(path):
                target = _our_package(module)
                if target is None:
                    continue
                where = f"{path.relative_to(REPO)}:{line} imports {module}"
                if target.startswith("bare:"):
                    problems.append(f"{where} (use ccerx.{target[5:]})")
                elif target != package and FLOORS[target] >= floor:
                    problems.append(f"{where} (floor {floor} may import only lower floors)")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The check above must be able to fail: an engine module importing the gateway."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ccerx.gateway.server import FixServer\nimport ccerx.scripts.ccerx\n")
    found = [_our_package(m) for _, m in _imports(bad)]
    assert found == ["gateway", "scripts"]
    assert all(FLOORS[f] > FLOORS["engine"] for f in found)


def test_no_sys_path_manipulation_anywhere():
    offenders = []
    for path in REPO.rglob("*.py"):
        if ".git" in path.parts or "build" in path.parts:
            continue
        text = path.read_text()
        if "sys.path.insert" in text or "sys.path.append" in text:
            if path.name != "test_layout.py":
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders


def test_pyproject_installs_every_package_under_ccerx():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {"ccerx." + ".".join(p.parent.relative_to(REPO).parts)
               for package in FLOORS for p in (REPO / package).rglob("__init__.py")}
    assert listed == on_disk
    assert config["package-dir"] == {f"ccerx.{p}": p for p in FLOORS}


def test_from_outside_the_repository_only_ccerx_names_import(tmp_path):
    probe = ("import importlib, sys\n"
             "for name in ('engine', 'gateway', 'benchmarks', 'scripts'):\n"
             "    try:\n"
             "        importlib.import_module(name)\n"
             "    except ImportError:\n"
             "        continue\n"
             "    sys.exit('bare import worked: ' + name)\n"
             "import ccerx.engine.core.exchange, ccerx.gateway.server, ccerx.scripts.ccerx\n"
             "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr

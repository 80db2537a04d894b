"""Packaging: what a gateway installs, and pins tight enough for a fresh clone to pass."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_name(req: str) -> str:
    return re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0]


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_packages(directory: Path) -> set[str]:
    """Top-level modules imported anywhere under `directory` (absolute imports)."""
    names: set[str] = set()
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"edgeopt", "simulators", "__future__"}


def distributions(modules: set[str]) -> set[str]:
    by_module = importlib.metadata.packages_distributions()
    out = set()
    for module in modules:
        assert module in by_module, f"{module} is imported but no installed package provides it"
        out.update(normal(d) for d in by_module[module])
    return out


def runtime() -> set[str]:
    return {normal(requirement_name(r)) for r in PROJECT["project"]["dependencies"]}


def with_their_requirements(names: set[str]) -> set[str]:
    """The packages and what they require unconditionally (pydantic brings pydantic-core)."""
    out = set(names)
    for name in names:
        for req in importlib.metadata.requires(name) or []:
            if ";" not in req:
                out.add(normal(requirement_name(req)))
    return out


def test_the_daemon_imports_only_its_declared_runtime_packages():
    used = distributions(imported_packages(ROOT / "edgeopt"))
    allowed = with_their_requirements(runtime())
    assert used <= allowed, f"imported but not a runtime dependency: {used - allowed}"
    # And nothing is declared that the daemon does not use (pyserial comes with pymodbus).
    unused = runtime() - used
    assert unused == set(), f"runtime dependencies edgeopt never imports: {unused}"


def test_the_simulators_need_nothing_beyond_the_runtime_packages():
    used = distributions(imported_packages(ROOT / "simulators"))
    assert used <= with_their_requirements(runtime()), used - runtime()


def test_a_gateway_install_carries_only_the_daemon():
    include = PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["edgeopt*"]  # simulators, benchmarks and tests stay in the source tree


def test_checkers_are_pinned_and_stubs_bounded():
    dev = PROJECT["project"]["optional-dependencies"]["dev"]
    by_name = {normal(requirement_name(r)): r for r in dev}
    ruff = by_name["ruff"]
    assert "==" in ruff, (
        f"ruff must be pinned exactly: format --check differs between releases ({ruff})"
    )
    assert ruff.split("==")[1] == importlib.metadata.version("ruff"), "the venv has another ruff"
    for req in dev:
        assert "<" in req or "==" in req, f"{req} has no upper bound"
    stubs = [r for n, r in by_name.items() if n.startswith("types-")]
    assert stubs and all("<" in r for r in stubs)


def test_every_runtime_dependency_has_an_upper_bound():
    for req in PROJECT["project"]["dependencies"]:
        assert "<" in req or "==" in req, f"{req} has no upper bound"

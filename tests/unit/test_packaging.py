"""pyproject.toml declares what coi imports, and no more at run time (issue 26):
requests_toolbelt was imported but came only through pylxd, and invoke, which only
tasks.py uses, was installed with every coi."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def name(requirement: str) -> str:
    """A requirement's distribution name, normalised (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def imported(folder: Path, only: str = "**/*.py") -> set[str]:
    """Top-level modules outside the standard library that the code under folder imports,
    inside functions too."""
    found: set[str] = set()
    for path in folder.glob(only):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "coi"}


def test_every_module_coi_imports_comes_from_a_declared_dependency() -> None:
    declared = {name(r) for r in PROJECT["dependencies"]}
    providers = metadata.packages_distributions()
    missing = {
        module: providers.get(module, ["?"])
        for module in sorted(imported(REPO / "coi"))
        if not declared & {name(d) for d in providers.get(module, [])}
    }
    assert missing == {}, "imported by coi/ but not in [project] dependencies"


def test_invoke_is_for_tasks_only() -> None:
    assert "invoke" not in imported(REPO / "coi")
    assert "invoke" not in {name(r) for r in PROJECT["dependencies"]}
    extras = PROJECT["optional-dependencies"]
    for extra in ("tasks", "dev"):  # dev: the test sessions run tasks.py's tests
        assert "invoke" in {name(r) for r in extras[extra]}, extra
    assert "invoke" in imported(REPO, only="tasks.py")

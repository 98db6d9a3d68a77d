"""Every command module and every session-layer module has a unit test that drives it
against the one fake Incus (tests/fakes.py), so the whole command and session path can
be changed without a live daemon: a module added without such a test fails here.

A test file covers a module when it imports that module by name and uses the fake
(imports FakeIncus, or tests/unit/fakeplus.py, which builds on it). A package's
`__init__` that holds only a docstring has no code to test and is not counted.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import coi.commands
import coi.sessions

UNIT = Path(__file__).resolve().parent
FAKES = ("tests.fakes", "tests.unit.fakeplus")


def modules() -> list[str]:
    """The dotted names of the command and session-layer modules that hold code."""
    found = []
    for package in (coi.commands, coi.sessions):
        prefix = package.__name__ + "."
        found += [package.__name__] if _has_code(package.__file__) else []
        for info in pkgutil.walk_packages(package.__path__, prefix):
            spec = info.module_finder.find_spec(info.name, None)
            if spec is not None and _has_code(spec.origin):
                found.append(info.name)
    return sorted(found)


def _has_code(origin: str | None) -> bool:
    body = ast.parse(Path(str(origin)).read_text()).body
    return bool(body[1:] if body and isinstance(body[0], ast.Expr) else body)


def imported(tree: ast.AST, known: set[str]) -> set[str]:
    """The modules of `known` a test file imports by name, at the top or in a function:
    `from a.b import c` names a.b.c when that is a module, else a.b."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in known else node.module)
    return names


def covered(known: set[str], folder: Path = UNIT) -> dict[str, list[str]]:
    """module -> the test files in folder that import it and use the fake."""
    found: dict[str, list[str]] = {name: [] for name in known}
    for path in sorted(folder.glob("test_*.py")):
        names = imported(ast.parse(path.read_text()), known | set(FAKES))
        if not names & set(FAKES):
            continue
        for name in names & known:
            found[name].append(path.name)
    return found


def test_every_command_and_session_module_has_a_unit_test_with_the_fake() -> None:
    known = modules()
    assert "coi.commands.container" in known and "coi.sessions.lifecycle" in known
    missing = sorted(name for name, files in covered(set(known)).items() if not files)
    assert not missing, f"no unit test with the fake imports: {', '.join(missing)}"


def test_the_count_covers_every_subpackage() -> None:
    """The walk reaches into coi/commands' subpackages (image, network, session, trust)."""
    known = modules()
    for area in ("image", "network", "session", "trust"):
        assert any(name.startswith(f"coi.commands.{area}.") for name in known), area


def test_a_file_that_imports_a_module_without_the_fake_does_not_count(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text("from coi.commands import port\n")
    (tmp_path / "test_faked.py").write_text(
        "def test_it():\n    from coi.commands.snapshot import create\n"
        "from tests.fakes import FakeIncus\n"
    )
    (tmp_path / "helper.py").write_text("from coi.commands import port\nimport tests.fakes\n")
    known = {"coi.commands.port", "coi.commands.snapshot"}
    assert covered(known, tmp_path) == {
        "coi.commands.port": [],
        "coi.commands.snapshot": ["test_faked.py"],
    }

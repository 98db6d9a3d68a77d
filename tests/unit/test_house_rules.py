"""Two house rules the style guide states, held by a test so they stay true.

- No coi module over 500 lines: a longer one does more than one job; split it by job.
- No renaming import of a coi module (`from coi.x import mod as m`, `import coi.x as m`):
  one alias hides which of two modules a call goes to. Importing a *name* under another
  name (`from coi.x import f as g`) is not this rule's business.

Both read the source with ast, so comments and strings that look like imports do not count.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "coi"
MAX_LINES = 500
# Modules being split right now by another change; each entry must still be too long (the
# test says when to drop it), so the list cannot hide a new offender.
PENDING: set[str] = set()
# Where the renaming-import rule holds: the package, its tests, benchmarks, task runners, docs.
CHECKED = ("coi", "tests", "bench", "docs", "tasks.py", "noxfile.py")


def python_files() -> Iterator[Path]:
    for name in CHECKED:
        path = REPO / name
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(path.rglob("*.py"))


def is_coi_module(dotted: str) -> bool:
    """Whether DOTTED names a module or package of coi (a file or folder under coi/)."""
    parts = dotted.split(".")
    if parts[0] != "coi":
        return False
    base = REPO.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module a `from ... import` reads from, relative levels resolved."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(REPO).with_suffix("").parts)[:-1]  # x.py or __init__.py
    package = package[: len(package) - node.level + 1]
    return ".".join([*package, *([node.module] if node.module else [])])


def renaming_imports(source: str, path: Path) -> Iterator[str]:
    """Each import in SOURCE that binds a coi module to a name of its own choosing."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and is_coi_module(alias.name):
                    yield f"import {alias.name} as {alias.asname}"
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, path)
            for alias in node.names:
                if alias.asname and is_coi_module(f"{base}.{alias.name}"):
                    yield f"from {base} import {alias.name} as {alias.asname}"


def long_modules(limit: int = MAX_LINES) -> dict[str, int]:
    """Modules under coi/ longer than LIMIT lines, with their length."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        count = len(path.read_text().splitlines())
        if count > limit:
            found[str(path.relative_to(REPO))] = count
    return found


def test_the_rules_see_what_they_forbid() -> None:
    """The checks are not blind: each finds a planted offence and lets the allowed forms pass."""
    here = PACKAGE / "commands" / "x.py"
    bad = (
        "from coi.network import nft as rules\n"
        "import coi.config.load as load\n"
        "from . import cli as table\n"
        "from ..config import schema as s\n"
        "def f():\n    from coi import sessions as s\n"
    )
    assert list(renaming_imports(bad, here)) == [
        "from coi.network import nft as rules",
        "import coi.config.load as load",
        "from coi.commands import cli as table",
        "from coi.config import schema as s",
        "from coi import sessions as s",
    ]
    fine = (
        "from coi.network import nft\n"
        "import coi.config.load\n"
        "from coi.config.schema import NETWORK_MODES as MODES\n"  # a name, not a module
        "import json as j\n"
        "from pathlib import Path as P\n"
    )
    assert list(renaming_imports(fine, here)) == []
    assert long_modules(limit=0), "every module has more than zero lines"


def test_no_coi_module_is_over_500_lines() -> None:
    too_long = long_modules()
    done = PENDING - set(too_long)
    assert done == set(), f"{done} is short enough now: drop it from PENDING"
    rest = {path: n for path, n in too_long.items() if path not in PENDING}
    assert rest == {}, f"split these by job (limit {MAX_LINES} lines): {rest}"


def test_no_renaming_import_of_a_coi_module() -> None:
    found = [
        f"{path.relative_to(REPO)}: {text}"
        for path in python_files()
        for text in renaming_imports(path.read_text(), path)
    ]
    assert found == [], "import the module by its own name:\n" + "\n".join(found)


def _own_imports(path: Path, package: str) -> Iterator[str]:
    """The modules of PACKAGE (dotted, relative imports resolved) that PATH imports at its
    top level (a function's own import runs only when the function is called: coi-view's
    copy never calls protect_host.through_helper, which imports coi.core.proc)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, path)
            if base.split(".")[0] != package:
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if is_coi_module(full) else base


def test_the_root_helpers_copies_hold_every_file_they_import() -> None:
    """`coi setup` installs copies of a few files as root helpers (coi/host/netrules.py):
    a module split out of one of them must join its SOURCES, or the copy fails to import."""
    from coi.boundary import protect_host
    from coi.network import nft_cli

    network = REPO / "coi" / "network"
    copied = {f"coi.network.{name.removesuffix('.py')}" for name in nft_cli.SOURCES}
    for name in nft_cli.SOURCES:
        missing = set(_own_imports(network / name, "coi")) - copied
        assert missing == set(), f"coi-netrules: {name} imports {missing}, not in its SOURCES"
    view = {rel.removesuffix(".py").replace("/", ".") for rel in protect_host.SOURCES}
    for rel in protect_host.SOURCES:
        found = set(_own_imports(REPO / rel, "coi")) - view - {"coi", "coi.core", "coi.boundary"}
        assert found == set(), f"coi-view: {rel} imports {found}, not in its SOURCES"

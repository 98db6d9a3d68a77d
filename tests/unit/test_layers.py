"""The house rules of coi's package layout: no import circle, and arrows only go down.

Every import counts, also those inside functions (they run too, only later); imports
under `if TYPE_CHECKING:` count for the layers but not for circles, since they never run.
The layers are the README's map ("How it works here"); a module may import its own
package and any package of a lower layer.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "coi"

# Bottom to top; the README's map lists the same.
LAYERS: list[set[str]] = [
    {"core"},
    {"incus", "boundary", "workspace"},
    {"network"},
    {"config"},
    {"broker"},
    {"launch"},
    {"images"},
    {"host", "sessions"},
    {"remote"},
    {"commands", "testing"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def _type_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str) -> Iterator[tuple[str, bool]]:
    """(imported coi module, runs at all) for each import in the module NAME."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_only(node):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        runs = id(node) not in typing_only
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _known(alias.name, runs)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield from _known(full if full in MODULES else base, runs)


def _known(target: str, runs: bool) -> Iterator[tuple[str, bool]]:
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    if target.startswith("coi"):
        yield target, runs


@cache
def graph(*, running_only: bool) -> dict[str, set[str]]:
    return {
        name: {t for t, runs in imports(name) if t != name and (runs or not running_only)}
        for name in MODULES
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import circle as a list of modules (first == last), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return []


def layer_of(name: str) -> int | None:
    """The layer of the package NAME lives in; None for coi itself and its top files."""
    parts = name.split(".")
    if len(parts) < 2 or parts[1] not in {p for layer in LAYERS for p in layer}:
        return None
    return next(i for i, layer in enumerate(LAYERS) if parts[1] in layer)


def test_find_cycle_sees_a_circle_and_no_false_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_imports_reads_function_level_and_relative_imports() -> None:
    assert "coi.network.nft" in dict(imports("coi.network.nft_helper"))  # `from . import nft`
    assert "coi.network.nft_helper" in dict(imports("coi.network.nft_guard"))  # `from .nft_helper`
    assert "coi.host.netrules" in dict(imports("coi.host.setup"))  # inside a function


def test_no_import_circle_among_coi_modules() -> None:
    cycle = find_cycle(graph(running_only=True))
    assert cycle == [], "import circle: " + " -> ".join(cycle)


def test_every_package_sits_in_a_layer() -> None:
    packages = {n.split(".")[1] for n in MODULES if n.count(".") >= 1}
    loose = {p for p in packages if layer_of(f"coi.{p}.x") is None}
    top_files = {"__main__", "__init__"}
    assert loose <= top_files, f"packages missing from LAYERS and the README map: {loose}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_only_go_down(name: str) -> None:
    mine = layer_of(name)
    if mine is None:
        return
    own = name.split(".")[1]
    upward = sorted(
        target
        for target in graph(running_only=False)[name]
        if (theirs := layer_of(target)) is not None
        and target.split(".")[1] != own
        and theirs >= mine
    )
    assert upward == [], f"{name} imports a package of its own or a higher layer: {upward}"


def test_the_network_modes_are_named_once_and_the_helpers_copies_agree() -> None:
    """coi/core/labels.Mode names the modes; the root helper's self-contained copy of the
    rule generator (coi/network/nft.py) and its guard spell them too, and must agree."""
    from coi.config import schema
    from coi.core.labels import Mode
    from coi.network import nft, nft_guard

    assert set(schema.NETWORK_MODES) == set(Mode) == set(nft.MODES)
    assert set(nft_guard.GUARDED) == set(Mode) - {Mode.OPEN}

"""Raw REST paths live only in coi/incus/: the rest of coi speaks the verbs of IncusAPI, so
the one fake can answer everything it asks. Read from the source (ast), not by grep: a path
is a string constant, or the constant head of an f-string."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import coi

COLLECTIONS = (
    "instances|images|networks|network-acls|storage-pools|projects|profiles|operations"
    "|certificates|cluster|events|warnings|resources|metrics"
)
# "instances", "networks/{...}", "/1.0/instances?...": a collection, alone or followed by a
# path or a query, or anything under /1.0.
PATH = re.compile(rf"^/?(1\.0(/|$)|({COLLECTIONS})(/|\?|$))")
NESTED = re.compile(rf"^/?(1\.0/|({COLLECTIONS})/)")  # unmistakably a path, wherever it is
VERBS = {"get", "call", "post", "put", "patch", "delete", "request", "find", "exists", "names"}
VERBS |= {"raw", "json"}

# Modules that run apart from coi and talk to the local daemon with their own few lines of
# http.client, each for a reason that keeps the adapter out of it.
STANDALONE = {
    # the root helper: sudo runs an installed, root-owned copy that imports no coi module
    "network/nft_helper.py",
    "network/nft_guard.py",
    "network/nflog.py",
    # the view helper sudo runs: it must not import coi's package from a user's path
    "boundary/view_cli.py",
    # the credential broker's asyncio loop asks one status without a blocking client
    "broker/server.py",
}


def head(node: ast.expr) -> str | None:
    """The text a string constant holds, or an f-string's leading constant part."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        text = ""
        for part in node.values:
            if not isinstance(part, ast.Constant):
                return text + "{}"
            text += str(part.value)
        return text
    return None


def in_call(call: ast.Call) -> bool:
    """A call that hands a REST path to a request method. A bare collection name given to
    `.get` counts only with a request's other arguments (a `what` text or a query), since
    `record.get("profiles")` is a dict's."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr in VERBS):
        return False
    texts = [head(a) for a in [*call.args, *(k.value for k in call.keywords)]]
    paths = [t for t in texts if t is not None and PATH.match(t)]
    if not paths:
        return False
    if call.func.attr != "get" or any(NESTED.match(p) for p in paths):
        return True
    second = call.args[1] if len(call.args) > 1 else None
    return bool(call.keywords) or (second is not None and head(second) is not None)


def leaks(source: str, filename: str = "<source>") -> list[str]:
    """Where source spells a REST path outside coi/incus/: 'line: code', once a line."""
    found: dict[int, str] = {}
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call) and in_call(node):
            found.setdefault(node.lineno, ast.unparse(node)[:100])
        elif isinstance(node, ast.Constant | ast.JoinedStr):
            text = head(node)
            if text is not None and NESTED.match(text):
                found.setdefault(node.lineno, ast.unparse(node)[:100])
    return [f"{line}: {code}" for line, code in sorted(found.items())]


def test_no_rest_path_outside_the_adapter() -> None:
    root = Path(coi.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith("incus/") or relative in STANDALONE:
            continue
        found += [f"coi/{relative}:{where}" for where in leaks(path.read_text(), str(path))]
    assert found == [], "REST paths outside coi/incus/ (add a verb to IncusAPI):\n" + "\n".join(
        found
    )


def test_the_check_sees_each_way_of_spelling_a_path() -> None:
    spelled = {
        'incus.get("instances", "listing instances", recursion=1)': 1,
        'incus.call("PATCH", f"instances/{name}", {"config": c})': 1,
        'incus.exists(f"networks/{bridge}")': 1,
        'conn.names("profiles")': 1,
        'incus.get(f"storage-pools/{pool}")': 1,
        'where = f"/1.0/instances/{name}"': 1,
        'volume = f"storage-pools/{pool}/volumes/custom/{name}"': 1,
    }
    for source, count in spelled.items():
        assert len(leaks(source)) >= count, source


def test_the_check_leaves_dict_lookups_and_words_alone() -> None:
    for source in (
        'merged.get("profiles", {})',
        'inst.get("profiles") or []',
        '(op.get("resources") or {}).get("instances", ())',
        'print("instances of the project")',
        "incus.instances(state=True)",
        "incus.network(bridge)",
    ):
        assert leaks(source) == [], source

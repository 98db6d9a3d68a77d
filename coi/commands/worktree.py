"""`coi worktree list|merge|discard NAME`: the git worktrees that slots work in.

NAME is a session container's name (its branch), a slot number N (branch coi/N) or a
branch of the workspace (--workspace or the current folder) that has a coi worktree.
This module is both the command table (cheap to import) and the commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.commands.cli import Command
from coi.commands.common import connect, workspace_of
from coi.core import labels, output
from coi.core.errors import UsageError

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI
    from coi.workspace.worktree import Worktree

W = "coi.commands.worktree:"
BRANCH_KEY = labels.WORKTREE_BRANCH
WORKSPACE_KEY = labels.WORKSPACE


def _users(incus: IncusAPI, workspace: Path) -> dict[str, tuple[str, str]]:
    """branch -> (container, status) for this workspace's worktree containers."""
    found = {}
    for inst in incus.instances():
        config = inst.get("config") or {}
        if config.get(WORKSPACE_KEY) == str(workspace) and config.get(BRANCH_KEY):
            found[config[BRANCH_KEY]] = (inst["name"], str(inst.get("status", "")).lower())
    return found


def list_(args: argparse.Namespace) -> int:
    """The coi worktrees of this workspace, with the container that uses each."""
    from coi.workspace import worktree

    workspace = workspace_of(args)
    users = _users(connect(args), workspace)
    rows = []
    for tree in worktree.all_of(workspace):
        container, status = users.get(tree.branch, ("", ""))
        rows.append({**tree.to_dict(), "container": container, "status": status})
    if args.format == "json":
        output.emit_json(rows)
        return 0
    keys = ["branch", "container", "status", "path"]
    output.table(keys, [[r[k] for k in keys] for r in rows])
    return 0


def _resolve(args: argparse.Namespace) -> tuple[Path, Worktree, dict[str, Any]]:
    """(workspace, worktree, the config of the container using it or {}) for NAME."""
    from coi.workspace import worktree

    incus = connect(args)
    listing = incus.instances()
    named = {i["name"]: (i.get("config") or {}) for i in listing}
    if BRANCH_KEY in named.get(args.name, {}):
        config = named[args.name]
        workspace, branch = Path(config[WORKSPACE_KEY]), config[BRANCH_KEY]
    else:
        workspace = workspace_of(args)
        branch = worktree.default_branch(int(args.name)) if args.name.isdigit() else args.name
    mine = {t.branch: t for t in worktree.all_of(workspace)}
    if branch not in mine:
        raise UsageError(f"no coi worktree {branch} in {workspace}: see `coi worktree list`")
    user = next(
        (
            dict(c, _name=n)
            for n, c in named.items()
            if c.get(WORKSPACE_KEY) == str(workspace) and c.get(BRANCH_KEY) == branch
        ),
        {},
    )
    if user:
        status = next(i.get("status") for i in listing if i["name"] == user["_name"])
        user["_status"] = str(status)
    return workspace, mine[branch], user


def merge(args: argparse.Namespace) -> int:
    """Merge a worktree's branch into the workspace's current branch (no conflict: or nothing)."""
    from coi.sessions import freeze
    from coi.workspace import worktree

    workspace, tree, _ = _resolve(args)
    with freeze.frozen(connect(args), workspace):
        head = worktree.merge(workspace, tree.branch)
    output.info(f"merged {tree.branch} into {workspace} (HEAD {head[:12]})")
    return 0


def discard(args: argparse.Namespace) -> int:
    """Remove a worktree and its branch (not while a container uses it)."""
    from coi.workspace import worktree

    workspace, tree, user = _resolve(args)
    if user:
        what = "runs" if user["_status"] != "Stopped" else "is kept (persistent)"
        raise UsageError(
            f"{user['_name']} {what} in worktree {tree.branch}: "
            f"`coi shutdown {user['_name']}` or `coi kill {user['_name']}` first"
        )
    from coi.sessions import freeze

    with freeze.frozen(connect(args), workspace):
        worktree.discard(workspace, tree)
    output.info(f"discarded worktree {tree.branch} ({tree.path}) and its branch")
    return 0


def _fmt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="container name, slot number or branch")


COMMANDS: dict[str, Command] = {
    "worktree": Command(
        help="the git worktrees slots work in (`coi shell --worktree`): list, merge, discard",
        sub={
            "list": Command(W + "list_", "list this workspace's coi worktrees", _fmt, True),
            "merge": Command(
                W + "merge", "merge NAME's branch into the current branch", _name, True
            ),
            "discard": Command(W + "discard", "remove NAME's worktree and its branch", _name, True),
        },
    ),
}

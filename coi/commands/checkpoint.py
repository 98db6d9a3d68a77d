"""`coi checkpoint [create|list|prune]`, `coi diff`, `coi rollback`: undo for agents.

This module is both the command table (cheap to import) and the commands.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from coi.commands.cli import PLACE, Command
from coi.commands.common import load_config, workspace_of
from coi.core import output

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from coi.config.load import Config
    from coi.workspace import checkpoints

C = "coi.commands.checkpoint:"


def create(args: argparse.Namespace) -> int:
    """Record the workspace's files now."""
    from coi.workspace import checkpoints

    cap = load_config(args).checkpoints.max_bytes
    workspace = workspace_of(args)
    made = checkpoints.create(
        workspace, args.name, args.message or "", held(workspace), max_size=cap
    )
    output.info(f"checkpoint {made.id} ({made.kind}) of {workspace}")
    return 0


def held(workspace: Path) -> checkpoints.Held:
    """What the running sessions' locked views hold in workspace (nothing without root)."""
    from coi.boundary import protect_host
    from coi.workspace import checkpoints

    return checkpoints.Held(*protect_host.held(workspace))


def frozen(cfg: Config, workspace: Path) -> AbstractContextManager[list[str]]:
    """The workspace's running containers frozen for a block (coi/sessions/freeze.py). Only
    this host's daemon runs containers that mount this folder, whatever remote the config
    or `coi remote switch` names; with no Incus here (no socket) nothing can run it."""
    import contextlib
    import os

    from coi.incus.adapter import Endpoint, connect, socket_path
    from coi.sessions import freeze

    here = socket_path()
    if not os.path.exists(here):
        return contextlib.nullcontext([])
    section = cfg.incus
    incus = connect(project=section.project, group=section.group, endpoint=Endpoint(here))
    return freeze.frozen(incus, workspace)


def list_(args: argparse.Namespace) -> int:
    """The workspace's checkpoints, newest first."""
    from coi.workspace import checkpoints

    found = checkpoints.all_of(workspace_of(args))
    if args.format == "json":
        output.emit_json([c.to_dict() for c in found])
        return 0
    rows = [[c.id, c.kind, _when(c.created), c.message] for c in found]
    output.table(["id", "kind", "created", "message"], rows)
    return 0


def _when(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def prune(args: argparse.Namespace) -> int:
    """Keep the newest N checkpoints."""
    from coi.workspace import checkpoints

    gone = checkpoints.prune(workspace_of(args), args.keep)
    output.info(f"deleted {len(gone)} checkpoint(s), kept the newest {args.keep}")
    return 0


def diff(args: argparse.Namespace) -> int:
    """What changed in the workspace since a checkpoint (the newest by default)."""
    from coi.workspace import checkpoints

    workspace = workspace_of(args)
    since = checkpoints.find(workspace, args.checkpoint)
    changes = checkpoints.diff(workspace, since, held(workspace))
    if args.format == "json":
        output.emit_json({"checkpoint": since.id, "changes": [
            {"status": s, "path": p} for s, p in changes]})  # fmt: skip
        return 0
    output.info(f"since {since.id}: {len(changes)} path(s) changed")
    for status, path in changes:
        output.data(f"{status}\t{path}")
    return 0


def rollback(args: argparse.Namespace) -> int:
    """Put the workspace's files back as a checkpoint had them; the state before is saved."""
    from coi.workspace import checkpoints

    workspace = workspace_of(args)
    target = checkpoints.find(workspace, args.checkpoint)
    cfg = load_config(args)
    with frozen(cfg, workspace) as still:
        if still:
            output.detail(f"frozen while the files go back: {', '.join(still)}")
        saved, left = checkpoints.rollback(
            workspace, target, held(workspace), max_size=cfg.checkpoints.max_bytes
        )
    output.info(
        f"rolled {workspace} back to {target.id}; the state before is checkpoint "
        f"{saved.id} (`coi rollback {saved.id}` undoes this)"
    )
    if left:
        output.warn(
            f"left as they are, held read-only by a running session: {', '.join(left)} "
            "(roll back again once it ends)"
        )
    return 0


def _create(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME", help="a short name (default: manual)")
    p.add_argument("-m", "--message", metavar="MSG", help="what this checkpoint is for")


def _fmt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")


def _prune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", type=int, required=True, metavar="N", help="newest ones kept")


def _which(p: argparse.ArgumentParser) -> None:
    what = "id, start of one, or name (default: newest)"
    p.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT", help=what)


def _diff(p: argparse.ArgumentParser) -> None:
    _which(p)
    _fmt(p)


HERE = ("workspace",)  # list, prune and diff read no config

COMMANDS: dict[str, Command] = {
    "checkpoint": Command(
        help="record the workspace's files (`coi checkpoint [NAME] [-m MSG]`), list, prune",
        default="create",
        sub={
            "create": Command(C + "create", "record the workspace's files now", _create, PLACE),
            "list": Command(C + "list_", "list this workspace's checkpoints", _fmt, HERE),
            "prune": Command(C + "prune", "keep only the newest N checkpoints", _prune, HERE),
        },
    ),
    "diff": Command(C + "diff", "what changed since a checkpoint", _diff, HERE),
    "rollback": Command(
        C + "rollback", "put the files back as a checkpoint had them (undoable)", _which, PLACE
    ),
}

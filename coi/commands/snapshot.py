"""`coi snapshot create|list|restore|delete NAME [SNAP]`: snapshots of persistent
containers through Incus (copy-on-write on btrfs), restoring the container's own
filesystem: installed packages, the tool's state.

This module is both the command table (cheap to import) and the commands.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import TYPE_CHECKING

from coi.commands.cli import Command
from coi.commands.common import connect
from coi.core import labels, output
from coi.core.errors import NotFound, UsageError

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

S = "coi.commands.snapshot:"
SNAP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _persistent(args: argparse.Namespace) -> IncusAPI:
    """The connection, once NAME is known to be a persistent coi container."""
    incus = connect(args)
    config = incus.instance(args.name).get("config") or {}
    if config.get(labels.PERSISTENT) != "true":
        raise UsageError(
            f"{args.name} is not persistent, so it is deleted when its session ends: "
            f"`coi persist {args.name}` first"
        )
    return incus


def _snap_name(raw: str | None) -> str:
    name = raw or time.strftime("snap-%Y%m%d-%H%M%S", time.gmtime())
    if not SNAP_NAME.fullmatch(name):
        raise UsageError(f"snapshot name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


def create(args: argparse.Namespace) -> int:
    """Snapshot a persistent container now."""
    incus = _persistent(args)
    snap = _snap_name(args.snapshot)
    if any(s["name"] == snap for s in incus.snapshots(args.name)):
        raise UsageError(f"{args.name} already has a snapshot {snap}: pick another name")
    incus.create_snapshot(args.name, snap)
    output.info(f"snapshot {args.name}/{snap} taken; `coi snapshot restore {args.name} {snap}`")
    return 0


def list_(args: argparse.Namespace) -> int:
    """A container's snapshots, oldest first."""
    incus = connect(args)
    rows = [
        {"name": s["name"], "created": s.get("created_at", "")} for s in incus.snapshots(args.name)
    ]
    if args.format == "json":
        output.emit_json(rows)
    else:
        output.table(["name", "created"], [[r["name"], r["created"]] for r in rows])
    return 0


def _existing(incus: IncusAPI, name: str, raw: str | None) -> str:
    """The snapshot named, or the newest one."""
    snaps = [s["name"] for s in incus.snapshots(name)]
    if not snaps:
        raise NotFound(f"{name} has no snapshot: take one with `coi snapshot create {name}`")
    if raw is None:
        return str(snaps[-1])
    if raw not in snaps:
        raise NotFound(f"{name} has no snapshot {raw}: see `coi snapshot list {name}`")
    return raw


def restore(args: argparse.Namespace) -> int:
    """Put a persistent container back as a snapshot (the newest by default) had it."""
    from coi.launch import executor

    incus = _persistent(args)
    snap = _existing(incus, args.name, args.snapshot)
    with executor.changing(incus, args.name):  # a stopped container's disks name its views
        incus.restore_snapshot(args.name, snap)
    output.info(f"{args.name} restored to its snapshot {snap}")
    return 0


def delete(args: argparse.Namespace) -> int:
    """Delete a snapshot."""
    incus = connect(args)
    if args.snapshot is None:
        raise UsageError(f"name the snapshot to delete: `coi snapshot list {args.name}`")
    incus.delete_snapshot(args.name, _existing(incus, args.name, args.snapshot))
    return 0


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="a persistent coi container")
    p.add_argument("snapshot", nargs="?", metavar="SNAP")


def _list(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("--format", choices=["text", "json"], default="text")


COMMANDS: dict[str, Command] = {
    "snapshot": Command(
        help="snapshots of persistent containers (their own filesystem)",
        sub={
            "create": Command(S + "create", "snapshot NAME now (SNAP: a name)", _target),
            "list": Command(S + "list_", "list NAME's snapshots", _list),
            "restore": Command(S + "restore", "put NAME back as SNAP (default: newest)", _target),
            "delete": Command(S + "delete", "delete NAME's snapshot SNAP", _target),
        },
    )
}

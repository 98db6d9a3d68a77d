"""`coi pool status|fill|drain`: the warm pool of booted containers that a workspace's
next sessions take (coi/sessions/pool.py; `[pool] size` says how many).

This module is both the command table (cheap to import: `coi list` reads it too) and the
commands.
"""

from __future__ import annotations

import argparse

from coi.commands.cli import PLACE, Command
from coi.commands.common import connect, load_config, session_request, workspace_of
from coi.core import output
from coi.core.errors import UsageError

P = "coi.commands.pool:"


def status(args: argparse.Namespace) -> int:
    """Every pooled container of the project; the configured size of this workspace's pool."""
    from coi.core import slots
    from coi.sessions import pool

    cfg = load_config(args)
    incus = connect(args, cfg)
    listing = incus.instances()
    members = pool.members(listing, slots.prefix())
    here = slots.workspace_id(workspace_of(args))
    ready = sum(1 for m in members if m.workspace_id == here and m.state == "ready")
    if args.format == "json":
        output.emit_json(
            {
                "size": cfg.pool.size,
                "ready": ready,
                "containers": [
                    {"name": m.name, "workspace": m.workspace, "slot": m.slot, "state": m.state}
                    for m in members
                ],
            }
        )
        return 0
    output.table(
        ["name", "state", "slot", "workspace"],
        [[m.name, m.state, m.slot, m.workspace] for m in members],
    )
    output.info(f"this workspace: {ready} ready of [pool] size {cfg.pool.size}")
    return 0


def fill(args: argparse.Namespace) -> int:
    """Bring this workspace's pool to its size now (waits for a filler already running)."""
    from coi.sessions import lifecycle

    if args.size is not None and args.size < 0:
        raise UsageError("--size must be 0 or more")
    made = lifecycle.fill_pool(session_request(args), args.size)
    if not made:
        output.info("the pool is full: nothing to make")
    return 0


def drain(args: argparse.Namespace) -> int:
    """Remove this workspace's pooled containers (--all: every workspace's)."""
    from coi.sessions import lifecycle

    incus = connect(args)
    workspace = None if args.all else workspace_of(args)
    removed = lifecycle.drain_pool(incus, workspace, output.info)
    if not removed:
        output.info("no pooled container to remove")
    return 0


def _status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "json"), default="table")


def _fill(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size", type=int, metavar="N", help="how many to keep ready (default: [pool] size)"
    )


def _drain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="every workspace's pool")


# What a pooled container is made for (its pool key); a persistent session takes none.
FILL = (*PLACE, "image", "env", "storage", "mount", "network", "tool")

COMMANDS: dict[str, Command] = {
    "pool": Command(
        help="the warm pool: booted containers ready for this workspace's next sessions",
        sub={
            "status": Command(
                P + "status", "list pooled containers and this pool's size", _status, True
            ),
            "fill": Command(P + "fill", "make the missing pooled containers now", _fill, FILL),
            "drain": Command(
                P + "drain", "remove this workspace's pooled containers", _drain, True
            ),
        },
    )
}

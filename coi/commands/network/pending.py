"""`coi network pending|approve|reject|check`: a person decides what a fenced container asked
for, and checks a destination against the rules before or while they run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from coi.commands.common import connect, load_config
from coi.core import output
from coi.core.errors import CoiError, UsageError

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.api import IncusAPI


def pending(args: argparse.Namespace) -> int:
    """List the pending requests of NAME (without NAME: of every restricted or allowlist
    container of the project)."""
    from coi.commands.network import approval

    incus = connect(args)
    names = [args.name] if args.name else approval.fenced(incus)
    found = {n: approval.listing(incus, n) for n in names}
    if args.format == "json":
        output.emit_json(
            {
                "pending": [
                    {"container": n, **item.as_json()}
                    for n, got in found.items()
                    for item in got.items
                ],
                "dropped": {n: got.dropped for n, got in found.items() if got.dropped},
            }
        )
        return 0
    rows = [
        (
            n,
            i.id,
            i.dest,
            i.kind,
            i.rule or "-",
            i.count,
            i.last,
            i.reason or ", ".join(i.names) or "-",
        )
        for n, got in found.items()
        for i in got.items
    ]
    output.table(["container", "id", "destination", "kind", "rule", "seen", "last", "reason"], rows)
    for n, got in found.items():
        if got.dropped:
            output.warn(f"{n}: {got.dropped} older requests not listed (at most 64 are kept)")
    if rows:
        output.info(
            "approve: coi network approve NAME ID [--save]; reject: coi network reject NAME ID"
        )
    return 0


def approve(args: argparse.Namespace) -> int:
    """Open pending request ID of NAME now, without a restart (--save: in the workspace's
    own config file too)."""
    from coi.commands.network import approval

    incus = connect(args)
    done = approval.approve(incus, args.name, args.id, save=args.save)
    if done.opened:
        output.info(f"{args.name}: approved {done.entry}; open now: {' '.join(done.opened)}")
    else:
        output.warn(f"{args.name}: approved {done.entry}, but it opens no address now (see above)")
    if done.saved is not None:
        output.info(f"saved: {done.saved} [network] allowed_domains")
    return 0


def reject(args: argparse.Namespace) -> int:
    """Keep pending request ID of NAME shut and take it off the list."""
    from coi.commands.network import approval

    item = approval.reject(connect(args), args.name, args.id)
    output.info(f"{args.name}: rejected {item.dest}; it stays blocked")
    return 0


def check(args: argparse.Namespace) -> int:
    """Say whether DEST is allowed or blocked and which rule decides: for the running
    container NAME (its rules), or without NAME for the config as it stands."""
    from coi.commands.network import approval

    if args.name is None:
        raise UsageError("coi network check needs a destination: coi network check [NAME] DEST")
    dest = args.dest if args.dest is not None else args.name
    name = args.name if args.dest is not None else None
    cfg = load_config(args)
    if name:
        mode, decisions = approval.live_decisions(connect(args, cfg), name, dest, args.proto)
    else:
        mode, decisions = approval.config_decisions(
            cfg, _incus_or_none(args, cfg), dest, args.proto
        )
    if args.format == "json":
        output.emit_json(
            {
                "container": name,
                "mode": mode,
                "dest": dest,
                "decisions": [d.as_json() for d in decisions],
            }
        )
        return 0
    where = name or "the config"
    for d in decisions:
        output.data(
            f"{d.verdict}  {d.proto} {d.address}:{d.port}  ({where}, {mode} mode; rule: {d.rule})"
        )
    return 0


def _incus_or_none(args: argparse.Namespace, cfg: Config) -> IncusAPI | None:
    try:
        return connect(args, cfg)
    except CoiError:  # no Incus here: the rules are checked against a stand-in bridge
        return None

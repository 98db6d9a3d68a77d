"""`coi network ...`: refresh an allowlist, show and clean coi's firewall rules."""

from __future__ import annotations

import argparse

from coi.commands.common import connect
from coi.core import output

VERDICTS = ("allowed", "blocked")  # new connections the log rules counted


def refresh(args: argparse.Namespace) -> int:
    """Resolve NAME's allowlist again and replace its rules and /etc/hosts."""
    from coi.network import enforce

    incus = connect(args)
    done = enforce.refresh(incus, args.name)
    if args.format == "json":
        output.emit_json(
            {
                "name": args.name,
                "resolved": done.resolved,
                "allow": list(done.allows),
                "changed": done.changed,
            }
        )
        return 0
    for name, addresses in sorted(done.resolved.items()):
        output.data(f"{name}\t{' '.join(addresses) or '-'}")
    output.info(f"{args.name}: rules {'updated' if done.changed else 'unchanged'}")
    return 0


def rules(args: argparse.Namespace) -> int:
    """coi's rules now in place, by container (`project/name`)."""
    from coi.network import enforce

    found = enforce.rules()
    counts = enforce.counts()
    if args.format == "json":
        output.emit_json({"rules": found, "connections": counts})
        return 0
    rows = [
        (c.removeprefix("coi:"), len(h), *(counts.get(c, {}).get(v, 0) for v in VERDICTS))
        for c, h in found.items()
    ]
    output.table(["container", "rules", *VERDICTS], sorted(rows))
    return 0


def clean_orphans(args: argparse.Namespace) -> int:
    """Remove the rules of containers that no longer exist."""
    from coi.network import enforce

    removed = enforce.remove_orphans(connect(args))
    if args.format == "json":
        output.emit_json({"removed": removed})
    for item in removed:
        output.info(f"removed the rules of {item}, whose container is gone")
    return 0

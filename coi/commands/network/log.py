"""`coi network log`: what a container tried to reach, allowed and blocked."""

from __future__ import annotations

import argparse
import json

from coi.core import output


def log(args: argparse.Namespace) -> int:
    """Print NAME's egress log; --follow keeps printing new records until interrupted."""
    from coi.network import egress, egress_log

    def show(record: dict[str, object]) -> None:
        if not egress.wanted(record, args.denied):
            return
        if args.format == "json":
            output.data(json.dumps(record, sort_keys=True))
        else:
            output.data(egress.line(record))

    if not args.follow:
        found = egress_log.records(args.name)
        if not found and not egress_log.log_path(args.name).exists():
            output.warn(f"no egress log for {args.name} (at {egress_log.log_path(args.name)})")
        for record in found:
            show(record)
        return 0
    try:
        for record in egress_log.follow(args.name):
            show(record)
    except KeyboardInterrupt:
        return 0
    return 0

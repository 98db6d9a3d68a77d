"""`coi network allow|deny|learned`: shape what a container may reach."""

from __future__ import annotations

import argparse

from coi.commands.common import connect
from coi.core import output


def allow(args: argparse.Namespace) -> int:
    """Open DEST for the running allowlist container NAME now (--save: in your config too)."""
    return _change(args, add=True)


def deny(args: argparse.Namespace) -> int:
    """Close DEST for the allowlist container NAME now (--save: in your config too)."""
    return _change(args, add=False)


def _change(args: argparse.Namespace, add: bool) -> int:
    from coi.launch import executor
    from coi.network import live

    dest = live.check_entry(args.dest)
    incus = connect(args)
    added, removed = ([dest], []) if add else ([], [dest])
    with executor.changing(incus, args.name):  # a stopped container's too
        done = live.change(incus, args.name, add=added, remove=removed)
    if args.save:
        from coi.config import edit

        path = edit.change(add=[dest] if add else [], remove=[] if add else [dest])
        output.info(f"saved: {path} [network] allowed_domains")
    output.info(
        f"{args.name}: {'allowed' if add else 'denied'} {dest}; now allows "
        f"{' '.join(done.allows) or 'nothing'}"
    )
    return 0


def learned(args: argparse.Namespace) -> int:
    """Print the allowed_domains a learning run of NAME reached (--write: add them to your
    config)."""
    from coi.network import egress, egress_log

    proposal = egress.propose(egress_log.records(args.name))
    if args.format == "json":
        output.emit_json({"allowed_domains": proposal})
    else:
        output.data("[network]")
        output.data("allowed_domains = [" + ", ".join(f'"{p}"' for p in proposal) + "]")
    if args.write:
        from coi.config import edit

        path = edit.change(add=proposal)
        output.info(f"added {len(proposal)} entries to {path} [network] allowed_domains")
    return 0

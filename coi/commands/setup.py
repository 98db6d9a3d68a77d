"""`coi setup`: install and start Incus and create coi's resources (idempotent)."""

from __future__ import annotations

import argparse

from coi.commands.common import load_config
from coi.core import output


def run(args: argparse.Namespace) -> int:
    """Plan and carry out the host setup; a second run changes nothing and says so."""
    from coi.host.setup import SetupOptions, setup

    cfg = load_config(args)
    opts = SetupOptions(
        pool=cfg.incus.storage_pool,
        network=cfg.incus.network,
        group=cfg.incus.group,
        project=cfg.incus.project,
        container_uid=cfg.incus.claude_uid,
        base=cfg.build.base,
        dry_run=args.dry_run,
    )
    steps = setup(opts)
    if args.dry_run:
        output.info("dry run: nothing was changed" if steps else "nothing to change")
    else:
        output.info(
            f"setup done: {len(steps)} change(s)"
            if steps
            else "nothing to change: Incus and coi's resources are ready"
        )
    return 0

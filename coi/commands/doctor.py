"""`coi doctor [--fix [--dry-run]]`: report every host check (exit 0 healthy, 1 degraded,
2 unusable); with --fix, first carry out the safe repairs the failed checks name."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from coi.commands.common import load_config
from coi.core import output
from coi.host.check import exit_code

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.host.check import Check

MARK = {"ok": "ok  ", "degraded": "WARN", "fail": "FAIL"}


def run(args: argparse.Namespace) -> int:
    """Run the checks (repairing first with --fix) and print them as text or JSON."""
    from coi.host import doctor

    cfg = load_config(args)
    checks = doctor.run_checks(cfg)
    if getattr(args, "fix", False):
        if not _repair(checks, cfg, dry_run=args.dry_run) or args.dry_run:
            return exit_code(checks)
        checks = doctor.run_checks(cfg)
    if args.format == "json":
        output.emit_json(doctor.as_json(checks))
    else:
        for check in checks:
            line = f"[{MARK[check.status]}] {check.name}: {check.found}"
            output.data(line + (f"\n       fix: {check.fix}" if check.fix else ""))
    return exit_code(checks)


def _repair(checks: list[Check], cfg: Config, *, dry_run: bool) -> bool:
    """Say or make each repair; False when there was nothing to repair."""
    from coi.core.errors import CoiError
    from coi.host import repair

    todo = repair.plan(checks)
    if not todo:
        output.info("nothing for --fix to repair")
        return False
    for check in todo:
        if dry_run:
            output.data(f"would repair {check.name}: {check.action}")
            continue
        try:
            repair.carry_out(check, cfg, output.info)
            output.info(f"repaired {check.name} ({check.action})")
        except CoiError as exc:
            output.warn(f"could not repair {check.name}: {exc}")
    return True

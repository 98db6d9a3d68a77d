"""`coi doctor`: report every host check; exit 0 healthy, 1 degraded, 2 unusable."""

from __future__ import annotations

import argparse

from coi import output
from coi.commands.common import load_config

MARK = {"ok": "ok  ", "degraded": "WARN", "fail": "FAIL"}


def run(args: argparse.Namespace) -> int:
    """Run the checks and print them as text or JSON."""
    from coi import doctor

    checks = doctor.run_checks(load_config(args))
    if args.format == "json":
        output.emit_json(doctor.as_json(checks))
    else:
        for check in checks:
            line = f"[{MARK[check.status]}] {check.name}: {check.found}"
            output.data(line + (f"\n       fix: {check.fix}" if check.fix else ""))
    return doctor.exit_code(checks)

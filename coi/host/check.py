"""One host check's outcome, as `coi doctor` prints it and `coi doctor --fix` acts on it."""

from __future__ import annotations

from dataclasses import dataclass

OK, WARN, FAIL = "ok", "degraded", "fail"


@dataclass(frozen=True)
class Check:
    """One check's outcome."""

    name: str
    status: str
    found: str
    fix: str = ""
    action: str = ""  # a safe repair `coi doctor --fix` may carry out (coi/host/repair.py)


def exit_code(checks: list[Check]) -> int:
    """0 healthy, 1 degraded, 2 unusable."""
    statuses = {c.status for c in checks}
    return 2 if FAIL in statuses else 1 if WARN in statuses else 0

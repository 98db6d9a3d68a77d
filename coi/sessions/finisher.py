"""The detached finisher of a `coi run`: `python -m coi.sessions.finisher ENTRY` stops and
deletes the container the journal entry names (its session saved, itself frozen and swept
before `coi run` returned), then removes the entry. It holds the container's watch lock,
inherited from the `coi run` that started it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from coi.core import faults
from coi.core.errors import CoiError
from coi.sessions import journal


def main(argv: list[str]) -> int:
    """Finish one entry; 1 (the reason on stderr, the finisher's log) when it failed."""
    if len(argv) != 1:
        print("usage: python -m coi.sessions.finisher ENTRY", file=sys.stderr)
        return 2
    try:
        faults.point("finisher")  # tests kill the finisher here (COI_FAULT_SIGNAL=SIGKILL@...)
        journal.finish(Path(argv[0]))
    except CoiError as exc:
        print(f"coi finisher: {argv[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

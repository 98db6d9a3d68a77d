"""`coi --help` against `python3 -c pass`, measured in the same run (goal: under 4x)."""

from __future__ import annotations

import sys

from _timing import report, wall


def main() -> None:
    python = wall([sys.executable, "-c", "pass"])
    help_ = wall([sys.executable, "-m", "coi", "--help"])
    version = wall([sys.executable, "-m", "coi", "--version"])
    report("coi --help", help_, python, "under 4x python3 -c pass")
    report("coi --version", version, python, "under 4x python3 -c pass")


if __name__ == "__main__":
    main()

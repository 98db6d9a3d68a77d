"""`python -m coi.broker SETTINGS.json`: run one session's broker until SIGTERM."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from coi.broker import server


def main(argv: list[str]) -> int:
    """Serve the settings file named by argv[0]; exit 2 without one."""
    if len(argv) != 1:
        print("usage: python -m coi.broker SETTINGS.json", file=sys.stderr)
        return 2
    asyncio.run(server.serve(server.Settings.read(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The command line of coi's network helper (`coi-netrules`): one verb, one JSON line.

sudo runs this (through the installed wrapper) for members of the Incus admin group, and
coi calls `run` in-process as root. It parses and dispatches only: the rules are
nft_helper.py's, the guard nft_guard.py's. Stdlib and these files only, like them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import nft_guard, nft_helper

# The files `coi setup` installs as the helper; the fingerprint covers each of them.
SOURCES = (
    "nft.py",
    "nft_installed.py",
    "nft_helper.py",
    "nft_guard.py",
    "nft_cli.py",
    "egress.py",
    "nflog.py",
)
USAGE = (
    "usage: coi-netrules [--expect FINGERPRINT] "
    "apply PROJECT NAME | remove PROJECT NAME | orphans | list | probe | fingerprint | "
    "heal | check"
)


def fingerprint() -> str:
    """sha256 of the helper's files: coi refuses a helper copy that differs from itself."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def run(argv: Sequence[str], socket_path: str = nft_helper.SOCKET) -> Any:
    """Carry out one command line; returns what to print as JSON."""
    args = list(argv)
    if len(args) >= 2 and args[0] == "--expect":
        if args[1] != fingerprint():
            raise nft_helper.HelperError(
                f"the installed coi network helper ({fingerprint()}) is not this coi's "
                f"({args[1]}): run `sudo coi setup` to update it"
            )
        args = args[2:]
    if len(args) == 3 and args[0] in ("apply", "remove"):
        if args[0] == "apply":
            rules = nft_helper.apply(args[1], args[2], socket_path)
            if rules:
                nft_guard.ensure_running(socket_path)
            return {"rules": rules}
        return {"removed": nft_helper.remove(args[1], args[2])}
    if len(args) == 1 and args[0] in ("heal", "check"):
        if args[0] == "heal":
            return nft_guard.heal(socket_path)
        return nft_guard.check(socket_path)
    if len(args) == 1 and args[0] in (
        "orphans",
        "list",
        "probe",
        "fingerprint",
    ):
        commands: dict[str, Callable[[], Any]] = {
            "orphans": lambda: {"removed": nft_helper.orphans(socket_path)},
            "list": nft_helper.listing,
            "probe": nft_helper.probe,
            "fingerprint": lambda: {"fingerprint": fingerprint()},
        }
        return commands[args[0]]()
    raise nft_helper.HelperError(USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    """The installed helper's entry point: one JSON line on stdout, or one error line."""
    if os.geteuid() != 0:
        print("coi-netrules: must run as root (through sudo)", file=sys.stderr)
        return 1
    try:
        result = run(sys.argv[1:] if argv is None else argv)
    except (nft_helper.HelperError, ValueError) as exc:
        print(f"coi-netrules: {exc}", file=sys.stderr)
        return 2 if str(exc) == USAGE else 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

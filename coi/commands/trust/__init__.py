"""CLI table of the trust commands (targets are imported only when chosen)."""

from __future__ import annotations

import argparse

from coi.commands.cli import Command


def _workspace(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workspace",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the workspace whose .coi.toml is meant (default: cwd)",
    )


def _trust(p: argparse.ArgumentParser) -> None:
    _workspace(p)
    p.add_argument("--list", action="store_true", help="list the approved files and their state")
    p.add_argument("--yes", "-y", action="store_true", help="approve without asking (for scripts)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="for --list")


COMMANDS: dict[str, Command] = {
    "trust": Command(
        "coi.commands.trust.decide:trust_",
        "show this workspace's .coi.toml (sha256, what it turns on) and approve those bytes",
        _trust,
    ),
    "untrust": Command(
        "coi.commands.trust.decide:untrust",
        "withdraw the approval of this workspace's .coi.toml",
        _workspace,
    ),
}

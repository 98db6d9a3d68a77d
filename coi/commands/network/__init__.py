"""CLI table of the network: network refresh, ... (targets are imported only when chosen)."""

from __future__ import annotations

import argparse

from coi.commands.cli import Command

N = "coi.commands.network.rules:"


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("--format", choices=["text", "json"], default="text")


def _fmt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")


COMMANDS: dict[str, Command] = {
    "network": Command(
        help="network isolation: allowlist refresh, coi's firewall rules",
        sub={
            "refresh": Command(
                N + "refresh", "resolve an allowlist container's names again now", _name
            ),
            "rules": Command(N + "rules", "list coi's firewall rules by container", _fmt),
            "clean-orphans": Command(
                N + "clean_orphans", "remove rules whose container is gone", _fmt
            ),
        },
    )
}

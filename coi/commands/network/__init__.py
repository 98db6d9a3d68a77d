"""CLI table of the network: network refresh, ... (targets are imported only when chosen)."""

from __future__ import annotations

import argparse

from coi.commands.cli import Command

N = "coi.commands.network.rules:"
L = "coi.commands.network.log:"
V = "coi.commands.network.live:"


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("--format", choices=["text", "json"], default="text")


def _fmt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")


def _dest(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("dest", metavar="DEST", help="a name, an IPv4 address, either with :PORT")
    p.add_argument("--save", action="store_true", help="also change your own config file")


def _learned(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--write", action="store_true", help="add the proposal to your config file")


def _log(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    p.add_argument("--denied", action="store_true", help="blocked connections only")


COMMANDS: dict[str, Command] = {
    "network": Command(
        help="network isolation: allowlist refresh, coi's firewall rules",
        sub={
            "refresh": Command(
                N + "refresh", "resolve an allowlist container's names again now", _name
            ),
            "rules": Command(N + "rules", "list coi's firewall rules by container", _fmt),
            "log": Command(L + "log", "what a container tried to reach, allowed and blocked", _log),
            "allow": Command(
                V + "allow", "open a destination of an allowlist container now", _dest
            ),
            "deny": Command(V + "deny", "close a destination of an allowlist container now", _dest),
            "learned": Command(
                V + "learned", "the allowlist a learning run reached (--write: save it)", _learned
            ),
            "clean-orphans": Command(
                N + "clean_orphans", "remove rules whose container is gone", _fmt
            ),
        },
    )
}

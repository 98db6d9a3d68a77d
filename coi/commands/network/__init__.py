"""CLI table of the network: network refresh, ... (targets are imported only when chosen)."""

from __future__ import annotations

import argparse

from coi.commands.cli import Command

N = "coi.commands.network.rules:"
L = "coi.commands.network.log:"
V = "coi.commands.network.live:"
P = "coi.commands.network.pending:"


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("--format", choices=["text", "json"], default="text")


def _fmt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")


def _dest(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("dest", metavar="DEST", help="a name, an IPv4 address, either with :PORT")
    p.add_argument("--save", action="store_true", help="also change your own config file")


def _pending(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", nargs="?", help="one container (default: all)")
    _fmt(p)


def _decide(p: argparse.ArgumentParser, save: bool) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("id", metavar="ID", help="the request's id, as `coi network pending` lists it")
    if save:
        p.add_argument("--save", action="store_true", help="also keep it in the workspace's config")


def _check(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", nargs="?", help="a running container (default: config)")
    p.add_argument("dest", metavar="DEST", nargs="?", help="host or address, with :PORT (443)")
    p.add_argument("--proto", choices=["tcp", "udp"], default="tcp")
    _fmt(p)


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
            "pending": Command(
                P + "pending", "what fenced containers were refused or asked for", _pending
            ),
            "approve": Command(
                P + "approve", "open a pending request now", lambda p: _decide(p, True)
            ),
            "reject": Command(
                P + "reject", "keep a pending request shut", lambda p: _decide(p, False)
            ),
            "check": Command(P + "check", "is a destination allowed, and by which rule", _check),
            "learned": Command(
                V + "learned", "the allowlist a learning run reached (--write: save it)", _learned
            ),
            "clean-orphans": Command(
                N + "clean_orphans", "remove rules whose container is gone", _fmt
            ),
        },
    )
}

"""`coi tmux list|send|capture`: drive sessions as their own user, so the real ones show."""

from __future__ import annotations

import argparse

from coi.commands.common import connect
from coi.commands.session.manage import coi_containers
from coi.commands.session.run import tmux_name
from coi.core import output
from coi.core.errors import CoiError
from coi.sessions import lifecycle

LISTING = "#{session_name} #{session_windows}"


def _as_code(args: argparse.Namespace, name: str, argv: list[str]) -> str:
    incus = connect(args)
    result = incus.execute(name, lifecycle.as_code(argv), env=lifecycle.code_env())
    if result.exit_code != 0:
        raise CoiError(f"tmux in {name}: {result.stderr.strip() or 'no session'}")
    return result.stdout


def list_(args: argparse.Namespace) -> int:
    """Every tmux session in running coi containers."""
    incus = connect(args)
    for container in coi_containers(incus):
        if container["status"] != "running":
            continue
        result = incus.execute(
            container["name"],
            lifecycle.as_code(
                ["tmux", "list-sessions", "-F", "#{session_name} #{session_windows}"]
            ),
            env=lifecycle.code_env(),
        )
        for line in result.stdout.splitlines() if result.exit_code == 0 else []:
            output.data(f"{container['name']}: {line}")
    return 0


def send(args: argparse.Namespace) -> int:
    """Type text into a session, then Enter."""
    target = tmux_name(args.name)
    _as_code(args, args.name, ["tmux", "send-keys", "-t", target, "-l", args.text])
    _as_code(args, args.name, ["tmux", "send-keys", "-t", target, "Enter"])
    return 0


def capture(args: argparse.Namespace) -> int:
    """Print what a session's pane shows (with its history)."""
    text = _as_code(
        args, args.name, ["tmux", "capture-pane", "-p", "-J", "-S", "-", "-t", tmux_name(args.name)]
    )
    output.data(text.rstrip("\n"))
    return 0

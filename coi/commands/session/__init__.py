"""CLI table of the session commands (targets are imported only when chosen)."""

from __future__ import annotations

import argparse

from coi.commands.cli import SESSION, Command

S = "coi.commands.session.run:"
M = "coi.commands.session.manage:"
F = "coi.commands.session.files:"
T = "coi.commands.session.tmux:"
P = "coi.commands.session.top:"


def _shell(p: argparse.ArgumentParser) -> None:
    p.add_argument("--background", action="store_true", help="start the session, do not attach")


def _run(p: argparse.ArgumentParser) -> None:
    p.add_argument("cmd", nargs="*", metavar="CMD", help="the command, after --")


def _attach(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--bash", action="store_true", help="a plain bash instead of the tmux session")


def _list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="also list saved sessions")
    p.add_argument("--format", choices=["text", "json"], default="text")


def _top(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="between refreshes (2, at least 1)",
    )


def _info(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", nargs="?", metavar="ID", help="session id (default: newest here)")


def _targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--all", action="store_true", help="every coi container (asks first)")
    p.add_argument("--force", action="store_true", help="do not ask")


def _shutdown(p: argparse.ArgumentParser) -> None:
    _targets(p)
    p.add_argument("--timeout", type=int, default=60, help="seconds before forcing (60)")


def _clean(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="do not ask")
    p.add_argument("--sessions", action="store_true", help="also delete saved sessions")
    p.add_argument("--orphans", action="store_true", help="remove network rules left behind")


def _file(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--recursive", action="store_true", help="copy a folder")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("dest", metavar="DEST")


def _tmux_send(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("text", metavar="TEXT")


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")


COMMANDS: dict[str, Command] = {
    "shell": Command(
        S + "shell", "start or resume an AI coding session (the default)", _shell, SESSION
    ),
    "run": Command(
        S + "run",
        "run a command in a fresh session container, non-interactively",
        _run,
        SESSION,
    ),
    "attach": Command(
        S + "attach", "attach to a running session", _attach, ("workspace", "slot", "profile")
    ),
    "list": Command(M + "list_", "list coi containers (and saved sessions with --all)", _list),
    "top": Command(P + "top", "running sessions live: CPU, memory, disk, network, time left", _top),
    "info": Command(M + "info", "show a saved session", _info, ("workspace",)),
    "shutdown": Command(
        M + "shutdown", "stop containers cleanly, saving their sessions", _shutdown
    ),
    "kill": Command(M + "kill", "force-stop and delete containers", _targets),
    "clean": Command(M + "clean", "remove stopped containers (and --sessions, --orphans)", _clean),
    "persist": Command(M + "persist", "keep containers after their session ends", _targets),
    "file": Command(
        help="copy files between host and containers",
        sub={
            "push": Command(F + "push", "host -> NAME:/path", _file),
            "pull": Command(F + "pull", "NAME:/path -> host", _file),
        },
    ),
    "tmux": Command(
        help="drive the tmux sessions inside containers",
        sub={
            "list": Command(T + "list_", "list tmux sessions in running containers"),
            "send": Command(T + "send", "type TEXT and Enter into NAME's session", _tmux_send),
            "capture": Command(T + "capture", "print NAME's session pane", _name),
        },
    ),
}

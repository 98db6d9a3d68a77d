"""Shell completion (bash, zsh, fish) through argcomplete: commands and flags from the
parser, and container names, session ids, profile and tool names looked up live.

Imported only when a shell asks for completions (`_ARGCOMPLETE` in the environment) or
for `coi completion SHELL`, so `coi --help` never pays for it.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from coi.core import labels

SHELLS = ("bash", "zsh", "fish")
Completer = Callable[..., Iterable[str]]


def _quietly(lookup: Callable[[], Iterable[str]]) -> Completer:
    """A completer that offers nothing, rather than an error, when the lookup fails."""

    def complete(prefix: str = "", **_: Any) -> list[str]:
        with contextlib.suppress(Exception):
            return sorted(n for n in lookup() if n.startswith(prefix))
        return []

    return complete


def _containers() -> list[str]:
    from coi.commands.common import connect

    incus = connect(argparse.Namespace())
    found = incus.instances()
    return [
        i["name"] for i in found if any(k.startswith(labels.PREFIX) for k in i.get("config", {}))
    ]


def _sessions() -> list[str]:
    from coi.sessions import store

    return [meta.session_id for meta, _ in store.all_sessions()]


def _config_names(section: str) -> Callable[[], list[str]]:
    def names() -> list[str]:
        from coi.config import load, tools

        cfg = load.load(Path.cwd())
        return tools.known(cfg) if section == "tools" else sorted(cfg.profiles)

    return names


COMPLETERS: dict[str, Completer] = {
    "name": _quietly(_containers),
    "names": _quietly(_containers),
    "resume": _quietly(_sessions),
    "id": _quietly(_sessions),
    "profile": _quietly(_config_names("profiles")),
    "tool": _quietly(_config_names("tools")),
}


def attach_completers(parser: argparse.ArgumentParser) -> None:
    """Give every argument whose value names a container, session, profile or tool its
    live completer, in this parser and all its subcommands."""
    for action in parser._actions:
        completer = COMPLETERS.get(action.dest)
        if completer is not None:
            action.completer = completer  # type: ignore[attr-defined]
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                attach_completers(child)


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request (argcomplete exits the process)."""
    import argcomplete

    attach_completers(parser)
    argcomplete.autocomplete(parser)


def script(shell: str) -> str:
    """The code that registers coi's completion in SHELL."""
    from argcomplete.shell_integration import shellcode

    return shellcode(["coi"], shell=shell)


def command(args: argparse.Namespace) -> int:
    """`coi completion SHELL`: print the registration code (source it from your rc file)."""
    from coi.core import output

    output.data(script(args.shell).rstrip("\n"))
    return 0

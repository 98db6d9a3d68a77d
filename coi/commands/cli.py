"""The `coi` command line: a table of commands, each imported only when chosen."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from coi import __version__
from coi.commands.context import Context
from coi.core import output
from coi.core.errors import CoiError, UsageError
from coi.core.labels import Mode

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
Handler = Callable[[argparse.Namespace], int]
ArgAdder = Callable[[argparse.ArgumentParser], None]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


@dataclass(frozen=True)
class Command:
    """A CLI command: where its code lives, its help, its arguments, its subcommands."""

    target: str = ""
    help: str = ""
    args: ArgAdder | None = None
    globals: bool | tuple[str, ...] = False  # its session flags: True = PLACE, or by name
    sub: dict[str, Command] = field(default_factory=dict)
    default: str = ""  # the subcommand meant when the word after the group is none of them


# The session flags by name (--continue is resume's alias). A command takes only those it
# reads: `coi rollback --help` listing --image or --network would promise what it ignores.
SESSION = (
    *("workspace", "slot", "persistent", "resume", "profile", "image", "env", "storage"),
    *("mount", "network", "tool", "verbose", "worktree", "remote"),
)
PLACE = ("workspace", "profile")  # a command about a workspace and the config it reads
CONFIG = (
    *PLACE,
    "image",
    "persistent",
    "env",
    "network",
    "tool",
    "remote",
)  # flags that set config


def session_flags(parser: argparse.ArgumentParser, only: Sequence[str] = SESSION) -> None:
    """The global flags of a session (reference README), those named in `only`; unset
    flags stay absent."""
    s = argparse.SUPPRESS

    def add(flag: str, **kwargs: Any) -> None:
        if kwargs.get("dest", flag.removeprefix("--")) in only:
            parser.add_argument(flag, **kwargs)

    add("--workspace", metavar="PATH", default=s, help="the workspace folder (default: cwd)")
    add("--slot", type=_slot, metavar="N", default=s, help="slot for parallel sessions (0=auto)")
    add(
        "--persistent",
        action=argparse.BooleanOptionalAction,
        default=s,
        help="keep the container between sessions",
    )
    add(
        "--resume",
        nargs="?",
        const="",
        metavar="ID",
        default=s,
        help="resume a session (newest of this workspace without ID)",
    )
    add(
        "--continue",
        dest="resume",
        nargs="?",
        const="",
        metavar="ID",
        default=s,
        help="alias of --resume",
    )
    add("--profile", metavar="NAME", default=s, help="use the named config profile")
    add("--image", metavar="NAME", default=s, help="image to launch (default: coi)")
    add(
        "--env",
        type=_env,
        action="append",
        metavar="KEY=VALUE",
        default=s,
        help="set a variable inside (repeatable; never split on commas)",
    )
    add("--storage", metavar="PATH", default=s, help="mount a persistent storage folder")
    add(
        "--mount",
        action="append",
        metavar="SRC:DST[:rw]",
        default=s,
        help="mount a host folder inside, read-only unless :rw (repeatable)",
    )
    add(
        "--network",
        choices=[m.value for m in (Mode.RESTRICTED, Mode.ALLOWLIST, Mode.OPEN, Mode.LEARN)],
        default=s,
        help="network mode (learn: restricted, every destination logged with its names)",
    )
    add("--tool", metavar="NAME", default=s, help="AI tool to run (default: claude)")
    add("--remote", metavar="NAME", default=s, help="run on remote NAME (coi remote list)")
    add("--verbose", action="store_true", default=s, help="also say the one-time facts again")
    add(
        "--worktree",
        nargs="?",
        const="",
        metavar="BRANCH",
        default=s,
        help="work in the slot's own git worktree on BRANCH (default coi/<slot>)",
    )


def _slot(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"slot must be a number 0 or above, got {text!r}")
    return int(text)


def _env(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not ENV_KEY.fullmatch(key):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def _config_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("--origin", action="store_true", help="say where each value came from")
    p.add_argument("--format", choices=["text", "json"], default="text")


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")


def _completion(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "shell", choices=["bash", "zsh", "fish"], metavar="SHELL", help="bash, zsh or fish"
    )


def _fmt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")


def _doctor(p: argparse.ArgumentParser) -> None:
    _fmt(p)
    p.add_argument("--fix", action="store_true", help="carry out the safe repairs first")
    p.add_argument("--dry-run", action="store_true", help="with --fix: say what it would do")


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")


def _force(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--force", action="store_true")


def _launch(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE")
    _name(p)
    p.add_argument("--ephemeral", action="store_true", help="Incus deletes it when it stops")
    p.add_argument("--no-wait", action="store_true", help="return before early boot is over")


def _exec(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--user", type=int, help="uid to run as (default 0)")
    p.add_argument("--group", type=int, help="gid to run as")
    p.add_argument("--env", dest="exec_env", type=_env, action="append", metavar="KEY=VALUE")
    p.add_argument("--cwd", help="working directory inside")
    p.add_argument("--capture", action="store_true", help="collect output, print it at the end")
    p.add_argument("--format", choices=["json", "raw"], default="json")
    p.add_argument("cmd", nargs="*", metavar="CMD", help="the command, after --")


def _mount(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("device", metavar="DEVICE")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--shift", action="store_true", help="shift uids on the mount")


CONTAINER = "coi.commands.container:"

COMMANDS: dict[str, Command] = {
    "setup": Command(
        "coi.commands.setup:run",
        "install and start Incus, create coi's pool, bridge and profiles",
        _setup,
    ),
    "doctor": Command(
        "coi.commands.doctor:run",
        "check the host and say how to fix it (--fix: do it)",
        _doctor,
    ),
    "container": Command(
        help="low-level instance commands",
        sub={
            "launch": Command(CONTAINER + "launch", "create and start a container", _launch),
            "start": Command(CONTAINER + "start", "start a container", _name),
            "stop": Command(CONTAINER + "stop", "stop a container", _force),
            "delete": Command(CONTAINER + "delete", "delete a container", _force),
            "exec": Command(CONTAINER + "exec_", "run a command inside (exit code kept)", _exec),
            "exists": Command(CONTAINER + "exists", "exit 0 if it exists, else 1", _name),
            "running": Command(CONTAINER + "running", "exit 0 if it runs, else 1", _name),
            "mount": Command(CONTAINER + "mount", "mount a host folder inside", _mount),
        },
    ),
    "completion": Command(
        "coi.commands.completion:command",
        "print the shell code that completes coi's commands (bash, zsh, fish)",
        _completion,
    ),
    "config": Command(
        help="inspect the merged configuration",
        sub={
            "show": Command(
                "coi.commands.config:show",
                "print the config as coi will use it",
                _config_show,
                globals=CONFIG,
            )
        },
    ),
}


# Each area's commands live in a small table module of its own (cheap to import: it
# names `module:function` targets, never imports them).
AREAS = (
    "coi.commands.image",
    "coi.commands.session",
    "coi.commands.network",
    "coi.commands.trust",
    "coi.commands.port",
    "coi.commands.checkpoint",
    "coi.commands.snapshot",
    "coi.commands.worktree",
    "coi.commands.pool",
    "coi.commands.remote",
)


def all_commands() -> dict[str, Command]:
    """The core table plus every area's table."""
    table = dict(COMMANDS)
    for area in AREAS:
        table.update(importlib.import_module(area).COMMANDS)
    return table


def build_parser(commands: dict[str, Command] | None = None) -> Parser:
    """The whole argument parser; builds no command module, imports nothing heavy."""
    commands = all_commands() if commands is None else commands
    root = Parser(prog="coi", description="Run AI coding assistants in Incus containers.")
    root.add_argument("--version", action="version", version=f"coi {__version__}")
    root.add_argument("--debug", action="store_true", help="show tracebacks")
    session_flags(root)
    _add_commands(root, commands, "command")
    return root


def _add_commands(parser: argparse.ArgumentParser, table: dict[str, Command], dest: str) -> None:
    subs = parser.add_subparsers(dest=dest, metavar="COMMAND", parser_class=Parser)
    for name, command in table.items():
        child = subs.add_parser(name, help=command.help, description=command.help)
        add_arguments(child, command)
        if command.sub:
            _add_commands(child, command.sub, f"{dest}_{name}")
            child.set_defaults(_group=child.prog, _choices=", ".join(command.sub))
        else:
            child.set_defaults(_target=command.target)


def add_arguments(parser: argparse.ArgumentParser, command: Command) -> None:
    """One command's arguments: the session flags it takes, then its own (tasks.py makes
    its invoke tasks from these too)."""
    if command.globals:
        flags = command.globals
        session_flags(parser, PLACE if isinstance(flags, bool) else flags)
    if command.args:
        command.args(parser)


def load(target: str) -> Handler:
    """Import `module:function` only now that the command was chosen."""
    module_name, _, func = target.partition(":")
    handler: Handler = getattr(importlib.import_module(module_name), func)
    return handler


def with_default_sub(argv: list[str], table: dict[str, Command]) -> list[str]:
    """`coi checkpoint NAME` means `coi checkpoint create NAME`: a group with a default
    subcommand gets it when the next word names none of its subcommands."""
    for i, word in enumerate(argv):
        command = table.get(word)
        if command is None or word.startswith("-"):
            continue
        if command.default:
            rest = argv[i + 1 : i + 2]
            if not rest or (rest[0] not in command.sub and rest[0] not in ("-h", "--help")):
                return [*argv[: i + 1], command.default, *argv[i + 1 :]]
        return argv
    return argv


def named_commands(argv: Sequence[str], table: dict[str, Command]) -> dict[str, Command] | None:
    """The part of the table argv can choose from: every command whose name is one of its
    words. argparse's parse depends only on which words are valid choices, so a parser of
    these alone parses argv as the whole one does, for a fraction of its building time
    (73 subparsers); a parse that fails is done again with the whole table, for its
    message. None, for the whole table: help asked for."""
    if "-h" in argv or "--help" in argv:
        return None
    return {word: table[word] for word in argv if word in table}


def dispatch(argv: Sequence[str], context: Context | None = None) -> int:
    """Parse argv and run the chosen command with context (on its arguments, as
    `args.context`); returns its exit code."""
    argv = list(argv)
    # Everything after the first `--` is the command to run inside, verbatim: argparse
    # mishandles `--` below subcommands, so split it off before parsing.
    tail: list[str] | None = None
    if "--" in argv:
        cut = argv.index("--")
        argv, tail = argv[:cut], argv[cut + 1 :]
    table = all_commands()
    argv = with_default_sub(argv, table)
    parser = build_parser(named_commands(argv, table))
    try:
        args = parser.parse_args(argv)
    except UsageError:
        parser = build_parser()  # the whole table, for the message (and choices) it gives
        args = parser.parse_args(argv)
    if tail is not None:
        if not hasattr(args, "cmd"):
            raise UsageError("this command takes no `-- COMMAND` (see `coi --help`)")
        args.cmd = [*args.cmd, *tail]
    target = getattr(args, "_target", None)
    group = getattr(args, "_group", None)
    if target is None and group is not None:
        raise UsageError(f"`{group}` needs a command: {args._choices}")
    if target is None:
        default = all_commands().get("shell")
        if default is None or args.command is not None:
            build_parser().print_help(sys.stderr if args.command else sys.stdout)
            return 2 if args.command else 0
        target = default.target
    args.context = context if context is not None else Context()
    return load(target)(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one error boundary for every command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    ours = argv[: argv.index("--")] if "--" in argv else argv  # not the inner command's
    debug = "--debug" in ours or bool(os.environ.get("COI_DEBUG"))
    output.VERBOSE = debug or "--verbose" in ours or bool(os.environ.get("COI_VERBOSE"))
    try:
        if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions (coi completion)
            from coi.commands import completion

            completion.complete(build_parser())
        return dispatch(argv, Context())
    except CoiError as exc:
        if debug:
            _print_traceback()
        output.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        output.error("interrupted")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: say so plainly, traceback only on request
        if debug:
            _print_traceback()
        output.error(f"internal error: {exc!r}; run with --debug and report it")
        return 1


def _print_traceback() -> None:
    import traceback  # only on request: its import costs every command 2 ms

    traceback.print_exc()

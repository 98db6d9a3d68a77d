"""Maintainer tasks (invoke). Thin wrappers: every task calls into `coi`.

The tasks that run a coi command are made from the CLI's own command table
(coi/commands/cli.py): each argument of the command becomes an argument of the task,
with the command's help, so a flag added to the table shows up here without an edit.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from invoke import Collection, Context, Exit, Task, task


def _coi(*argv: str, passthrough: bool = False) -> None:
    """Run one coi command in-process; a failure ends invoke with coi's exit code
    (silently for `passthrough`, where the code is the inner command's own)."""
    from coi.commands.cli import main

    code = main(list(argv))
    if code != 0:
        message = None if passthrough else f"coi {' '.join(argv)} failed with exit code {code}"
        raise Exit(message, code=code)


# -- tasks made from the command table ----------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One argument of a coi command as a task argument: how invoke takes it, how it goes
    back on coi's command line."""

    name: str  # the argparse dest, which is the task's parameter
    flag: str  # the long flag; "" for a positional
    kind: str  # bool, value, optional (a flag whose value may be left out) or list
    default: Any  # the task's default; a value equal to it is not passed on
    help: str
    required: bool = False  # a positional coi cannot do without: a positional of the task


def parser_of(path: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of `coi PATH...` alone, built from the CLI's command table."""
    from coi.commands.cli import Parser, add_arguments, all_commands

    command = all_commands()[path[0]]
    for word in path[1:]:
        command = command.sub[word]
    parser = Parser(prog="coi " + " ".join(path))
    add_arguments(parser, command)
    return parser


def options(parser: argparse.ArgumentParser) -> list[Option]:
    """The task arguments of a command's parser, in its order (an alias such as --continue,
    which shares its dest with --resume, is left to coi)."""
    found: dict[str, Option] = {}
    # argparse has no public list of a parser's arguments; _actions is it.
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest in found:
            continue
        found[action.dest] = _option(action)
    return list(found.values())


def _option(action: argparse.Action) -> Option:
    flag = next((f for f in action.option_strings if f.startswith("--")), "")
    text = action.help or str(action.metavar or "")
    if action.choices:
        text += (", " if text else "") + "one of " + ", ".join(map(str, action.choices))
    if action.nargs == 0:
        return Option(action.dest, flag, "bool", False, text)
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        return Option(action.dest, flag, "list", None, text)
    if action.nargs == "?" and flag:
        return Option(action.dest, flag, "optional", None, text)
    # Values go to coi as text: its own parser checks them (a slot, a count, a KEY=VALUE).
    default = "" if action.default in (None, argparse.SUPPRESS) else str(action.default)
    required = not flag and action.nargs is None
    return Option(action.dest, flag, "value", default, text, required)


def argv_of(found: Iterable[Option], values: Mapping[str, Any]) -> list[str]:
    """coi's arguments for the task values given: positionals first (a bare optional flag
    would take the word after it), then each flag whose value is not the default."""
    found = list(found)
    words: list[str] = []
    for option in (o for o in found if not o.flag):
        value = values.get(option.name, option.default)
        items = value or [] if option.kind == "list" else [value] if value != "" else []
        words.extend(str(item) for item in items)
    for option in (o for o in found if o.flag):
        value = values.get(option.name, option.default)
        if option.kind == "bool":
            words += [option.flag] if value else []
        elif option.kind == "optional":
            words += [option.flag] if value is True else [f"{option.flag}={value}"] if value else []
        elif option.kind == "list":
            words += [f"{option.flag}={item}" for item in value or []]
        elif value is not None and str(value) != option.default:
            words.append(f"{option.flag}={value}")
    return words


def command_task(
    *path: str,
    name: str = "",
    fixed: Mapping[str, str] | None = None,
    skip: Iterable[str] = (),
    tail: bool = False,
    doc: str = "",
    defaults: Mapping[str, str] | None = None,
) -> Task:
    """A task that runs `coi PATH...` with the command's own arguments. fixed: values set
    by the task (not its arguments); skip: arguments the task leaves out; tail: the
    command after `--` goes through word for word, its exit code as the task's; doc: the
    summary `invoke --list` shows (default: the command's help); defaults: the task's
    own default for an argument (a positional coi requires becomes optional)."""
    from coi.commands.cli import all_commands

    command = all_commands()[path[0]]
    for word in path[1:]:
        command = command.sub[word]
    fixed = dict(fixed or {})
    everything = options(parser_of(path))
    for key, value in (defaults or {}).items():
        at = next(i for i, o in enumerate(everything) if o.name == key)
        everything[at] = replace(everything[at], default=value, required=False)
    found = [o for o in everything if o.name not in {*fixed, *skip, "cmd"}]

    def body(*args: Any, **kwargs: Any) -> None:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        c = bound.arguments.pop("c")
        chosen = {**bound.arguments, **fixed}
        argv = [*path, *argv_of([o for o in everything if o.name in chosen], chosen)]
        if tail:
            _coi(*argv, "--", *_command(c), passthrough=True)
        else:
            _coi(*argv)

    params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for option in sorted(found, key=lambda o: not o.required):  # no default, then defaults
        default = inspect.Parameter.empty if option.required else option.default
        params.append(
            inspect.Parameter(option.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        )
    signature = inspect.Signature(params)
    body.__signature__ = signature  # type: ignore[attr-defined]
    body.__name__ = name or path[-1]
    summary = doc or command.help[:1].upper() + command.help[1:] + "."
    shown = " ".join([*path, *fixed.values()])
    body.__doc__ = f"{summary}\n\nRuns `coi {shown}`" + (" COMMAND (after `--`)." if tail else ".")
    return Task(
        body,
        name=name or path[-1],
        positional=[o.name for o in found if o.required],
        optional=[o.name for o in found if o.kind == "optional"],
        iterable=[o.name for o in found if o.kind == "list"],
        help={o.name: o.help for o in found if o.help},
    )


def _command(c: Context) -> list[str]:
    """The command given after `--`, word for word.

    invoke joins its remainder with spaces, losing the quoting (`sh -c 'exit 3'` would
    become `sh -c exit 3`), so the words come from the process's own argv when it has them.
    """
    import shlex
    import sys

    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1 :]
    return shlex.split(c.remainder)


setup = command_task("setup")
doctor = command_task("doctor")
build = command_task("build", skip=("kind", "name", "script", "base"))
shell = command_task("shell")
run = command_task("run", tail=True)
attach = command_task("attach")
list_ = command_task("list")
shutdown = command_task("shutdown")
kill = command_task("kill")
clean = command_task("clean")


# -- tasks that call coi's functions directly ---------------------------------------------


def _profile_target() -> tuple[Any, dict[str, str]]:
    from coi.commands.common import connect, load_config

    cfg = load_config(argparse.Namespace())
    return connect(cfg), {"pool": cfg.incus.storage_pool, "network": cfg.incus.network}


@task(name="diff", help={"check": "exit 1 when any live profile differs from its file"})
def profiles_diff(c: Context, check: bool = False) -> None:
    """Show drift between profiles/*.yaml and the live Incus profiles, key by key."""
    from coi.launch.profiles import survey

    found = survey(*_profile_target())
    for item in found:
        print(f"{item.name}: " + ("in sync" if item.in_sync else item.describe()))
    drifted = [item.name for item in found if not item.in_sync]
    if check and drifted:
        raise Exit(f"profiles differ from their files: {', '.join(drifted)}", code=1)


@task(name="apply")
def profiles_apply(c: Context) -> None:
    """Create missing and upgrade older live profiles; a newer live one is left alone."""
    from coi.core.output import warn
    from coi.launch.profiles import apply

    for name, action in apply(*_profile_target(), log=warn).items():
        print(f"{name}: {action.value}")


profiles = Collection("profiles", profiles_diff, profiles_apply)


@task(name="base", help={"release": "debian/12 or debian/13", "force": "rebuild it"})
def images_base(c: Context, release: str = "debian/12", force: bool = False) -> None:
    """Build (or find up to date) coi's local Debian base image."""
    from coi.commands.common import connect, load_config
    from coi.images.base import ensure_base

    print(ensure_base(connect(load_config(argparse.Namespace())), release, force=force))


images = Collection(
    "images",
    images_base,
    command_task(
        "build",
        name="custom",
        fixed={"kind": "custom"},
        skip=("alias",),
        doc="Build a custom image from a script on top of coi (or --base).",
    ),
    command_task("image", "publish"),
    command_task("image", "cleanup"),
    command_task("image", "export", defaults={"name": "coi", "dir": "dist"}),
)
ns = Collection(
    setup, doctor, build, profiles, images, shell, run, attach, list_, shutdown, kill, clean
)

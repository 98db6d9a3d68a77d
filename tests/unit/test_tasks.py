"""The invoke collection: its tasks are made from the CLI's command table and turn their
arguments back into the same coi command line."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from invoke import Context

import tasks
from coi.commands import session
from coi.commands.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
# Every task maintainers had before the tasks were made from the table.
NAMES = {
    *("setup", "doctor", "build", "shell", "run", "attach", "list", "shutdown", "kill"),
    *("clean", "profiles.diff", "profiles.apply", "images.base", "images.custom"),
    *("images.publish", "images.cleanup", "images.export"),
}


@pytest.fixture
def called(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[str, ...], bool]]:
    """The coi command lines the tasks run (instead of running them)."""
    seen: list[tuple[tuple[str, ...], bool]] = []
    monkeypatch.setattr(
        tasks, "_coi", lambda *argv, passthrough=False: seen.append((argv, passthrough))
    )
    return seen


def _arguments(task: Any) -> set[str]:
    return {argument.name for argument in task.get_arguments(ignore_unknown_help=True)}


def test_invoke_list_shows_every_task() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(REPO), "--list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {line.split()[0] for line in listed.splitlines() if line.startswith("  ")}
    assert names >= NAMES


@pytest.mark.parametrize("name", ["shell", "run"])
def test_the_session_tasks_take_every_session_flag_of_their_command(name: str) -> None:
    wanted = {o.name for o in tasks.options(tasks.parser_of([name]))} - {"cmd"}
    assert "workspace" in wanted and "worktree" in wanted  # the table is really read
    assert _arguments(getattr(tasks, name)) == wanted


def test_a_flag_added_to_the_table_shows_up_in_the_task(
    monkeypatch: pytest.MonkeyPatch, called: list[tuple[tuple[str, ...], bool]]
) -> None:
    shell = session.COMMANDS["shell"]
    assert shell.args is not None
    own = shell.args

    def more(parser: argparse.ArgumentParser) -> None:
        own(parser)
        parser.add_argument("--frobnicate", metavar="HOW", help="a flag tasks.py never names")

    monkeypatch.setitem(session.COMMANDS, "shell", dataclasses.replace(shell, args=more))
    task = tasks.command_task("shell")
    assert "frobnicate" in _arguments(task)
    assert "frobnicate" not in _arguments(tasks.shell)  # made before the table changed
    task(Context(), frobnicate="hard", slot="2")
    assert called == [(("shell", "--slot=2", "--frobnicate=hard"), False)]


def test_run_passes_the_command_after_the_double_dash_word_for_word(
    monkeypatch: pytest.MonkeyPatch, called: list[tuple[tuple[str, ...], bool]]
) -> None:
    monkeypatch.setattr(sys, "argv", ["invoke", "run", "--", "sh", "-c", "exit 3"])
    tasks.run(Context(), persistent=True)
    assert called == [(("run", "--persistent", "--", "sh", "-c", "exit 3"), True)]


def test_fixed_and_default_arguments(called: list[tuple[tuple[str, ...], bool]]) -> None:
    custom = tasks.images.tasks["custom"]
    assert "kind" not in _arguments(custom) and "alias" not in _arguments(custom)
    custom(Context(), name="mine", script="s.sh", force=True)
    tasks.images.tasks["export"](Context())
    tasks.images.tasks["publish"](Context(), "c1", "snap", description="a b")
    assert called == [
        (("build", "custom", "mine", "--script=s.sh", "--force"), False),
        (("image", "export", "coi", "dist"), False),
        (("image", "publish", "c1", "snap", "--description=a b"), False),
    ]


def test_resume_and_worktree_may_come_without_a_value() -> None:
    found = tasks.options(tasks.parser_of(["shell"]))
    assert tasks.argv_of(found, {"resume": True}) == ["--resume"]
    assert tasks.argv_of(found, {"resume": "abc"}) == ["--resume=abc"]
    assert tasks.argv_of(found, {"resume": None, "worktree": True}) == ["--worktree"]
    assert tasks.argv_of(found, {"worktree": "fix/x", "slot": "2"}) == [
        "--slot=2",
        "--worktree=fix/x",
    ]
    assert tasks.argv_of(found, {"env": ["A=1,2", "B=3"]}) == ["--env=A=1,2", "--env=B=3"]


def test_unset_arguments_give_no_flags() -> None:
    for path in (["shell"], ["run"], ["shutdown"], ["image", "cleanup"], ["build"]):
        found = tasks.options(tasks.parser_of(path))
        assert tasks.argv_of(found, {o.name: o.default for o in found}) == []


# argparse drops a value that is exactly "--" (coi's own command line does the same).
_TEXT = st.text("abcXYZ019_./:-", min_size=1, max_size=12).filter(lambda s: s != "--")


@st.composite
def _shell_values(draw: st.DrawFn) -> dict[str, Any]:
    """Values for the shell task's free-text, boolean, optional and list arguments."""
    values: dict[str, Any] = {}
    for option in tasks.options(tasks.parser_of(["shell"])):
        if option.kind == "bool":
            values[option.name] = draw(st.booleans())
        elif option.kind == "optional":
            values[option.name] = draw(st.sampled_from([None, True]) | _TEXT)
        elif option.kind == "list" and option.name == "mount":
            values[option.name] = draw(st.lists(_TEXT, max_size=3))
        elif option.kind == "value" and option.name in ("workspace", "profile", "image", "tool"):
            values[option.name] = draw(st.just("") | _TEXT)
    return values


@given(_shell_values())
def test_coi_parses_what_a_task_passes_back_into_the_values_given(values: dict[str, Any]) -> None:
    argv = tasks.argv_of(tasks.options(tasks.parser_of(["shell"])), values)
    parsed = vars(build_parser().parse_args(["shell", *argv]))
    for name, value in values.items():
        if value in (False, None, "", []):
            assert name not in parsed or parsed[name] in (False, None), name
        elif value is True and name in ("resume", "worktree"):
            assert parsed[name] == ""  # the flag alone: coi's "newest" / "own branch"
        else:
            assert parsed[name] == value, name

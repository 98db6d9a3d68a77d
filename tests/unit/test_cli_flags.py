"""Each command lists only the session flags it reads (issue 26): `coi rollback --help`
offered --persistent, --image, --network, --resume..., which it ignored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coi.commands.cli import SESSION, Command, all_commands, build_parser, main

SESSION_ONLY = ("--persistent", "--image", "--network", "--resume", "--continue", "--slot")


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["rollback"],
        ["diff"],
        ["checkpoint", "create"],
        ["checkpoint", "list"],
        ["checkpoint", "prune"],
        ["info"],
        ["worktree", "list"],
        ["worktree", "discard"],
        ["pool", "status"],
        ["pool", "drain"],
    ],
)
def test_a_command_that_starts_no_session_lists_no_session_flag(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    shown = _help(argv, capsys)
    assert [flag for flag in SESSION_ONLY if flag in shown] == []
    assert "--workspace" in shown


@pytest.mark.parametrize(
    ("argv", "flags"),
    [
        (["shell"], (*SESSION_ONLY, "--worktree", "--mount", "--storage", "--env", "--tool")),
        (["run"], (*SESSION_ONLY, "--mount", "--env")),
        (["attach"], ("--slot", "--workspace", "--profile")),
        (["pool", "fill"], ("--image", "--network", "--mount", "--env", "--tool")),
        (["config", "show"], ("--image", "--network", "--persistent", "--env", "--tool")),
        (["rollback"], ("--workspace", "--profile")),
    ],
)
def test_a_command_keeps_the_flags_it_reads(
    argv: list[str], flags: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    shown = _help(argv, capsys)
    assert [flag for flag in flags if flag not in shown] == []


def _tables(table: dict[str, Command]) -> list[Command]:
    found = []
    for command in table.values():
        found += [command, *_tables(command.sub)]
    return found


def test_every_flag_a_command_names_is_a_session_flag() -> None:
    """A misspelt name would drop its flag without a word."""
    for command in _tables(all_commands()):
        if isinstance(command.globals, tuple):
            assert set(command.globals) <= set(SESSION), command.target


def test_a_session_flag_after_a_command_that_ignores_it_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["rollback", "--image", "coi"]) == 2
    assert "unrecognized arguments: --image" in capsys.readouterr().err
    args = build_parser().parse_args(["rollback", "--workspace", "/w", "--profile", "p", "x1"])
    assert (args.workspace, args.profile, args.checkpoint) == ("/w", "p", "x1")
    assert build_parser().parse_args(["--image", "coi", "shell"]).image == "coi"  # before it


def test_the_network_guide_counts_the_modes_it_lists() -> None:
    """`--network`'s choices are the modes the network guide lists, as many as it says."""
    guide = Path(__file__).resolve().parents[2] / "docs" / "guide" / "network.md"
    section = guide.read_text(encoding="utf-8").split("\n## ", 1)[0]
    said = re.search(r"one of (\w+) modes", section)
    listed = re.findall(r"^- `(\w+)`", section, re.MULTILINE)
    network = next(a for a in build_parser()._actions if a.dest == "network")
    assert sorted(listed) == sorted(network.choices or [])
    words = {"three": 3, "four": 4, "five": 5}
    assert said is not None and words[said.group(1)] == len(listed)

"""`coi run`, `coi shell` and `coi attach` through the CLI against the one fake Incus:
the command's own exit code and output, the container gone after a run, tmux started as
`code` and attached, a detached shell kept running, and the one-line refusals."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from coi.commands.session import run
from coi.core import slots
from coi.incus.adapter import ExecResult
from coi.sessions import store
from tests.unit.fakeplus import FakePlus, Setups, ViewHelper, coi, one_error, state_tar, tar_answer


@pytest.fixture
def ready(
    fake_incus: FakePlus, view_helper: ViewHelper, monkeypatch: pytest.MonkeyPatch
) -> FakePlus:
    """The fake with sessions possible: setup answered, no terminal on stdin."""
    fake_incus.answers["sh"] = Setups()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    return fake_incus


def here(workspace: Path, *argv: str) -> list[str]:
    return ["--workspace", str(workspace), "--network", "open", *argv]


def test_run_exits_with_the_commands_code_and_removes_its_container(
    ready: FakePlus, workspace: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    def echo(name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
        options["raw_stdout"](" ".join(argv[1:]).encode() + b"\n")
        return ExecResult(3, "", "")

    ready.answers["echo"] = echo
    assert coi([*here(workspace, "run"), "--", "echo", "hi", "there"]) == 3
    assert capsysbinary.readouterr().out == b"hi there\n"
    assert ready.instance_names() == []  # piped: the delete is done before coi returns
    ran = next(c for c in ready.commands if "echo" in c)
    assert ran[:4] == ["runuser", "-u", "code", "--"]


def test_run_without_a_command_is_one_line(
    ready: FakePlus, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(here(workspace, "run")) == 2
    assert "no command given: coi run [--] CMD" in one_error(capsys.readouterr().err)
    assert ready.connected == []


def test_a_background_shell_starts_tmux_and_attach_finds_it(
    ready: FakePlus, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(here(workspace, "shell", "--background")) == 0
    name = slots.container_name(workspace, 1)
    assert f"{name} keeps running. Attach: coi attach {name}" in capsys.readouterr().err
    start = next(c for c in ready.commands if "tmux" in " ".join(c))
    assert f"tmux new-session -d -s {run.tmux_name(name)} -c /workspace" in " ".join(start)
    assert "claude --dangerously-skip-permissions" in " ".join(start)
    assert coi(["attach", "--workspace", str(workspace)]) == 0
    assert ready.commands[-1][4:8] == ["tmux", "new-session", "-A", "-s"]
    assert coi(["attach", name, "--bash"]) == 0
    assert ready.commands[-1][4:] == ["bash", "-l"]


def test_attach_says_when_nothing_runs_or_too_much_does(
    ready: FakePlus, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["attach", "--workspace", str(workspace)]) == 2
    assert "no running coi container for" in one_error(capsys.readouterr().err)
    for _ in range(2):
        assert coi(here(workspace, "shell", "--background")) == 0
    assert coi(["attach", "--workspace", str(workspace)]) == 2
    assert "name one or pass --slot N" in one_error(capsys.readouterr().err)
    assert coi(["attach", "--workspace", str(workspace), "--slot", "2"]) == 0


def test_a_shell_whose_container_powers_off_is_finished_and_saved(
    ready: FakePlus, workspace: Path
) -> None:
    def powering_off(name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
        ready.instances_by_name[name]["status"] = "Stopped"  # the poweroff wrapper ran
        return ExecResult(0, "", "")

    ready.answers["test"] = powering_off
    ready.files[(slots.container_name(workspace, 1), store.STOPPED_STATE)] = state_tar(
        ".claude", {"h": b"1"}
    )
    assert coi(here(workspace, "shell")) == 0
    assert ready.instance_names() == []
    assert len(store.all_sessions()) == 1


def test_a_shell_left_by_detaching_keeps_running_with_a_snapshot_saved(
    ready: FakePlus, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ready.answers["test"] = lambda name, argv, options: ExecResult(1, "", "")  # not stopping
    ready.answers["tar"] = tar_answer(state_tar(".claude", {"h": b"1"}))
    assert coi(here(workspace, "shell")) == 0
    (name,) = ready.instance_names()
    assert ready.instances_by_name[name]["status"] == "Running"
    assert "keeps running" in capsys.readouterr().err
    assert [m.container_name for m, _ in store.all_sessions()] == [name]

"""`coi tmux list|send|capture` against the one fake Incus: what runs inside, as whom,
and what is printed."""

from __future__ import annotations

from typing import Any

import pytest

from coi.commands.session import tmux
from coi.core import labels
from coi.incus.adapter import ExecResult
from tests.unit.fakeplus import FakePlus, coi, one_error


def test_list_asks_each_running_coi_container_as_code(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("coi-a-1", {labels.SLOT: "1"})
    fake_incus.add_instance("coi-a-2", {labels.SLOT: "2"}, status="Stopped")
    fake_incus.add_instance("plain")
    fake_incus.answers["tmux"] = lambda name, argv, options: ExecResult(0, "coi-a-1 2\n", "")
    assert coi(["tmux", "list"]) == 0
    assert capsys.readouterr().out == "coi-a-1: coi-a-1 2\n"
    assert fake_incus.commands == [
        ["runuser", "-u", "code", "--", "tmux", "list-sessions", "-F", tmux.LISTING]
    ]


def test_send_types_the_text_then_enter(fake_incus: FakePlus) -> None:
    seen: list[dict[str, Any]] = []

    def answer(name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
        seen.append(options)
        return ExecResult(0, "", "")

    fake_incus.add_instance("coi-a-1", {labels.SLOT: "1"})
    fake_incus.answers["tmux"] = answer
    assert coi(["tmux", "send", "coi-a-1", "hello; rm -rf /"]) == 0
    typed = [argv[4:] for argv in fake_incus.commands]
    assert typed[0][-2:] == ["-l", "hello; rm -rf /"] and typed[1][-1] == "Enter"
    assert all(o["env"]["USER"] == "code" for o in seen)


def test_capture_prints_the_pane_and_a_missing_session_is_one_line(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("coi-a-1", {labels.SLOT: "1"})
    fake_incus.answers["tmux"] = lambda name, argv, options: ExecResult(0, "$ ls\nfile\n\n", "")
    assert coi(["tmux", "capture", "coi-a-1"]) == 0
    assert capsys.readouterr().out == "$ ls\nfile\n"
    fake_incus.answers["tmux"] = lambda name, argv, options: ExecResult(1, "", "no server\n")
    assert coi(["tmux", "capture", "coi-a-1"]) == 1
    assert "tmux in coi-a-1: no server" in one_error(capsys.readouterr().err)

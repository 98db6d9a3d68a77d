"""Shell completion with the one fake Incus: container names are looked up live (coi's
containers only), a daemon that fails offers nothing, and `coi completion` prints code."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from coi.commands import completion
from coi.commands.cli import build_parser
from coi.core import labels
from coi.core.errors import IncusError
from tests.unit.fakeplus import FakePlus, coi


def test_container_names_complete_from_the_daemon(fake_incus: FakePlus) -> None:
    fake_incus.add_instance("coi-a-1", {labels.SLOT: "1"})
    fake_incus.add_instance("coi-b-1", {labels.SLOT: "1"})
    fake_incus.add_instance("coi-plain")  # not coi's: no label
    parser = build_parser()
    completion.attach_completers(parser)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    names = next(a for a in commands.choices["kill"]._actions if a.dest == "names")
    assert names.completer(prefix="coi-a") == ["coi-a-1"]
    assert completion.COMPLETERS["name"](prefix="") == ["coi-a-1", "coi-b-1"]


def test_a_failing_daemon_offers_nothing(
    fake_incus: FakePlus, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise IncusError("daemon is down")

    fake_incus.add_instance("coi-a-1", {labels.SLOT: "1"})
    monkeypatch.setattr(fake_incus, "instances", refuse)
    assert completion.COMPLETERS["name"](prefix="") == []


def test_session_and_profile_names_complete_from_the_host(
    fake_incus: FakePlus, user_file: Path
) -> None:
    user_file.write_text("[profiles.fast]\n[profiles.slow]\n")
    assert completion.COMPLETERS["profile"](prefix="f") == ["fast"]
    assert completion.COMPLETERS["resume"](prefix="") == []
    assert fake_incus.connected == []


def test_completion_prints_the_shells_registration(capsys: pytest.CaptureFixture[str]) -> None:
    assert coi(["completion", "bash"]) == 0
    assert "complete" in capsys.readouterr().out

"""`coi remote list|remove|switch` and `coi sync`, with the one fake Incus: which remote
the next command's connection goes to, and the one-line refusals."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from coi.commands import remote
from coi.config import remotes
from tests.unit.fakeplus import FakePlus, coi, one_error


@pytest.fixture
def far(fake_incus: FakePlus) -> remotes.Remote:
    found = remotes.Remote("far", "https://far.example:8443", "team", Path("unused"))
    remotes.save(found, "-----BEGIN CERTIFICATE-----\n")
    return found


def test_list_marks_the_current_remote(
    far: remotes.Remote, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["remote", "list", "--format", "json"]) == 0
    assert [(r["name"], r["current"]) for r in json.loads(capsys.readouterr().out)] == [
        ("local", True),
        ("far", False),
    ]
    assert coi(["remote", "switch", "far"]) == 0
    assert remote.list_(argparse.Namespace(format="text")) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[2].split() == ["far", far.url, "team", "*"]


def test_remove_forgets_it_and_the_connection_goes_local_again(
    fake_incus: FakePlus, far: remotes.Remote, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["remote", "switch", "far"]) == 0
    assert coi(["remote", "remove", "far"]) == 0
    assert "still trusts this client's certificate" in capsys.readouterr().err
    assert remotes.remotes() == [] and remotes.current() == "local"
    assert coi(["container", "exists", "box"]) == 1
    assert fake_incus.connected[-1]["endpoint"].is_local


def test_unknown_names_are_one_line(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["remote", "switch", "nowhere"]) != 0
    assert "nowhere" in one_error(capsys.readouterr().err)
    assert coi(["remote", "remove", "nowhere"]) != 0
    assert "nowhere" in one_error(capsys.readouterr().err)


def test_sync_is_for_remote_sessions_only(
    fake_incus: FakePlus, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["sync", "coi-a-1", "--workspace", str(workspace)]) == 2
    assert "coi sync is for remote sessions: pass --remote NAME" in one_error(
        capsys.readouterr().err
    )
    assert fake_incus.connected == []

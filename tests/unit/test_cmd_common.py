"""What commands share (coi/commands/common.py), with the one fake Incus: the connection
a command opens follows the config (project, remote), the workspace must exist."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from coi.commands import common
from coi.config import remotes
from tests.unit.fakeplus import FakePlus, coi, one_error


def test_a_command_connects_in_the_configured_project(
    fake_incus: FakePlus, user_file: Path, workspace: Path
) -> None:
    user_file.write_text('[incus]\nproject = "mine"\n')
    args = argparse.Namespace(workspace=str(workspace))
    assert common.connect(args) is fake_incus
    assert fake_incus.connected[-1]["project"] == "mine"
    assert fake_incus.connected[-1]["endpoint"].is_local


def test_after_remote_switch_commands_go_to_that_remote(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = remotes.Remote("far", "https://far.example:8443", "team", Path("unused"))
    remotes.save(remote, "-----BEGIN CERTIFICATE-----\n")
    assert coi(["remote", "switch", "far"]) == 0
    assert coi(["container", "exists", "box"]) == 1
    where = fake_incus.connected[-1]
    assert where["endpoint"].url == "https://far.example:8443" and where["project"] == "team"
    assert coi(["--remote", "local", "container", "exists", "box"]) == 1  # the flag wins
    assert fake_incus.connected[-1]["endpoint"].is_local
    capsys.readouterr()


def test_a_workspace_that_is_not_a_folder_is_one_line(
    fake_incus: FakePlus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["--workspace", str(tmp_path / "none"), "container", "exists", "box"]) == 2
    assert "is not a folder: pass an existing directory" in one_error(capsys.readouterr().err)
    assert fake_incus.connected == []


def test_the_session_request_carries_the_flags_given_only(workspace: Path) -> None:
    args = argparse.Namespace(workspace=str(workspace), network="open", slot=3, mount=["a:b"])
    request = common.session_request(args)
    assert request.flags == {"network": "open"} and request.slot == 3
    assert request.mounts == ("a:b",) and request.tool is None and request.workspace == workspace

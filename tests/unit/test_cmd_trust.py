"""`coi trust` and `coi untrust`, with the one fake Incus standing in for the daemon: a
project file's network mode reaches a container only once its bytes are approved, and
approving asks, shows and records exactly those bytes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from coi.commands import trust
from coi.commands.trust import decide
from coi.core import labels
from tests.unit.fakeplus import FakePlus, coi, one_error


@pytest.fixture
def project(workspace: Path) -> Path:
    """A workspace whose .coi.toml opens the network (an untrusted file may not)."""
    (workspace / ".coi.toml").write_text('[network]\nmode = "open"\n')
    return workspace


def launch(workspace: Path, name: str) -> int:
    return coi(["--workspace", str(workspace), "container", "launch", "coi", name, "--no-wait"])


def test_the_file_opens_the_network_only_once_trusted(
    fake_incus: FakePlus, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launch(project, "before") == 1  # restricted: needs the helper this host lacks
    assert "restricted mode needs coi's network helper" in one_error(capsys.readouterr().err)
    assert fake_incus.instance_names() == []  # discarded, not left half made
    assert coi(["trust", "--workspace", str(project), "--yes"]) == 0
    err = capsys.readouterr().err
    assert "approving it turns on:" in err and 'network.mode = "open"' in err
    assert launch(project, "after") == 0
    assert fake_incus.instances_by_name["after"]["config"][labels.NETWORK_MODE] == "open"


def test_a_changed_file_is_untrusted_again_and_untrust_withdraws(
    fake_incus: FakePlus, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["trust", "--workspace", str(project), "--yes"]) == 0
    assert coi(["trust", "--list", "--format", "json"]) == 0
    assert [a["state"] for a in json.loads(capsys.readouterr().out)] == ["trusted"]
    (project / ".coi.toml").write_text('[network]\nmode = "open"\n# changed\n')
    assert coi(["trust", "--list", "--format", "json"]) == 0
    assert [a["state"] for a in json.loads(capsys.readouterr().out)] == ["changed"]
    assert launch(project, "box") == 1
    assert coi(["untrust", "--workspace", str(project)]) == 0
    assert "no longer trusted" in capsys.readouterr().err
    assert coi(["untrust", "--workspace", str(project)]) == 0
    assert "was not trusted: nothing to do" in capsys.readouterr().err


def test_without_a_terminal_it_asks_for_yes_and_a_no_changes_nothing(
    fake_incus: FakePlus,
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert coi(["trust", "--workspace", str(project)]) == 2
    assert "no terminal to confirm on" in one_error(capsys.readouterr().err)
    monkeypatch.setattr(decide, "_confirmed", lambda: False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    assert coi(["trust", "--workspace", str(project)]) == 1
    assert "not trusted: nothing changed" in capsys.readouterr().err
    assert coi(["trust", "--list"]) == 0
    assert "no trusted project files" in capsys.readouterr().err
    assert fake_incus.connected == []  # trust decides alone: it never asks the daemon


def test_a_workspace_without_a_project_file_is_one_line(
    fake_incus: FakePlus, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["trust", "--workspace", str(workspace), "--yes"]) == 2
    assert ".coi.toml: no such file" in one_error(capsys.readouterr().err)
    assert set(trust.COMMANDS) == {"trust", "untrust"}

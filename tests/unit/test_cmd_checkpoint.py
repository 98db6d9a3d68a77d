"""`coi checkpoint`, `diff` and `rollback` against the one fake Incus: the files go back
as the checkpoint had them, with the workspace's running containers frozen meanwhile
when this host runs Incus, and the state before is kept to undo it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from coi.commands import checkpoint
from coi.core import labels
from tests.unit.fakeplus import FakePlus, coi, one_error


def here(workspace: Path, *argv: str) -> list[str]:
    return [*argv, "--workspace", str(workspace)]


@pytest.fixture
def local_incus(fake_incus: FakePlus) -> FakePlus:
    """Incus runs on this host (its socket is there): rollbacks freeze what runs."""
    Path(os.environ["INCUS_SOCKET"]).touch()
    return fake_incus


def test_checkpoint_diff_and_rollback_with_the_workspaces_containers_frozen(
    local_incus: FakePlus,
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (workspace / "a.txt").write_text("1\n")
    assert coi(here(workspace, "checkpoint", "before", "-m", "a test")) == 0
    assert "checkpoint " in capsys.readouterr().err
    (workspace / "a.txt").write_text("2\n")
    (workspace / "b.txt").write_text("new\n")
    assert coi(here(workspace, "diff", "--format", "json")) == 0
    changed = {c["path"] for c in json.loads(capsys.readouterr().out)["changes"]}
    assert changed == {"a.txt", "b.txt"}

    local_incus.add_instance("coi-w-1", {labels.WORKSPACE: str(workspace)})
    local_incus.add_instance("coi-other-1", {labels.WORKSPACE: "/elsewhere"})
    actions: list[tuple[str, str]] = []
    real = local_incus.set_state

    def noting(name: str, action: str, *, force: bool = False, timeout: int = -1) -> None:
        actions.append((name, action))
        real(name, action, force=force, timeout=timeout)

    monkeypatch.setattr(local_incus, "set_state", noting)
    assert coi(here(workspace, "rollback")) == 0
    assert (workspace / "a.txt").read_text() == "1\n" and not (workspace / "b.txt").exists()
    assert actions == [("coi-w-1", "freeze"), ("coi-w-1", "unfreeze")]
    assert "(`coi rollback" in capsys.readouterr().err

    assert coi(here(workspace, "checkpoint", "list", "--format", "json")) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2  # the state before the rollback too
    assert coi(here(workspace, "checkpoint", "prune", "--keep", "1")) == 0
    assert "deleted 1 checkpoint(s), kept the newest 1" in capsys.readouterr().err


def test_without_incus_on_this_host_a_rollback_freezes_nothing(
    fake_incus: FakePlus, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "a.txt").write_text("1\n")
    assert coi(here(workspace, "checkpoint")) == 0
    (workspace / "a.txt").write_text("2\n")
    fake_incus.add_instance("coi-w-1", {labels.WORKSPACE: str(workspace)})
    assert coi(here(workspace, "rollback")) == 0
    assert (workspace / "a.txt").read_text() == "1\n"
    assert fake_incus.connected == []  # no socket here: nothing that runs could be frozen


def test_a_container_that_cannot_be_frozen_stops_the_rollback(
    local_incus: FakePlus,
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from coi.core.errors import IncusError

    (workspace / "a.txt").write_text("1\n")
    assert coi(here(workspace, "checkpoint")) == 0
    (workspace / "a.txt").write_text("2\n")
    local_incus.add_instance("coi-w-1", {labels.WORKSPACE: str(workspace)})

    def stuck(name: str, action: str, *, force: bool = False, timeout: int = -1) -> None:
        raise IncusError("freezing timed out")

    monkeypatch.setattr(local_incus, "set_state", stuck)
    assert coi(here(workspace, "rollback")) == 1
    assert "could not freeze coi-w-1" in one_error(capsys.readouterr().err)
    assert (workspace / "a.txt").read_text() == "2\n"  # nothing changed


def test_an_unknown_checkpoint_is_one_line(
    fake_incus: FakePlus, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(here(workspace, "rollback", "nosuch")) != 0
    one_error(capsys.readouterr().err)
    assert checkpoint.HERE == ("workspace",)

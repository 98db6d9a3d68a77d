"""`coi worktree list|merge|discard` against the one fake Incus, on a real git workspace:
a `coi shell --worktree` session works on its slot's branch, the list names its
container, a merge freezes the workspace's containers while git writes, and a worktree
in use is not discarded."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from coi.commands import worktree
from coi.core import labels, slots
from tests.unit.fakeplus import FakePlus, Setups, ViewHelper, coi, one_error


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)
    return done.stdout.decode()


@pytest.fixture
def repo(workspace: Path) -> Path:
    """A workspace that is a git repository with one commit."""
    git(workspace, "init", "-q", "-b", "main")
    git(workspace, "config", "user.name", "Test")
    git(workspace, "config", "user.email", "test@example.com")
    (workspace / "README").write_text("hello\n")
    git(workspace, "add", "README")
    git(workspace, "commit", "-q", "-m", "first")
    return workspace


@pytest.fixture
def session(
    fake_incus: FakePlus,
    view_helper: ViewHelper,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """A background `coi shell --worktree` session of repo: its container's name."""
    fake_incus.answers["sh"] = Setups()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    argv = ["--workspace", str(repo), "--network", "open", "shell", "--background", "--worktree"]
    assert coi(argv) == 0
    return slots.container_name(repo, 1)


def listed(repo: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    assert coi(["worktree", "list", "--workspace", str(repo), "--format", "json"]) == 0
    found: list[dict[str, str]] = json.loads(capsys.readouterr().out)
    return found


def test_a_worktree_session_works_on_its_slots_branch_and_is_listed(
    fake_incus: FakePlus, session: str, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fake_incus.instances_by_name[session]["config"]
    assert config[labels.WORKTREE_BRANCH] == "coi/1"
    (row,) = listed(repo, capsys)
    assert (row["branch"], row["container"], row["status"]) == ("coi/1", session, "running")
    assert git(Path(row["path"]), "rev-parse", "--abbrev-ref", "HEAD").strip() == "coi/1"


def test_a_worktree_in_use_is_not_discarded(
    fake_incus: FakePlus, session: str, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["worktree", "discard", session]) == 2
    line = one_error(capsys.readouterr().err)
    assert f"{session} runs in worktree coi/1" in line and f"`coi kill {session}`" in line
    assert [r["branch"] for r in listed(repo, capsys)] == ["coi/1"]
    assert coi(["kill", session]) == 0
    assert coi(["worktree", "discard", "1", "--workspace", str(repo)]) == 0
    assert listed(repo, capsys) == []
    assert "coi/1" not in git(repo, "branch", "--list")


def test_merge_brings_the_branch_in_with_the_containers_frozen_meanwhile(
    fake_incus: FakePlus,
    session: str,
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (row,) = listed(repo, capsys)
    tree = Path(row["path"])
    (tree / "NEW").write_text("from the agent\n")
    git(tree, "add", "NEW")
    git(tree, "-c", "user.name=Agent", "-c", "user.email=a@example.com", "commit", "-qm", "x")
    states: list[str] = []
    real = fake_incus.set_state

    def noting(name: str, action: str, *, force: bool = False, timeout: int = -1) -> None:
        states.append(action)
        real(name, action, force=force, timeout=timeout)

    monkeypatch.setattr(fake_incus, "set_state", noting)
    assert coi(["worktree", "merge", session]) == 0
    assert (repo / "NEW").read_text() == "from the agent\n"
    assert states == ["freeze", "unfreeze"]
    assert fake_incus.instances_by_name[session]["status"] == "Running"
    assert "merged coi/1 into" in capsys.readouterr().err


def test_an_unknown_worktree_is_one_line(
    fake_incus: FakePlus, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["worktree", "merge", "nope", "--workspace", str(repo)]) == 2
    assert "no coi worktree nope" in one_error(capsys.readouterr().err)
    assert worktree.BRANCH_KEY == labels.WORKTREE_BRANCH

"""Worktrees made, merged and discarded by root's coi in another user's repository: git runs
as that user (everything it makes is theirs), never writes through a link planted in the
shared git dir, and a missing git identity is one line that names the fix."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from coi.core import dropped
from coi.core.errors import UsageError
from coi.workspace import worktree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root's coi on a user's repository")
OWNER = 1234


def git(repo: Path, *argv: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    ident = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", f"safe.directory={repo}"]
    done = subprocess.run(["git", "-C", str(repo), *ident, *argv], capture_output=True,
                          text=True, env=env, timeout=60, check=True)  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository of uid 1234, below a folder that uid cannot enter (root's tmp)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "main")
    (ws / "f.txt").write_text("base\n")
    git(ws, "add", ".")
    git(ws, "commit", "-qm", "base")
    own(ws)
    return ws


def own(ws: Path) -> None:
    subprocess.run(["chown", "-R", f"{OWNER}:{OWNER}", str(ws)], check=True)


def owners(*tops: Path) -> set[int]:
    found = set()
    for top in tops:
        for folder, dirs, files in os.walk(top):
            for name in [*dirs, *files]:
                found.add(os.lstat(os.path.join(folder, name)).st_uid)
    return found


def test_everything_git_makes_for_a_worktree_belongs_to_the_owner(repo: Path) -> None:
    git(repo, "config", "user.name", "Owner")  # the owner's identity, where they can read it
    git(repo, "config", "user.email", "o@t")
    own(repo)
    tree = worktree.ensure(repo, "coi/1")
    (tree.path / "f.txt").write_text("one\n")
    argv = ["git", "-C", str(tree.path), "commit", "-qam", "one"]  # as the agent would

    def commit() -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return f"{done.returncode} {done.stderr}"

    assert dropped.call((OWNER, OWNER), commit, [tree.path, repo]).startswith("0 ")
    worktree.merge(repo, "coi/1")
    assert (repo / "f.txt").read_text() == "one\n"
    assert owners(repo, tree.path) == {OWNER}  # no root-owned object, ref or log
    worktree.discard(repo, tree)
    assert owners(repo) == {OWNER}


def test_a_link_planted_in_the_shared_git_dir_is_never_written_through(
    repo: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "coi").mkdir()
    heads = repo / ".git" / "logs" / "refs" / "heads"
    heads.mkdir(parents=True, exist_ok=True)
    (heads / "coi").symlink_to(victim / "coi")
    with pytest.raises(UsageError, match="symbolic link"):
        worktree.ensure(repo, "coi/1")
    assert os.listdir(victim / "coi") == []
    assert "coi/1" not in git(repo, "branch", "--list")


def test_a_merge_without_a_git_identity_says_how_to_set_one(repo: Path) -> None:
    git(repo, "config", "user.useConfigOnly", "true")  # git may not guess one
    own(repo)
    tree = worktree.ensure(repo, "coi/1")
    with pytest.raises(UsageError, match=r"git config --global user\.email") as said:
        worktree.merge(repo, tree.branch)
    assert "\n" not in str(said.value)

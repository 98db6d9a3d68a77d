"""A git worktree per slot: branch names, folders, what a launch mounts, and the git round
trip (create, reuse, merge, refused conflict, discard) on a real repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.boundary import protect
from coi.core.errors import CoiError, UsageError
from coi.launch import executor, worktrees
from coi.workspace import worktree
from tests.strategies import branch_names


@given(branch_names)
def test_a_folder_names_one_branch(branch: str) -> None:
    name = worktree.folder_name(branch)
    assert "/" not in name and name not in (".", "..")
    assert worktree.branch_of_folder(name) == branch


@given(branch_names, branch_names)
def test_two_branches_never_share_a_folder(a: str, b: str) -> None:
    assert (worktree.folder_name(a) == worktree.folder_name(b)) == (a == b)


@given(st.integers(min_value=1, max_value=99))
def test_the_default_branch_of_a_slot_is_a_valid_branch(slot: int) -> None:
    assert worktree.default_branch(slot) == f"coi/{slot}"
    assert worktree.check_branch(worktree.default_branch(slot)) is None


@pytest.mark.parametrize(
    "bad", ["", "-x", "a..b", "a//b", "a/", ".hidden", "a/.b", "x.lock", "a b", "a~1", "x."]
)
def test_branches_git_would_refuse_or_misread_are_refused(bad: str) -> None:
    assert worktree.check_branch(bad) is not None


@given(st.one_of(st.none(), st.just(""), branch_names), st.booleans(), st.integers(1, 9))
def test_the_flag_wins_over_the_config(flag: str | None, configured: bool, slot: int) -> None:
    chosen = worktree.wanted_branch(flag, configured, slot)
    if flag:
        assert chosen == flag
    elif flag == "" or configured:
        assert chosen == f"coi/{slot}"
    else:
        assert chosen is None


@pytest.mark.parametrize(
    ("common", "refused"),
    [("/workspace/.git", True), ("/run/x/.git", True), ("/proc", True),
     ("/workspaces/p/.git", False), ("/home/u/p/.git", False), ("/var/tmp/p/.git", False)],
)  # fmt: skip
def test_git_dirs_the_container_hides_are_refused(common: str, refused: bool) -> None:
    assert (worktree.unreachable(Path(common)) is not None) == refused


def test_the_worktree_lives_under_coi_home_by_workspace(tmp_path: Path) -> None:
    home = tmp_path / "coi"
    one = worktree.folder(Path("/p/a"), "coi/1", home)
    assert one.parent.parent == home / "worktrees"
    assert one.name == "coi%2F1"
    assert worktree.folder(Path("/p/b"), "coi/1", home) != one


def test_a_locked_launch_mounts_the_git_view_at_the_git_dirs_own_path() -> None:
    found = worktrees.devices("c-1", Path("/src/p/.git"), locked=True)
    assert found == {
        "worktree-git": {
            "type": "disk",
            "source": str(protect.view_path("c-1.git")),
            "path": "/src/p/.git",
            "recursive": "true",
        }
    }
    assert worktrees.devices("c-1", None, locked=True) == {}


def test_without_root_hooks_and_config_are_read_only_disks(tmp_path: Path) -> None:
    common = tmp_path / ".git"
    (common / "hooks").mkdir(parents=True)
    (common / "config").write_text("")
    found = worktrees.devices("c-1", common, locked=False)
    assert found["worktree-git"]["source"] == str(common)
    assert found["worktree-git-hooks"]["readonly"] == "true"
    assert found["worktree-git-config"]["path"] == str(common / "config")


def test_each_worktrees_own_redirects_are_read_only(tmp_path: Path) -> None:
    common = tmp_path / ".git"
    for sub in ("a", "b"):
        (common / "worktrees" / sub).mkdir(parents=True)
    listed = worktrees.listed(common)
    assert set(protect.GIT_ENTRIES) <= set(listed)
    for sub in ("a", "b"):
        assert {f"worktrees/{sub}/{e}" for e in ("commondir", "config.worktree", "gitdir")} <= set(
            listed
        )


def test_the_sweep_covers_the_worktree_the_shared_git_dir_and_the_main_tree_not_the_views() -> None:
    record = {
        "config": {"user.coi.workspace": "/p", "user.coi.worktree": "/h/.coi/worktrees/x/coi%2F1"},
        "devices": {
            "workspace": {"type": "disk", "source": "/run/coi-protect/c", "path": "/workspace"},
            "worktree-git": {"type": "disk", "source": "/run/coi-protect/c.git", "path": "/p/.git"},
        },
    }
    assert executor.folders_of(record) == [
        Path("/h/.coi/worktrees/x/coi%2F1"), Path("/p/.git"), Path("/p")]  # fmt: skip


def test_a_kept_container_keeps_its_worktree() -> None:
    listing = [{"name": "c-1", "config": {"user.coi.worktree_branch": "coi/1"}}]
    with pytest.raises(UsageError, match="kept"):
        worktrees.for_slot("other", Path("/p"), 1, "c-1", listing, reuse=True)
    with pytest.raises(UsageError, match="no worktree"):
        worktrees.for_slot("", Path("/p"), 1, "c-1", [{"name": "c-1"}], reuse=True)
    assert worktrees.for_slot(None, Path("/p"), 1, "c-1", [{"name": "c-1"}], reuse=True) is None


def test_a_branch_in_use_by_another_slot_is_refused() -> None:
    listing = [{"name": "c-2", "config": {"user.coi.workspace": "/p",
                                          "user.coi.worktree_branch": "feature"}}]  # fmt: skip
    with pytest.raises(UsageError, match="in use by c-2"):
        worktrees.for_slot("feature", Path("/p"), 1, "c-1", listing, reuse=False)


# -- git, for real (no container) ------------------------------------------------------------


def git(repo: Path, *argv: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    done = subprocess.run(["git", "-C", str(repo), *ident, *argv], capture_output=True,
                          text=True, env=env, timeout=60, check=True)  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "main")
    git(ws, "config", "user.name", "Owner")
    git(ws, "config", "user.email", "o@t")
    (ws / "f.txt").write_text("base\n")
    git(ws, "add", ".")
    git(ws, "commit", "-qm", "base")
    return ws


def test_create_reuse_merge_refuse_and_discard(repo: Path) -> None:
    one = worktree.ensure(repo, "coi/1")
    assert one.path == worktree.folder(repo, "coi/1")
    assert worktree.ensure(repo, "coi/1") == one  # reused, not made again
    assert (repo / ".git" / "worktrees" / one.path.name / "locked").exists()
    two = worktree.ensure(repo, "coi/2")
    assert worktree.all_of(repo) == [one, two]
    for tree, text in ((one, "one\n"), (two, "two\n")):
        (tree.path / "f.txt").write_text(text)
        git(tree.path, "commit", "-qam", text)
    head = git(repo, "rev-parse", "HEAD")
    worktree.merge(repo, "coi/1")
    assert (repo / "f.txt").read_text() == "one\n"
    assert git(repo, "rev-parse", "HEAD^1") == head
    merged = git(repo, "rev-parse", "HEAD")
    with pytest.raises(CoiError, match=r"conflicts in f\.txt"):
        worktree.merge(repo, "coi/2")
    assert git(repo, "rev-parse", "HEAD") == merged
    assert git(repo, "status", "--porcelain") == ""
    worktree.discard(repo, two)
    assert not two.path.exists() and worktree.all_of(repo) == [one]
    assert "coi/2" not in git(repo, "branch", "--list")


def test_a_workspace_that_is_no_repository_or_has_no_commit_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(UsageError, match="needs a git repository"):
        worktree.ensure(plain, "coi/1")
    git(plain, "init", "-q")
    with pytest.raises(UsageError, match="no commit yet"):
        worktree.ensure(plain, "coi/1")


def test_a_merge_refuses_a_dirty_tree(repo: Path) -> None:
    worktree.ensure(repo, "coi/1")
    (repo / "f.txt").write_text("mine\n")
    with pytest.raises(UsageError, match="uncommitted"):
        worktree.merge(repo, "coi/1")
    assert (repo / "f.txt").read_text() == "mine\n"


def test_the_config_key_turns_worktrees_on_and_a_bad_value_is_one_line(tmp_path: Path) -> None:
    from coi.config import load
    from coi.core.errors import ConfigError

    ws = tmp_path / "ws"
    ws.mkdir()
    assert load.load(ws, environ=dict(os.environ)).defaults.worktree is False
    (ws / ".coi.toml").write_text("[defaults]\nworktree = true\n")
    # tightening: a project file needs no trust for it
    assert load.load(ws, environ=dict(os.environ)).defaults.worktree is True
    (ws / ".coi.toml").write_text('[defaults]\nworktree = "yes"\n')
    with pytest.raises(ConfigError, match=r"defaults\.worktree"):
        load.load(ws, environ=dict(os.environ))

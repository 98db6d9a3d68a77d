"""Planted submodules: a nested repository whose config would run code on the host's
`git status` is neutralized; one with only inert keys stays as it is."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coi.workspace import gitlinks


def git(repo: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    ident = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "protocol.file.allow=always"]
    return subprocess.run(["git", "-C", str(repo), *ident, *argv], capture_output=True,
                          text=True, env=env, timeout=60, check=True)  # fmt: skip


def plant(parent: Path, marker: Path, *, payload: bool = True) -> Path:
    """What a container can do with a writable index: a nested repo added as a submodule."""
    sub = parent / "vendor" / "lib"
    sub.mkdir(parents=True)
    git(sub, "init", "-q")
    (sub / "x").write_text("x\n")
    git(sub, "add", "x")
    git(sub, "commit", "-qm", "x")
    if payload:
        git(sub, "config", "core.fsmonitor", f"touch {marker}; false")
    git(parent, "add", "vendor/lib")
    return sub


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    repo = tmp_path / "ws"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README").write_text("r\n")
    git(repo, "add", "README")
    git(repo, "commit", "-qm", "first")
    return repo


def test_the_planted_payload_runs_on_the_host_without_coi(parent: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    plant(parent, marker)
    git(parent, "status")
    assert marker.exists()  # the attack is real: this is what neutralize must stop


def test_neutralize_moves_the_planted_config_aside(parent: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    sub = plant(parent, marker)
    (sub / ".git" / "hooks" / "post-checkout").write_text("#!/bin/sh\ntouch /tmp/x\n")
    said: list[str] = []
    moved = gitlinks.neutralize(parent, said.append)
    assert {p.name.split(".coi-quarantined-")[0] for p in moved} == {"config", "hooks"}
    assert len(said) == 2 and all("vendor/lib" in line for line in said)
    git(parent, "status")
    assert not marker.exists()


def test_an_inert_submodule_config_stays(parent: Path, tmp_path: Path) -> None:
    sub = plant(parent, tmp_path / "ran", payload=False)
    git(sub, "remote", "add", "origin", "https://example.invalid/lib.git")
    assert gitlinks.neutralize(parent, print) == []
    assert (sub / ".git" / "config").is_file()


def test_a_folder_that_is_not_a_repository_is_left_alone(tmp_path: Path) -> None:
    assert gitlinks.neutralize(tmp_path, print) == []


@pytest.mark.parametrize(
    "key",
    ["core.fsmonitor", "core.hookspath", "core.sshcommand", "diff.x.textconv",
     "filter.lfs.smudge", "include.path", "submodule.a.update", "alias.st", "core.pager"],
)  # fmt: skip
def test_keys_that_run_programs_are_not_inert(key: str) -> None:
    assert not gitlinks.INERT.fullmatch(key)


# --- git dirs anywhere under the workspace (issue 20) ----------------------------------------

WHY = "it could make the host's git run code"


def payload(marker: Path) -> str:
    return f"[core]\n\tfsmonitor = touch {marker}; false\n"


def move_git_dir(parent: Path, folder: str, where: str, marker: Path) -> None:
    """A nested repository at folder whose git dir is moved to `where` (both under parent),
    with a payload, added to parent's index as a submodule."""
    sub = parent / folder
    sub.mkdir(parents=True)
    git(sub, "init", "-q")
    (sub / "x").write_text("x\n")
    git(sub, "add", "x")
    git(sub, "commit", "-qm", "x")
    git(sub, "config", "core.fsmonitor", f"touch {marker}; false")
    (parent / where).parent.mkdir(parents=True, exist_ok=True)
    (sub / ".git").rename(parent / where)
    (sub / ".git").write_text(f"gitdir: {os.path.relpath(parent / where, sub)}\n")
    git(parent, "add", folder)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under folder, its mode and (for files) its bytes, links not followed."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            st = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            found[str(path.relative_to(folder))] = (st.st_mode, data)
    return found


@pytest.mark.parametrize(
    "where", [".git/evil", ".git/modules/m/modules/n", ".git/worktrees/w", ".git/objects/zz",
              "vendor/elsewhere"],
)  # fmt: skip
def test_a_git_dir_planted_anywhere_in_the_workspace_loses_its_config(
    parent: Path, tmp_path: Path, where: str
) -> None:
    marker = tmp_path / "ran"
    move_git_dir(parent, "lib", where, marker)
    said: list[str] = []
    moved = gitlinks.neutralize(parent, said.append)
    assert [p.parent for p in moved] == [parent / where]
    assert said == [f"submodule lib: moved config aside, {WHY}"]
    git(parent, "status")
    assert not marker.exists()


def test_a_head_planted_at_the_top_does_not_hide_the_submodules(
    parent: Path, tmp_path: Path
) -> None:
    move_git_dir(parent, "lib", ".git/evil", tmp_path / "ran")
    (parent / "HEAD").write_text("ref: refs/heads/main\n")  # the top now looks like a git dir
    (parent / "objects").mkdir()
    moved = gitlinks.neutralize(parent, print)
    assert [p.parent for p in moved] == [parent / ".git" / "evil"]


def test_the_payload_under_dot_git_runs_without_coi(parent: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    move_git_dir(parent, "lib", ".git/evil", marker)
    git(parent, "status")
    assert marker.exists()  # what the sweep above stops


def real_submodule(parent: Path, tmp_path: Path, name: str = "sub") -> Path:
    """A submodule added the usual way: its git dir is .git/modules/NAME."""
    upstream = tmp_path / f"upstream-{name}"
    upstream.mkdir()
    git(upstream, "init", "-q")
    (upstream / "u").write_text("u\n")
    git(upstream, "add", "u")
    git(upstream, "commit", "-qm", "u")
    git(parent, "submodule", "add", "-q", str(upstream), name)
    git(parent, "commit", "-qm", f"submodule {name}")
    return parent / ".git" / "modules" / name


def test_a_real_submodule_stays_and_a_payload_in_its_git_dir_goes(
    parent: Path, tmp_path: Path
) -> None:
    modules = real_submodule(parent, tmp_path)
    assert gitlinks.neutralize(parent, print) == []  # inert keys only: left as it is
    marker = tmp_path / "ran"
    with (modules / "config").open("a") as config:
        config.write(payload(marker))
    (modules / "hooks" / "post-checkout").write_text("#!/bin/sh\n")
    moved = gitlinks.neutralize(parent, print)
    assert sorted(p.name.split(gitlinks.SUFFIX)[0] for p in moved) == ["config", "hooks"]
    git(parent, "status")
    assert not marker.exists()


def test_a_git_dir_under_modules_that_no_gitlink_names_is_swept(
    parent: Path, tmp_path: Path
) -> None:
    planted = parent / ".git" / "modules" / "a" / "b" / "c"
    planted.mkdir(parents=True)
    (planted / "config").write_text(payload(tmp_path / "ran"))
    (planted / "commondir").write_text("../../../../elsewhere\n")
    said: list[str] = []
    moved = gitlinks.neutralize(parent, said.append)
    assert {p.name.split(gitlinks.SUFFIX)[0] for p in moved} == {"config", "commondir"}
    assert all(line.startswith("git dir .git/modules/a/b/c: moved") for line in said)


def test_a_worktrees_dir_keeps_its_commondir_and_loses_a_payload(
    parent: Path, tmp_path: Path
) -> None:
    git(parent, "worktree", "add", "-q", str(tmp_path / "wt"))
    admin = parent / ".git" / "worktrees" / "wt"
    assert gitlinks.neutralize(parent, print) == []  # a real worktree is left as it is
    (admin / "config.worktree").write_text(payload(tmp_path / "ran"))
    moved = gitlinks.neutralize(parent, print)
    assert [p.name.split(gitlinks.SUFFIX)[0] for p in moved] == ["config.worktree"]
    assert (admin / "commondir").read_text() == "../..\n"
    (admin / "commondir").write_text("../../../evil\n")
    moved = gitlinks.neutralize(parent, print)
    assert [p.name.split(gitlinks.SUFFIX)[0] for p in moved] == ["commondir"]


def test_a_nested_submodule_named_by_a_submodules_index_is_swept(
    parent: Path, tmp_path: Path
) -> None:
    """The outer index names only `sub`; sub's own index names `sub/inner`, whose git dir
    was planted in a plain folder of the workspace."""
    real_submodule(parent, tmp_path)
    marker = tmp_path / "ran"
    move_git_dir(parent / "sub", "inner", "../stash/inner-git", marker)
    assert "inner" in git(parent / "sub", "ls-files", "--stage").stdout
    said: list[str] = []
    moved = gitlinks.neutralize(parent, said.append)
    assert [p.parent for p in moved] == [parent / "stash" / "inner-git"]
    assert said == [f"submodule sub/inner: moved config aside, {WHY}"]
    git(parent, "status")
    assert not marker.exists()


def test_a_worktree_sessions_gitlink_into_the_shared_git_dir_is_swept(
    parent: Path, tmp_path: Path
) -> None:
    """A worktree (outside the workspace) and the shared git dir are swept together: the
    worktree's submodule may point into the shared dir by its absolute path."""
    tree = tmp_path / "tree"
    git(parent, "worktree", "add", "-q", str(tree))
    marker = tmp_path / "ran"
    common = parent / ".git"
    move_git_dir(tree, "evil", str(common / "objects" / "evil"), marker)
    (tree / "evil" / ".git").write_text(f"gitdir: {common / 'objects' / 'evil'}\n")
    moved = gitlinks.sweep([tree, common], print)
    assert [p.parent for p in moved] == [common / "objects" / "evil"]
    git(tree, "status")
    assert not marker.exists()


def test_the_shared_git_dir_alone_is_swept_as_a_git_dir(parent: Path, tmp_path: Path) -> None:
    modules = real_submodule(parent, tmp_path)
    with (modules / "config").open("a") as config:
        config.write(payload(tmp_path / "ran"))
    moved = gitlinks.sweep([parent / ".git"], print)
    assert [p.name.split(gitlinks.SUFFIX)[0] for p in moved] == ["config"]
    assert (parent / ".git" / "config").is_file()  # the repository's own stays


@pytest.mark.parametrize("how", ["modules-link", "folder-link", "gitfile-through-link",
                                 "dotgit-link", "hooks-link"])  # fmt: skip
def test_a_link_planted_where_the_sweep_goes_touches_nothing_outside(
    parent: Path, tmp_path: Path, how: str
) -> None:
    """The victim folder (outside) looks like a git dir with a payload: whichever link
    leads there, the sweep neither reads through it nor renames anything in it."""
    victim = tmp_path / "victim"
    (victim / "hooks").mkdir(parents=True)
    (victim / "HEAD").write_text("ref: refs/heads/main\n")
    (victim / "config").write_text(payload(tmp_path / "ran"))
    (victim / "commondir").write_text("/elsewhere\n")
    (victim / "hooks" / "pre-commit").write_text("#!/bin/sh\n")
    before = snapshot(victim)
    sub = parent / "lib"
    sub.mkdir()
    if how == "modules-link":  # .git/modules is a link: the scan never enters it
        (parent / ".git" / "modules").symlink_to(victim.parent)
    elif how == "folder-link":  # .git/modules/victim is a link
        (parent / ".git" / "modules").mkdir()
        (parent / ".git" / "modules" / "victim").symlink_to(victim)
        (sub / ".git").write_text("gitdir: ../.git/modules/victim\n")
    elif how == "gitfile-through-link":
        (parent / "stash").symlink_to(tmp_path)
        (sub / ".git").write_text("gitdir: ../stash/victim\n")
    elif how == "dotgit-link":
        (sub / ".git").symlink_to(victim)
    else:
        (parent / "stash").mkdir()
        (parent / "stash" / "HEAD").write_text("ref: refs/heads/main\n")
        (parent / "stash" / "hooks").symlink_to(victim / "hooks")
        (sub / ".git").write_text("gitdir: ../stash\n")
    if how != "modules-link":
        head = git(parent, "rev-parse", "HEAD").stdout.strip()
        git(parent, "update-index", "--add", "--cacheinfo", f"160000,{head},lib")
    moved = gitlinks.neutralize(parent, print)
    assert snapshot(victim) == before
    assert all(parent in p.parents for p in moved)
    if how in ("gitfile-through-link", "dotgit-link"):
        assert [p.name.split(gitlinks.SUFFIX)[0] for p in moved] == [".git"]
    if how == "hooks-link":
        assert [p.name.split(gitlinks.SUFFIX)[0] for p in moved] == ["hooks"]
        assert (p := moved[0]).is_symlink() and p.parent == parent / "stash"


def test_the_sweep_stops_at_its_bound_and_says_so(
    parent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(20):
        (parent / ".git" / "modules" / f"m{i:02}").mkdir(parents=True)
    monkeypatch.setattr(gitlinks, "MAX_DIRS", 5)
    said: list[str] = []
    gitlinks.neutralize(parent, said.append)
    assert len(said) == 1 and said[0].startswith("stopped after")


def test_an_index_the_sweep_cannot_read_is_moved_aside(parent: Path, tmp_path: Path) -> None:
    modules = real_submodule(parent, tmp_path)
    (modules / "index").write_bytes(b"DIRC\0\0\0\x09garbage")
    moved = gitlinks.neutralize(parent, print)
    assert [p.name.split(gitlinks.SUFFIX)[0] for p in moved] == ["index"]


@pytest.fixture(scope="module")
def lattice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folders a/b nested three deep, no links: where the kernel and the sweep must agree."""
    root = tmp_path_factory.mktemp("lattice") / "ws"
    for first in "ab":
        for second in "ab":
            (root / first / second / "a").mkdir(parents=True)
    return root


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "", "a", "b", "gone"]), max_size=7), st.booleans())
def test_a_gitdir_path_without_links_is_placed_where_the_kernel_finds_it(
    lattice: Path, parts: list[str], absolute: bool
) -> None:
    base = lattice / "a" / "b"
    target = "/".join(parts)
    if absolute:
        target = str(base) + "/" + target
    sweeper = gitlinks._Sweep([lattice], print)
    try:
        found = sweeper._locate(gitlinks.Place(0, ("a", "b")), target)
    finally:
        sweeper.close()
    real = Path(os.path.realpath(base / target))
    if "gone" in parts or not real.exists():
        return  # git fails on such a path as the kernel does; where the sweep looks is moot
    expected = real.relative_to(lattice).parts if lattice in [real, *real.parents] else None
    assert (found.parts if found is not None else None) == expected

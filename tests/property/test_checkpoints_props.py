"""Checkpoints round-trip generated trees: rollback restores every file byte for byte
(executable bits and symlinks too), and a git workspace's own state is never touched."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coi.core.errors import CoiError
from coi.workspace import checkpoints
from tests.strategies import workspace_trees

_paths = st.lists(st.sampled_from(["a", "b", "ab", "a.b"]), min_size=1, max_size=3).map("/".join)
SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def plant(root: Path, tree: dict[str, Any]) -> None:
    """Write a generated tree; a path that collides with an earlier one is skipped."""
    for rel, (first, second) in sorted(tree.items()):
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if first == "->":
                path.symlink_to(second)
            else:
                path.write_bytes(first)
                path.chmod(0o755 if second else 0o644)
        except OSError:  # collides with an earlier path, or lies behind a link
            continue


def picture(root: Path) -> dict[str, tuple[str, ...]]:
    """Every file and link under root (not .git): content and exec bit, or target."""
    seen: dict[str, tuple[str, ...]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git" and not os.path.islink(os.path.join(folder, d))]
        for name in files + [
            d for d in os.listdir(folder) if os.path.islink(os.path.join(folder, d))
        ]:
            full = Path(folder, name)
            rel = str(full.relative_to(root))
            if any(part.endswith(".log") for part in Path(rel).parts):
                rel = "ignored:" + rel
            if full.is_symlink():
                seen[rel] = ("link", os.readlink(full))
            elif full.is_file():
                exe = bool(full.stat().st_mode & stat.S_IXUSR)
                seen[rel] = ("file", full.read_bytes().hex(), str(exe))
    return seen


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def user_state(root: Path) -> tuple[str, ...]:
    """HEAD, index, branches, stash and reflogs as the user has them."""
    index = (
        (root / ".git" / "index").read_bytes().hex() if (root / ".git" / "index").exists() else ""
    )
    logs = sorted(
        str(p.relative_to(root)) + p.read_text()
        for p in (root / ".git" / "logs").rglob("*")
        if p.is_file()
    )
    return (
        git(root, "rev-parse", "HEAD"),
        index,
        git(root, "for-each-ref", "refs/heads", "refs/tags", "refs/stash"),
        git(root, "stash", "list"),
        "".join(logs),
    )  # fmt: skip


@pytest.fixture
def scratch() -> Any:
    folder = Path(tempfile.mkdtemp(prefix="coi-cp-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _git_workspace(root: Path, before: dict[str, Any]) -> Path:
    ws = root / "ws"
    ws.mkdir()
    git(ws, "init", "-q")
    (ws / "tracked").write_text("one\n")
    (ws / ".gitignore").write_text("*.log\n")
    git(ws, "add", "tracked", ".gitignore")
    git(ws, "commit", "-qm", "init")
    git(ws, "stash", "list")
    plant(ws, before)
    return ws


@SETTINGS
@given(before=workspace_trees, after=workspace_trees)
def test_git_rollback_restores_the_tree_and_keeps_the_users_state(
    scratch: Path, before: dict[str, Any], after: dict[str, Any]
) -> None:
    root = Path(tempfile.mkdtemp(dir=scratch))
    ws = _git_workspace(root, before)
    expected = {k: v for k, v in picture(ws).items() if not k.startswith("ignored:")}
    users = user_state(ws)
    first = checkpoints.create(ws, "gen")
    for entry in list(ws.iterdir()):
        if entry.name not in (".git", ".gitignore"):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    plant(ws, after)
    changed = picture(ws)
    try:
        checkpoints.rollback(ws, first)
    except CoiError as exc:  # it would have to delete an ignored file: nothing was changed
        assert "git ignores" in str(exc)
        assert picture(ws) == changed
        return
    now = picture(ws)
    assert {k: v for k, v in now.items() if not k.startswith("ignored:")} == expected
    assert {k: v for k, v in now.items() if k.startswith("ignored:")} == {
        k: v for k, v in changed.items() if k.startswith("ignored:")
    }  # ignored files are not the checkpoint's business
    assert user_state(ws) == users
    undo = checkpoints.find(ws)  # the state before the rollback, newest
    checkpoints.rollback(ws, undo)
    assert {k: v for k, v in picture(ws).items() if not k.startswith("ignored:")} == {
        k: v for k, v in changed.items() if not k.startswith("ignored:")
    }
    assert user_state(ws) == users


@SETTINGS
@given(before=workspace_trees, after=workspace_trees)
def test_copy_rollback_restores_a_folder_outside_git(
    scratch: Path, before: dict[str, Any], after: dict[str, Any]
) -> None:
    ws = Path(tempfile.mkdtemp(dir=scratch))
    plant(ws, before)
    expected = picture(ws)
    first = checkpoints.create(ws, "gen")
    assert first.kind == "copy"
    for entry in list(ws.iterdir()):
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    plant(ws, after)
    changed = picture(ws)
    assert checkpoints.diff(ws, first) == [] or changed != expected
    checkpoints.rollback(ws, first)
    assert picture(ws) == expected
    checkpoints.rollback(ws, checkpoints.find(ws))
    assert picture(ws) == changed


@given(rel=_paths, held=st.sets(_paths, max_size=4))
def test_touches_is_equal_above_or_below(rel: str, held: set[str]) -> None:
    """A change to rel reaches a held path exactly when one of the two contains the other."""
    parts = PurePosixPath(rel).parts
    expected = any(
        parts[: len(h)] == h or h[: len(parts)] == parts
        for h in (PurePosixPath(x).parts for x in held)
    )
    assert checkpoints.touches(rel, held) == expected


@SETTINGS
@given(before=workspace_trees, after=workspace_trees, data=st.data())
def test_a_rollback_leaves_held_paths_alone_and_no_checkpoint_holds_a_placeholder(
    scratch: Path, before: dict[str, Any], after: dict[str, Any], data: st.DataObject
) -> None:
    ws = Path(tempfile.mkdtemp(dir=scratch))
    plant(ws, before)
    expected = _plain(picture(ws))
    first = checkpoints.create(ws, "gen")
    for entry in list(ws.iterdir()):
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    plant(ws, after)
    changed = _plain(picture(ws))
    mounted = data.draw(st.sets(st.sampled_from(sorted(changed)), max_size=2)) if changed else set()
    made = data.draw(st.sets(st.sampled_from(sorted(mounted)))) if mounted else set()
    held = checkpoints.Held(frozenset(made), frozenset(mounted))

    saved, left = checkpoints.rollback(ws, first, held)
    now = _plain(picture(ws))

    def free(view: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in view.items() if not checkpoints.touches(k, mounted)}

    assert free(now) == free(expected)  # the rest is the checkpoint's
    assert all(now.get(p) == changed[p] for p in changed if checkpoints.touches(p, mounted))
    differing = {p for p in expected.keys() | changed.keys() if expected.get(p) != changed.get(p)}
    # named: the user's changes it did not make (coi's placeholders are not the user's)
    named = {p for p in differing if checkpoints.touches(p, mounted)}
    assert {p for p in named if not checkpoints.touches(p, made)} <= set(left)
    assert all(checkpoints.touches(p, mounted) for p in left)
    copy = checkpoints._copy_dir(ws, saved.id)
    assert not [m for m in made if os.path.lexists(copy / m)], "a placeholder was saved"


def _plain(view: dict[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("ignored:"): v for k, v in view.items()}

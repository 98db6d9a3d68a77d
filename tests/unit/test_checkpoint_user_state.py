"""Must-show 2 of issue 15, with a user state that is not empty: a stash entry, a staged
change the index holds apart from HEAD, a second branch, reflogs. Checkpoints (create,
diff, rollback and its undo, prune) leave every one of them byte for byte as it was."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from coi.core import paths, slots
from coi.core.errors import UsageError
from coi.workspace import checkpoints


def git(ws: Path, *args: str, extra: dict[str, str] | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(ws.parent), **(extra or {})}
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    done = subprocess.run(["git", *ident, *args], cwd=ws, capture_output=True, text=True,
                          env=env, check=True)  # fmt: skip
    return done.stdout


def in_store(ws: Path) -> dict[str, str]:
    """git's environment to read coi's checkpoint store of ws (it borrows ws's objects)."""
    store = paths.coi_home() / "checkpoints" / slots.workspace_id(ws) / "git"
    return {"GIT_DIR": str(store), "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(ws / ".git/objects")}


def users(ws: Path) -> dict[str, bytes | str]:
    """Everything the user's git keeps: HEAD, the index bytes, refs, stash, every reflog."""
    dot = ws / ".git"
    state: dict[str, bytes | str] = {
        "HEAD": (dot / "HEAD").read_bytes(),
        "index": (dot / "index").read_bytes(),
        "refs": git(ws, "for-each-ref", "refs/heads", "refs/tags", "refs/stash"),
        "stash": git(ws, "stash", "list", "-p"),
        "staged": git(ws, "diff", "--cached"),
    }
    for log in sorted((dot / "logs").rglob("*")):
        if log.is_file():
            state[str(log.relative_to(dot))] = log.read_bytes()
    return state


def test_checkpoints_never_touch_head_index_branches_stash_or_reflogs(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "main")
    (ws / "a.txt").write_text("one\n")
    git(ws, "add", "a.txt")
    git(ws, "commit", "-qm", "one")
    git(ws, "branch", "side")
    (ws / "a.txt").write_text("stashed\n")
    git(ws, "stash", "-q")
    (ws / "a.txt").write_text("staged\n")
    git(ws, "add", "a.txt")
    (ws / "a.txt").write_text("worktree\n")
    (ws / "new.txt").write_text("untracked\n")
    before = users(ws)
    first = checkpoints.create(ws, "x", "m")
    (ws / "a.txt").write_text("agent\n")
    (ws / "new.txt").unlink()
    assert checkpoints.diff(ws, first)
    undo, _ = checkpoints.rollback(ws, first)
    assert (ws / "a.txt").read_text() == "worktree\n" and (ws / "new.txt").exists()
    assert users(ws) == before
    checkpoints.rollback(ws, undo)
    assert (ws / "a.txt").read_text() == "agent\n"
    checkpoints.prune(ws, 0)
    assert users(ws) == before
    # coi's refs and objects live in its own store: the repository holds none of them
    assert git(ws, "for-each-ref", "refs/coi") == ""
    assert not (ws / ".git" / "refs" / "coi").exists()


def test_a_placeholder_where_a_tracked_file_was_deleted_is_recorded_as_deleted(
    tmp_path: Path,
) -> None:
    """coi puts an empty stand-in where a protected file is missing while a session runs;
    when the user had deleted a tracked one, the checkpoint says deleted, not the index's
    old bytes and not the stand-in."""
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "-q", "-b", "main")
    (ws / ".mcp.json").write_text('{"servers": "mine"}\n')
    (ws / "a.txt").write_text("one\n")
    git(ws, "add", ".mcp.json", "a.txt")
    git(ws, "commit", "-qm", "one")
    (ws / ".mcp.json").unlink()
    (ws / ".mcp.json").write_text("{}\n")  # the stand-in
    (ws / ".vscode").mkdir()
    (ws / ".vscode" / "settings.json").write_text("{}\n")
    held = checkpoints.Held(frozenset({".mcp.json", ".vscode"}), frozenset({".mcp.json"}))
    made = checkpoints.create(ws, "during", "", held)
    listed = git(ws, "ls-tree", "-r", "--name-only", made.commit, extra=in_store(ws))
    listed = listed.split()
    assert listed == ["a.txt"]
    # seen without the hold (the session over), the stand-in is a file the checkpoint lacks
    assert ("A", ".mcp.json") in checkpoints.diff(ws, made)
    assert checkpoints.diff(ws, made, held) == []


def test_a_checkpoint_is_found_by_id_start_of_id_or_name(tmp_path: Path) -> None:
    ws = tmp_path / "plain"
    ws.mkdir()
    (ws / "f").write_text("1\n")
    old = checkpoints.create(ws, "first")
    newer = checkpoints.create(ws, "first")
    other = checkpoints.create(ws, "second")
    assert checkpoints.find(ws) == other
    assert checkpoints.find(ws, old.id) == old
    assert checkpoints.find(ws, "first") == newer  # a name: the newest of that name
    assert checkpoints.find(ws, other.id[:-3]) == other
    with pytest.raises(UsageError):
        checkpoints.find(ws, "third")

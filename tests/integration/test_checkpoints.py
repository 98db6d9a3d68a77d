"""A session that deletes and rewrites files is undone by `coi rollback` (the checkpoint
made before the session), and that rollback is undone in turn."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from coi.incus.adapter import Incus
from tests.integration.helpers import coi, own_prefix, user_config_path

AGENT = (
    "rm gone.txt sub/deep.txt && echo rewritten > keep.txt && chmod -x tool.sh "
    "&& ln -sfn keep.txt link && echo brand-new > new.txt"
)


def picture(root: Path) -> dict[str, tuple[str, ...]]:
    """Every file and link under root (not .git): bytes and mode, or the link's target."""
    seen: dict[str, tuple[str, ...]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            full = Path(folder, name)
            rel = str(full.relative_to(root))
            if full.is_symlink():
                seen[rel] = ("link", os.readlink(full))
            else:
                seen[rel] = (
                    "file",
                    full.read_bytes().hex(),
                    oct(stat.S_IMODE(full.stat().st_mode)),
                )
    return seen


def in_store(ws: Path) -> dict[str, str]:
    """git's environment to read coi's checkpoint store of ws (it borrows ws's objects)."""
    from coi.core import paths, slots

    store = paths.coi_home() / "checkpoints" / slots.workspace_id(ws) / "git"
    objects = str(ws / ".git" / "objects")
    return {**os.environ, "GIT_DIR": str(store), "GIT_ALTERNATE_OBJECT_DIRECTORIES": objects}


def plant(ws: Path) -> None:
    (ws / "sub").mkdir()
    (ws / "keep.txt").write_text("original\n")
    (ws / "gone.txt").write_text("deleted by the agent\n")
    (ws / "sub" / "deep.txt").write_bytes(os.urandom(3000))
    (ws / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (ws / "tool.sh").chmod(0o755)
    (ws / "link").symlink_to("sub/deep.txt")
    for path in [ws, *ws.rglob("*")]:
        os.chown(path, 1000, 1000, follow_symlinks=False)


@pytest.fixture
def user_config(incus: Incus, session_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = user_config_path()
    config.write_text(f'[defaults]\nimage = "{session_image}"\n[tool]\nname = "shell"\n')
    own_prefix(monkeypatch, "c")


@pytest.mark.parametrize("kind", ["git", "plain"])
def test_rollback_undoes_a_session_and_can_itself_be_undone(
    user_config: None, tmp_path: Path, kind: str
) -> None:
    ws = tmp_path / "project"
    ws.mkdir()
    plant(ws)
    if kind == "git":
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", f"safe.directory={ws}"]
        subprocess.run([*git, "init", "-q"], cwd=ws, check=True)
        subprocess.run([*git, "add", "keep.txt", "tool.sh"], cwd=ws, check=True)
        subprocess.run([*git, "commit", "-qm", "base"], cwd=ws, check=True)
        head = subprocess.run([*git, "rev-parse", "HEAD"], cwd=ws, capture_output=True).stdout
    before = picture(ws)
    done = coi("run", "--workspace", str(ws), "--", "sh", "-c", AGENT)
    assert done.returncode == 0, done.stderr
    after = picture(ws)
    assert after != before and "gone.txt" not in after
    rolled = coi("rollback", "--workspace", str(ws))
    assert rolled.returncode == 0, rolled.stderr
    restored = picture(ws)
    if kind == "git":  # git keeps the executable bit, not the rest of a mode
        assert {k: v[:2] for k, v in restored.items()} == {k: v[:2] for k, v in before.items()}
        assert os.access(ws / "tool.sh", os.X_OK)
        again = subprocess.run([*git, "rev-parse", "HEAD"], cwd=ws, capture_output=True).stdout
        assert again == head
    else:
        assert restored == before
    undo = [
        line.split()[0]
        for line in coi("checkpoint", "list", "--workspace", str(ws)).stdout.splitlines()[1:]
    ]
    assert undo[0].endswith("-before-rollback")
    assert coi("rollback", undo[0], "--workspace", str(ws)).returncode == 0
    back = picture(ws)
    if kind == "git":
        assert {k: v[:2] for k, v in back.items()} == {k: v[:2] for k, v in after.items()}
    else:
        assert back == after


@pytest.mark.skipif(os.geteuid() != 0, reason="the locked view is built as root")
@pytest.mark.parametrize("kind", ["git", "plain"])
def test_a_running_sessions_placeholders_and_mounts_are_left_alone(
    user_config: None, tmp_path: Path, kind: str
) -> None:
    """While a session's locked view stands, a checkpoint holds none of coi's placeholders
    and a rollback changes no path the view has mounted (replacing one on the host would
    detach its read-only mount inside the container); the rest is restored as usual."""
    import uuid

    from coi.boundary import protect, protect_host
    from coi.core import mountinfo
    from coi.workspace import checkpoints

    ws = tmp_path / "project"
    ws.mkdir()
    plant(ws)
    (ws / ".envrc").write_text("the user's own\n")
    if kind == "git":
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", f"safe.directory={ws}"]
        subprocess.run([*git, "init", "-q"], cwd=ws, check=True)
    before = picture(ws)
    assert coi("checkpoint", "create", "first", "--workspace", str(ws)).returncode == 0
    name = f"t-ckpt-{uuid.uuid4().hex[:6]}"
    protect_host.stage(name, ws, protect.DEFAULT_PATHS)
    try:
        made, mounted = protect_host.held(ws)
        assert ".mcp.json" in made and ".envrc" in mounted and ".envrc" not in made
        assert (ws / ".mcp.json").is_file()  # a placeholder, there while the view stands
        during = coi("checkpoint", "create", "during", "--workspace", str(ws))
        assert during.returncode == 0, during.stderr
        held_in = checkpoints.find(ws)  # the newest: during
        if kind == "git":
            listed = subprocess.run(
                [*git, "ls-tree", "-r", "--name-only", held_in.commit],
                cwd=ws, capture_output=True, text=True, check=True, env=in_store(ws),
            ).stdout.split()  # fmt: skip
        else:
            files = checkpoints._copy_dir(ws, held_in.id)
            listed = [str(p.relative_to(files)) for p in files.rglob("*")]
        assert ".envrc" in listed and "keep.txt" in listed
        assert not made & set(listed), "a placeholder went into the checkpoint"

        (ws / "keep.txt").write_text("changed meanwhile\n")
        (ws / "gone.txt").unlink()
        (ws / ".envrc").write_text("changed on the host\n")  # same file: still the mount
        rolled = coi("rollback", "first", "--workspace", str(ws))
        assert rolled.returncode == 0, rolled.stderr
        assert ".envrc" in rolled.stderr and "running session" in rolled.stderr
        assert (ws / "keep.txt").read_text() == "original\n" and (ws / "gone.txt").is_file()
        assert (ws / ".envrc").read_text() == "changed on the host\n"
        live = mountinfo.points()
        for rel in (".envrc", ".mcp.json", ".claude/settings.json"):
            assert str(protect.view_path(name) / rel) in live, f"{rel} lost its mount"
    finally:
        protect_host.release(name)
    assert not (ws / ".mcp.json").exists()  # placeholders go with the view
    again = coi("rollback", "first", "--workspace", str(ws))
    assert again.returncode == 0 and "running session" not in again.stderr, again.stderr
    assert picture(ws) == before


def test_a_session_and_a_rollback_leave_nothing_of_roots_in_the_repository(
    user_config: None, tmp_path: Path
) -> None:
    """Issue 26: after a session (its automatic checkpoint) and a rollback, in a repository
    owned by uid 1000, files under .git were root's (objects of mode 444 the owner's git
    could not replace). Checkpoints now write nothing into .git, and restore as the owner."""
    ws = tmp_path / "project"
    ws.mkdir()
    plant(ws)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", f"safe.directory={ws}"]
    subprocess.run([*git, "init", "-q"], cwd=ws, check=True)
    subprocess.run([*git, "add", "keep.txt"], cwd=ws, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=ws, check=True)
    for path in [ws, *ws.rglob("*")]:
        os.chown(path, 1000, 1000, follow_symlinks=False)
    done = coi("run", "--workspace", str(ws), "--", "sh", "-c", "echo new > fresh.txt")
    assert done.returncode == 0, done.stderr
    rolled = coi("rollback", "--workspace", str(ws))
    assert rolled.returncode == 0, rolled.stderr
    assert not (ws / "fresh.txt").exists()
    roots = [str(p.relative_to(ws)) for p in [ws, *ws.rglob("*")] if p.lstat().st_uid != 1000]
    assert roots == [], f"not the owner's after a session and a rollback: {roots[:10]}"

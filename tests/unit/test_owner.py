"""coi as root in a user's repository: what it writes there goes back to the user, never
through a link to a file outside."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coi.workspace import checkpoints, owner

USER = (1000, 1000)
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="handing back needs root")


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A folder uid 1000 can reach (the test's tmp_path lies under root's 0700 folder)."""
    base = Path(tempfile.mkdtemp(prefix="coi-owner-", dir="/var/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_root_owned_entries_go_to_the_owner_and_links_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("root's\n")
    top = tmp_path / "ws"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f").write_text("x")
    (top / "a" / "link").symlink_to(outside)
    (top / "via").symlink_to(tmp_path)
    owner.hand_back(top, ["a", "via/outside"], USER)
    assert (top / "a").stat().st_uid == 1000
    assert (top / "a" / "b" / "f").stat().st_uid == 1000
    assert os.lstat(top / "a" / "link").st_uid == 1000  # the link itself, not its target
    assert outside.stat().st_uid == 0


def test_a_root_checkpoint_leaves_the_owner_able_to_commit(reachable: Path) -> None:
    ws = reachable / "ws"
    ws.mkdir()
    run = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*run, "init", "-q"], cwd=ws, check=True)
    for i in range(200):  # enough blobs that every objects/xx folder root makes is hit
        (ws / f"u{i}").write_text(f"{i}\n")
    subprocess.run(["chown", "-R", "1000:1000", str(ws)], check=True)
    checkpoints.create(ws, "x")
    # loose objects may stay root's (read-only, removable by the folder's owner); no folder
    # and no ref may
    find = ["find", str(ws), "-uid", "0", "(", "-type", "d", "-o", "-path", "*/refs/*", ")"]
    assert subprocess.run(find, capture_output=True, text=True).stdout == ""
    as_user = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "env", "HOME=/"]
    added = subprocess.run([*as_user, *run, "add", "."], cwd=ws, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr


def test_files_a_root_rollback_writes_belong_to_the_owner(reachable: Path) -> None:
    ws = reachable / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "f").write_text("kept\n")
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run(["chown", "-R", "1000:1000", str(ws)], check=True)
    saved = checkpoints.create(ws, "x")
    shutil.rmtree(ws / "sub")
    checkpoints.rollback(ws, saved)
    assert (ws / "sub" / "f").read_text() == "kept\n"
    assert (ws / "sub").stat().st_uid == 1000 and (ws / "sub" / "f").stat().st_uid == 1000

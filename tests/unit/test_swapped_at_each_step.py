"""Every host-side operation on workspace content, with the workspace's folders swapped for
links to a victim folder at each of its steps in turn: the victim stays untouched.

A container watching the workspace through inotify can swap a folder for a link between
any two of coi's system calls. Here the swap is played deterministically: each operation
is run once to count the file system calls it makes, then once per call k, with every
folder of the workspace renamed away and replaced by a link to the victim just before
call k. Whatever the operation then does (finishes, or fails with an error), the victim
folder, whose files carry the names the workspace's do, must be byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coi.boundary import protect_host, setid
from coi.workspace import checkpoints, gitlinks, owner

CALLS = ("open", "mkdir", "rename", "unlink", "rmdir", "symlink", "scandir", "stat", "lstat",
         "readlink", "chmod", "fchmod", "utime", "chown", "lchown", "listdir")  # fmt: skip
REAL = {name: getattr(os, name) for name in CALLS}
NAMES = ("f", "g", "n0", "n1")


def victim_of(tmp: Path) -> Path:
    folder = tmp / "victim"
    folder.mkdir()
    for name in NAMES:
        (folder / name).write_text(f"victim {name}\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "f").write_text("victim sub/f\n")
    return folder


def picture(folder: Path) -> dict[str, tuple[int, bytes | str]]:
    seen: dict[str, tuple[int, bytes | str]] = {}
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(root, name)
            info = path.lstat()
            body: bytes | str = os.readlink(path) if path.is_symlink() else b""
            if path.is_file() and not path.is_symlink():
                body = path.read_bytes()
            seen[str(path.relative_to(folder))] = (info.st_mode, body)
    return seen


def swap(ws: Path, victim: Path) -> None:
    """Every folder under ws (not ws) renamed away and replaced by a link to the victim."""
    folders = []
    for root, dirs, _files in os.walk(ws):
        folders += [Path(root, d) for d in dirs if not Path(root, d).is_symlink()]
    for folder in sorted(folders, key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            REAL["rename"](folder, folder.with_name(folder.name + ".moved"))
            REAL["symlink"](victim, folder)


class Stepper:
    """Counts the os calls an operation makes; swaps the workspace at call `at`."""

    def __init__(self, ws: Path, victim: Path, at: int | None) -> None:
        self.ws, self.victim, self.at, self.count = ws, victim, at, 0
        self.busy = False

    @contextlib.contextmanager
    def on(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        with monkeypatch.context() as patch:
            for name in CALLS:
                patch.setattr(os, name, self._wrap(REAL[name]))
            yield

    def _wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.busy:  # the swap's own calls
                return real(*args, **kwargs)
            self.count += 1
            if self.count - 1 == self.at:
                self.busy = True
                try:
                    swap(self.ws, self.victim)
                finally:
                    self.busy = False
            return real(*args, **kwargs)

        return call


def git(repo: Path, *argv: str) -> None:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "-C", str(repo), *ident, *argv], check=True, env=env,
                   capture_output=True, timeout=60)  # fmt: skip


def plain_tree(ws: Path) -> None:
    (ws / "sub" / "deep").mkdir(parents=True)
    for name in NAMES:
        (ws / name).write_text(f"ws {name}\n")
        (ws / "sub" / name).write_text(f"ws sub/{name}\n")
        (ws / "sub" / "deep" / name).write_text(f"ws deep/{name}\n")


def git_tree(ws: Path) -> None:
    plain_tree(ws)
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "commit", "-qm", "base")


def rollback_copy(ws: Path) -> Callable[[], object]:
    plain_tree(ws)
    made = checkpoints.create(ws, "base")
    for name in NAMES:
        (ws / "sub" / name).write_text("changed\n")
        (ws / "sub" / "deep" / f"{name}.new").write_text("new\n")
    return lambda: checkpoints.rollback(ws, made)


def rollback_git(ws: Path) -> Callable[[], object]:
    git_tree(ws)
    made = checkpoints.create(ws, "base")
    for name in NAMES:
        (ws / "sub" / name).write_text("changed\n")
        (ws / "sub" / "deep" / f"{name}.new").write_text("new\n")
    (ws / "sub" / "deep" / "f").unlink()
    return lambda: checkpoints.rollback(ws, made)


def create_copy(ws: Path) -> Callable[[], object]:
    plain_tree(ws)
    return lambda: checkpoints.create(ws, "x")


def create_git(ws: Path) -> Callable[[], object]:
    git_tree(ws)
    (ws / "sub" / "f").write_text("changed\n")
    return lambda: checkpoints.create(ws, "x")


def diff_copy(ws: Path) -> Callable[[], object]:
    plain_tree(ws)
    made = checkpoints.create(ws, "base")
    (ws / "sub" / "f").write_text("changed\n")
    return lambda: checkpoints.diff(ws, made)


def placeholders(ws: Path) -> Callable[[], object]:
    plain_tree(ws)
    (ws / "sub" / "deep" / "empty").mkdir()
    (ws / "sub" / "f").write_text("")
    made = [["sub/deep/empty", "dir"], ["sub/f", "file"], ["sub/deep/g", "file"]]
    return lambda: protect_host.remove_placeholders(ws, made)


def setid_sweep(ws: Path) -> Callable[[], object]:
    plain_tree(ws)
    os.chmod(ws / "sub" / "deep" / "f", 0o4755)
    return lambda: setid.clear([ws])


def hand_back(ws: Path) -> Callable[[], object]:
    plain_tree(ws)
    return lambda: owner.hand_back(ws, ["sub", "sub/deep"], (1234, 1234))


def sweep_gitlinks(ws: Path) -> Callable[[], object]:
    git_tree(ws)
    return lambda: gitlinks.neutralize(ws, lambda line: None)


OPERATIONS = {
    "rollback-copy": rollback_copy, "rollback-git": rollback_git, "create-copy": create_copy,
    "create-git": create_git, "diff-copy": diff_copy, "placeholders": placeholders,
    "setid-sweep": setid_sweep, "hand-back": hand_back, "gitlinks-sweep": sweep_gitlinks,
}  # fmt: skip


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_swap_at_any_step_leaves_the_victim_untouched(
    operation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make = OPERATIONS[operation]
    counted = Stepper(tmp_path, tmp_path, None)
    ws = tmp_path / "counted"
    ws.mkdir()
    run = make(ws)
    with counted.on(monkeypatch):
        run()
    assert counted.count > 0
    for at in range(counted.count):
        case = tmp_path / f"case{at}"
        case.mkdir()
        victim = victim_of(case)
        before = picture(victim)
        ws = case / "ws"
        ws.mkdir()
        run = make(ws)
        stepper = Stepper(ws, victim, at)
        with stepper.on(monkeypatch), contextlib.suppress(Exception):
            run()
        assert picture(victim) == before, f"{operation}: a swap before call {at} reached it"
    # and nothing of the victim was read into a checkpoint (a later rollback would write it)
    kept = picture(tmp_path / "home")
    assert not any(isinstance(body, bytes) and b"victim" in body for _, body in kept.values())

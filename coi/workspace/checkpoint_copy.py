"""Checkpoints of a folder that is no git repository: copies in coi's store.

A copy lives in COI_HOME/checkpoints/<workspace id>/<id>/files beside its checkpoint.json:
a reflink of every file where the filesystem shares extents (nearly free), else a plain
copy bounded by a cap. Copying in and out goes through directory descriptors without
following links (coi/core/safefs.py); every function here runs as the workspace's owner
(coi/workspace/checkpoints.py sees to that).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from coi.core import safefs
from coi.core.errors import CoiError
from coi.workspace.checkpoint_types import STORE_GIT, At, Checkpoint, Taken, opened_dir, touches


class _TooBig(Exception):
    """A plain copy went past the cap."""


def create(at: At, ident: str, message: str, now: float, cap: int,
                 skip: frozenset[str]) -> Checkpoint:  # fmt: skip
    folder = at.store / ident
    work = Path(tempfile.mkdtemp(prefix=f".{ident}.", dir=at.store))
    try:
        (work / "files").mkdir(mode=0o700)
        with opened_dir(at.ws) as src, opened_dir(work / "files") as dst:
            try:
                safefs.copy_tree(src, dst, skip, budget=[cap])
            except safefs.OverBudget:
                raise CoiError(
                    f"{at.ws} holds more than the checkpoint cap of "
                    f"{cap / 2**20:.0f} MiB on a filesystem without reflinks: raise "
                    "[checkpoints] max_size, or make the workspace a git repository"
                ) from None
        meta = {"id": ident, "created": now, "message": message}
        (work / "checkpoint.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.rename(work, folder)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise Taken() from None
            raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Checkpoint(ident, now, message, "copy")


def tree_size(root: Path, skip: frozenset[str] = frozenset(), stop: int | None = None) -> int:
    """Bytes of the regular files under root (links not followed, `skip` left out); the
    count ends early once past `stop` (a home folder need not be walked to the end)."""
    total = 0
    with opened_dir(root) as fd:
        for _rel, st in safefs.walk(fd, skip):
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
            if stop is not None and total > stop:
                break
    return total


def list_all(at: At) -> list[Checkpoint]:
    found = []
    for entry in at.store.iterdir():
        if entry.name.startswith(".") or entry.name == STORE_GIT:  # being made or removed
            continue
        try:
            meta = json.loads((entry / "checkpoint.json").read_text())
        except (OSError, ValueError):
            continue
        found.append(Checkpoint(meta["id"], meta["created"], meta.get("message", ""), "copy"))
    return found


def changes(old: int, new: int, skip: frozenset[str]) -> list[tuple[str, str]]:
    before, after = dict(safefs.walk(old, skip)), dict(safefs.walk(new, skip))
    files_before = {p for p, st in before.items() if not stat.S_ISDIR(st.st_mode)}
    files_after = {p for p, st in after.items() if not stat.S_ISDIR(st.st_mode)}
    changes = [("D", p) for p in files_before - files_after]  # a folder now, or gone
    changes += [("A", p) for p in files_after - files_before]
    both = files_before & files_after
    changes += [("M", p) for p in both if _differs(old, new, p, before[p], after[p])]
    return sorted(changes, key=lambda p: p[1])


def _differs(old: int, new: int, rel: str, a: os.stat_result, b: os.stat_result) -> bool:
    if a.st_mode != b.st_mode:
        return True
    try:
        if stat.S_ISLNK(a.st_mode):
            return _readlink(old, rel) != _readlink(new, rel)
        if a.st_size != b.st_size:
            return True
        return not _same_content(old, new, rel)
    except (OSError, ValueError):
        return True


def _readlink(root: int, rel: str) -> str:
    parent, leaf = safefs.split(rel)
    with safefs.opened(root, parent, os.O_RDONLY | os.O_DIRECTORY) as pfd:
        return os.readlink(leaf, dir_fd=pfd)


def _same_content(old: int, new: int, rel: str) -> bool:
    flags = os.O_RDONLY | os.O_NONBLOCK
    with safefs.opened(old, rel, flags) as a, safefs.opened(new, rel, flags) as b:
        if not (stat.S_ISREG(os.fstat(a).st_mode) and stat.S_ISREG(os.fstat(b).st_mode)):
            return False
        while True:
            left, right = os.read(a, 1 << 20), os.read(b, 1 << 20)
            if left != right:
                return False
            if not left:
                return True


def restore(at: At, ident: str, out: frozenset[str], mounted: frozenset[str]) -> list[str]:
    """Make the workspace hold exactly the saved copy's files, but for the mounted paths
    (the changes touching them are returned, not made)."""
    skip = out | mounted
    with opened_dir(at.store / ident / "files") as saved, opened_dir(at.ws) as ws:
        keep = dict(safefs.walk(saved))
        # what stays undone (only while a session holds paths: the comparison reads files)
        undone = changes(saved, ws, out) if mounted else []
        left = [p for _, p in undone if touches(p, mounted)]
        present = [(rel, st) for rel, st in safefs.walk(ws) if not touches(rel, skip)]
        for rel, st in sorted(present, key=lambda p: -p[0].count("/")):
            if (
                not stat.S_ISDIR(st.st_mode)
                or rel not in keep
                or not stat.S_ISDIR(keep[rel].st_mode)
            ):
                with contextlib.suppress(OSError, ValueError):
                    safefs.remove(ws, rel)  # every file and link comes back from the copy
        safefs.copy_tree(saved, ws, skip)
    return left

"""Workspace checkpoints: record the workspace's files cheaply, list, diff, roll back, prune.

In a git workspace (the workspace is the top of a work tree) a checkpoint is a commit of
the whole working tree, tracked and untracked files alike (ignored ones excluded), made
with a private index. Elsewhere a checkpoint is a copy (a reflink where the filesystem
has them, else a plain copy bounded by a size cap). A rollback first checkpoints the
current state, so it can itself be undone.

Nothing here trusts the workspace, which a container writes to at the same time:
- Checkpoints live in a store under COI_HOME, never in the workspace: git ones in a bare
  repository of coi's own that borrows the workspace's objects (read only, as an
  alternate), so no ref, reflog or object write of coi's can be sent elsewhere by a link
  planted in `.git`, and the workspace repository's config, hooks and attributes drivers
  are never read.
- Every step that touches the workspace runs as its owner (coi/core/dropped.py: no
  groups, no capabilities), and every file it writes or removes there is reached from a
  directory descriptor without following links (coi/core/safefs.py).

While a session runs, coi holds some workspace paths: the empty placeholders it made for
missing protected paths (never the user's files: no checkpoint holds them) and every path
the session's locked view has mounted (a rollback leaves them alone and names them:
replacing one on the host would detach its read-only mount inside the container). A
rollback runs with the workspace's containers frozen (coi/commands/checkpoint.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from coi.core import dropped, paths, proc, slots
from coi.core.errors import CoiError, UsageError
from coi.workspace import checkpoint_copy, checkpoint_git, owner
from coi.workspace.checkpoint_copy import tree_size
from coi.workspace.checkpoint_types import (
    DEFAULT_MAX_COPY,
    IDENTITY,
    NOTHING_HELD,
    REFS,
    SAFE,
    At,
    Checkpoint,
    Held,
    Taken,
    clean_message,
    new_id,
    opened_dir,
    touches,
)  # fmt: skip

T = TypeVar("T")

__all__ = [
    "AUTO", "IDENTITY", "NOTHING_HELD", "REFS", "SAFE", "Checkpoint", "Held", "all_of",
    "before_session", "clean_message", "create", "diff", "find", "git", "inner_coi_home",
    "is_git", "left_out", "new_id", "prune", "rollback", "touches", "tree_size",
]  # fmt: skip


def is_git(workspace: Path) -> bool:
    """True when the workspace is the top folder of a git work tree."""
    try:
        top = git(workspace, "rev-parse", "--show-toplevel").decode().strip()
    except CoiError:
        return False
    return Path(top).resolve() == workspace.resolve()


def git(workspace: Path, *args: str, env: Mapping[str, str] | None = None,
        input: bytes | None = None) -> bytes:  # fmt: skip
    """git in the workspace, without hooks or fsmonitor; its stdout."""
    # coi may run as another user than the workspace's owner (root, say): git would refuse
    # the repository as "dubious ownership"; hooks and fsmonitor stay off whatever it says.
    trust = ("-c", f"safe.directory={workspace.resolve()}")
    argv = ["git", *SAFE, *trust, *args]
    return proc.run_bytes(argv, cwd=workspace, env=env, input=input, timeout=600)


def inner_coi_home(workspace: Path) -> str | None:
    """COI_HOME relative to the workspace when it lies inside it (a workspace that is the
    home folder): checkpoints never hold coi's own files (saved sessions, credentials)."""
    home, ws = paths.coi_home().resolve(), workspace.resolve()
    return str(home.relative_to(ws)) if home.is_relative_to(ws) and home != ws else None


def left_out(workspace: Path, held: Held) -> frozenset[str]:
    """What no checkpoint holds (relative paths): COI_HOME when inside the workspace, and
    the placeholders coi made for a running session."""
    inner = inner_coi_home(workspace)
    return held.made | {inner} if inner else held.made


def _store(workspace: Path) -> Path:
    return paths.coi_home() / "checkpoints" / slots.workspace_id(workspace)


def _copy_dir(workspace: Path, ident: str) -> Path:
    """The files of a copy checkpoint."""
    return _store(workspace) / ident / "files"


def _as_owner(workspace: Path, fn: Callable[..., T], *args: object) -> T:
    """fn(at, *args) as the workspace's owner, with the workspace and its store reachable."""
    store = _store(workspace)
    who = dropped.needed(workspace)
    paths.ensure(store)
    if who is not None and os.lstat(store).st_uid != who[0]:
        owner.hand_back(store.parent, [store.name], who)  # made by root's coi before
    return dropped.call(who, fn, [workspace, store], At(workspace, store), *args)


def create(workspace: Path, name: str | None = None, message: str = "",
           held: Held = NOTHING_HELD, **opts: int) -> Checkpoint:  # fmt: skip
    """Record the workspace's current files (coi's placeholders left out) as a new checkpoint."""
    now = time.time()
    message = clean_message(message)
    cap = opts.get("max_size", DEFAULT_MAX_COPY)
    new_id(name, now)  # a bad name is the user's mistake: said before any work
    return _as_owner(workspace, _create, name, message, now, cap, left_out(workspace, held))


def _create(at: At, name: str | None, message: str, now: float, cap: int,
            skip: frozenset[str]) -> Checkpoint:  # fmt: skip
    git_kind = checkpoint_git.is_git_at(at)
    for attempt in range(8):  # an id taken meanwhile: the next millisecond's
        ident = new_id(name, now + attempt / 1000)
        try:
            if git_kind:
                return checkpoint_git.create(at, ident, message, now, skip)
            return checkpoint_copy.create(at, ident, message, now, cap, skip)
        except Taken:
            continue
    raise CoiError(f"could not find a free checkpoint id for {at.ws}: try again")


def all_of(workspace: Path) -> list[Checkpoint]:
    """The workspace's checkpoints, newest first."""
    return _as_owner(workspace, _all_of)


def _all_of(at: At) -> list[Checkpoint]:
    found = (
        checkpoint_git.list_all(at)
        if checkpoint_git.is_git_at(at)
        else checkpoint_copy.list_all(at)
    )
    return sorted(found, key=lambda c: c.id, reverse=True)


def find(workspace: Path, ident: str | None = None) -> Checkpoint:
    """A checkpoint by id, a unique start of one, or its name (the newest of that name);
    the newest of all without one."""
    found = all_of(workspace)
    if not found:
        raise UsageError(f"{workspace} has no checkpoint: make one with `coi checkpoint`")
    if ident is None:
        return found[0]
    matches = (
        [c for c in found if c.id == ident]
        or [c for c in found if c.id.startswith(ident)]
        or [c for c in found if c.id.endswith(f"Z-{ident}")][:1]  # newest first
    )
    if len(matches) != 1:
        what = "no" if not matches else "more than one"
        raise UsageError(f"{what} checkpoint matches {ident!r}: see `coi checkpoint list`")
    return matches[0]


def diff(
    workspace: Path, checkpoint: Checkpoint, held: Held = NOTHING_HELD
) -> list[tuple[str, str]]:
    """What changed since the checkpoint: (A|M|D|T, path) pairs, sorted by path."""
    return _as_owner(workspace, _diff, checkpoint, left_out(workspace, held))


def _diff(at: At, checkpoint: Checkpoint, skip: frozenset[str]) -> list[tuple[str, str]]:
    if checkpoint.kind == "git":
        now = checkpoint_git.tree_now(at, skip)
        return checkpoint_git.changes(at, f"{checkpoint.commit}^{{tree}}", now)
    with opened_dir(at.store / checkpoint.id / "files") as old, opened_dir(at.ws) as new:
        return checkpoint_copy.changes(old, new, skip)


def rollback(workspace: Path, checkpoint: Checkpoint, held: Held = NOTHING_HELD,
             **opts: int) -> tuple[Checkpoint, list[str]]:  # fmt: skip
    """Make the workspace's files those of the checkpoint, after checkpointing them as they
    are now. Returns that checkpoint (rolling back to it undoes this rollback) and the
    changes left undone because they touch a held path. Freeze the workspace's containers
    first (the caller does): a rollback must not race the agent."""
    why = f"before rolling back to {checkpoint.id}"
    cap = opts.get("max_size", DEFAULT_MAX_COPY)
    out = left_out(workspace, held)
    return _as_owner(workspace, _rollback, checkpoint, why, cap, out, held.mounted)


def _rollback(at: At, checkpoint: Checkpoint, why: str, cap: int, out: frozenset[str],
              mounted: frozenset[str]) -> tuple[Checkpoint, list[str]]:  # fmt: skip
    saved = _create(at, "before-rollback", why, time.time(), cap, out)
    if checkpoint.kind == "git":
        old, new = f"{saved.commit}^{{tree}}", f"{checkpoint.commit}^{{tree}}"
        return saved, checkpoint_git.restore(at, old, new, mounted)
    return saved, checkpoint_copy.restore(at, checkpoint.id, out, mounted)


def prune(workspace: Path, keep: int, named: str | None = None) -> list[Checkpoint]:
    """Delete all but the newest `keep` checkpoints (of those with that name, when given);
    returns the deleted ones."""
    if keep < 0:
        raise UsageError("--keep must be 0 or more")
    return _as_owner(workspace, _prune, keep, named)


def _prune(at: At, keep: int, named: str | None) -> list[Checkpoint]:
    found = [c for c in _all_of(at) if named is None or c.id.endswith(f"-{named}")]
    doomed = found[keep:]
    for checkpoint in doomed:
        if checkpoint.kind == "git":
            checkpoint_git.store_git(at, "update-ref", "-d", REFS + checkpoint.id)
        else:
            # parallel sessions of one workspace prune together: the one whose rename
            # wins removes it, out of the list's sight
            folder = at.store / checkpoint.id
            doomed_dir = folder.with_name(f".gone-{checkpoint.id}-{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(folder, doomed_dir)
                shutil.rmtree(doomed_dir)
    return doomed


AUTO = "session"


def before_session(workspace: Path, session_id: str, keep: int, max_size: int,
                   held: Held = NOTHING_HELD) -> Checkpoint:  # fmt: skip
    """The checkpoint a session starts with; the oldest automatic ones beyond `keep` go (in
    the same step as the owner: one child, one look at the repository, on every start)."""
    if keep < 0:
        raise UsageError("--keep must be 0 or more")
    why = f"before session {session_id}"
    out = left_out(workspace, held)
    return _as_owner(workspace, _before_session, why, time.time(), max_size, out, keep)


def _before_session(at: At, why: str, now: float, cap: int, skip: frozenset[str],
                    keep: int) -> Checkpoint:  # fmt: skip
    made = _create(at, AUTO, why, now, cap, skip)
    _prune(at, keep, AUTO)
    return made

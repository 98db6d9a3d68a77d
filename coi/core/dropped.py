"""Run host-side work on a user's tree as that user: least privilege for root's coi.

coi run as root (the tests, a root user) checkpoints, rolls back, sweeps and restores
inside workspaces owned by other users, which a container writes to at the same time.
`call` runs such work in a forked child that has become the tree's owner first: its uid
and gid, no supplementary groups, no capabilities (setresuid away from root clears them),
not dumpable. A mistake there reaches at most what the owner could already touch.
The folders it works in stay reachable at their own paths, whatever lies above them.

The child's answer comes back pickled, but only through an unpickler that knows the
plain data types and the classes named in ALLOWED; an exception comes back as coi's own
error class with its message (CoiError when it is none of coi's).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import pickle
import pwd
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from coi.core import errors

T = TypeVar("T")
CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x00020000, 4096, 16384, 1 << 18
Owner = tuple[int, int]
ALLOWED = {
    ("coi.workspace.checkpoint_types", "Checkpoint"),
    ("coi.workspace.worktree", "Worktree"),
    ("pathlib", "PosixPath"),
    ("builtins", "frozenset"),
    ("builtins", "set"),
}
_ERRORS = {cls.__name__: cls for cls in (
    errors.CoiError, errors.UsageError, errors.ConfigError, errors.Interrupted)}  # fmt: skip


def owner_of(tree: Path) -> Owner:
    """(uid, gid) of the folder itself (its lstat: a link is not followed)."""
    info = os.lstat(tree)
    return info.st_uid, info.st_gid


def needed(tree: Path) -> Owner | None:
    """The owner to become for work on tree; None when this process is that owner already,
    or is not root (it cannot become anyone, and has only its own rights), or root owns it."""
    if os.geteuid() != 0:
        return None
    who = owner_of(tree)
    return None if who[0] == 0 else who


def home_of(uid: int) -> str:
    """The user's home folder, or /nonexistent."""
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return "/nonexistent"


def call(who: Owner | None, fn: Callable[..., T], places: Sequence[Path], *args: Any) -> T:
    """fn(*args) as `who` in a forked child (None: here, as this process).

    places are the folders fn works in, each reachable in the child by its own path: the
    owner may have no way to one (a workspace under root's temporary folder, a store in
    root's COI_HOME), so in a mount namespace of the child's own every folder on the way
    that the owner cannot enter is covered by a tmpfs holding just the way to the places
    (coi/core/dropped.py `_reach`). git records real paths, and they stay real.
    """
    if who is None:
        return fn(*args)
    for path in places:  # said here, as the caller would say it
        if not path.is_dir():
            raise errors.CoiError(f"{path} is not a folder")
    read, write = os.pipe()
    try:
        pid = os.fork()
    except BaseException:
        os.close(read)
        os.close(write)
        raise
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(read)
        _child(write, who, fn, places, args)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise errors.CoiError(f"the step run as uid {who[0]} died (wait status {status})")
    kind, value = _Loads(io.BytesIO(data)).load()
    if kind == "ok":
        return value  # type: ignore[no-any-return]
    name, message = value
    raise _ERRORS.get(name, errors.CoiError)(message)


def _child(write: int, who: Owner, fn: Callable[..., Any], places: Sequence[Path],
           args: Any) -> None:  # fmt: skip
    code = 0
    try:
        _reach(places, who)
        become(who)
        result: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:  # every failure goes back as a message
        name = type(exc).__name__ if type(exc).__name__ in _ERRORS else "CoiError"
        if isinstance(exc, errors.UsageError) and name == "CoiError":
            name = "UsageError"
        message = str(exc) if isinstance(exc, errors.CoiError) else f"{type(exc).__name__}: {exc}"
        result = ("error", (name, message))
    try:
        data = pickle.dumps(result)
    except Exception as exc:
        data = pickle.dumps(("error", ("CoiError", f"internal error: {exc}")))
        code = 1
    try:
        with os.fdopen(write, "wb") as pipe:
            pipe.write(data)
    finally:
        os._exit(code)


def can_enter(info: os.stat_result, who: Owner) -> bool:
    """Whether who (no supplementary groups) may search a folder with this stat (pure)."""
    if who[0] == info.st_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if who[1] == info.st_gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def blocked(places: Sequence[Path], stat_of: Callable[[Path], os.stat_result],
            who: Owner) -> list[Path]:  # fmt: skip
    """The highest folders on the way to the places that who cannot enter (pure but for
    stat_of): covering each with a tmpfs opens the way."""
    found: list[Path] = []
    for place in places:
        for folder in [*reversed(place.parents), place][1:]:
            if any(folder == f or f in folder.parents for f in found):
                break
            if not can_enter(stat_of(folder), who):
                found.append(folder)
                break
    return found


def _reach(places: Sequence[Path], who: Owner) -> None:
    """In a mount namespace of this process's own (nothing propagates back): every place
    reachable by who at its own path."""
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        raise errors.CoiError(f"unshare: {os.strerror(ctypes.get_errno())}")
    _mount(libc, None, "/", MS_REC | MS_PRIVATE)
    covers = blocked(places, os.stat, who)
    if not covers:
        return
    fds = {place: os.open(place, os.O_RDONLY | os.O_DIRECTORY) for place in places}
    try:
        for cover in covers:
            _mount(libc, "coi-reach", str(cover), 0, b"tmpfs", b"mode=0755")
        for place, fd in fds.items():
            if not any(c == place or c in place.parents for c in covers):
                continue  # reachable as it is
            place.mkdir(mode=0o755, parents=True, exist_ok=True)
            _mount(libc, f"/proc/self/fd/{fd}", str(place), MS_BIND)
    finally:
        for fd in fds.values():
            os.close(fd)


def _mount(libc: Any, source: str | None, target: str, flags: int, kind: bytes | None = None,
           data: bytes | None = None) -> None:  # fmt: skip
    src = source.encode() if source is not None else None
    if libc.mount(src, target.encode(), kind, ctypes.c_ulong(flags), data) != 0:
        raise errors.CoiError(f"mount {target}: {os.strerror(ctypes.get_errno())}")


def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def become(who: Owner) -> None:
    """This process becomes who for good: groups, gid, uid (capabilities go with root)."""
    os.setgroups([])
    os.setresgid(who[1], who[1], who[1])
    os.setresuid(who[0], who[0], who[0])
    if os.getuid() != who[0] or os.geteuid() != who[0]:
        raise errors.CoiError("could not drop root's rights")
    _libc().prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: the owner cannot ptrace this child
    os.environ["HOME"] = home_of(who[0])


class _Loads(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} may not come back from a child")

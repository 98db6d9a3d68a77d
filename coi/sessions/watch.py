"""Watch locks: a coi process marks each container it watches (a session, its finisher, a
pool filler) so no other coi reaps it; a container whose lock is free has nobody.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from coi.core import paths
from coi.core.errors import CoiError
from coi.core.labels import Mode
from coi.core.lock import LockBusy, file_lock

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI


_HELD: dict[str, ExitStack] = {}


_HELD_FD: dict[str, int] = {}


def hold(name: str, wait: float = 0.1) -> bool:
    """Mark a container as watched by this process until it exits, so no other coi
    process reaps it (taken before the container exists, so it is never unwatched).
    False when another coi process (an earlier attach, say) already watches it."""
    if name not in _HELD:
        stack = ExitStack()
        lock = paths.watch_lock(name)
        try:
            fd = stack.enter_context(file_lock(lock, timeout=wait, what=f"the watch of {name}"))
        except LockBusy:
            return False
        _HELD[name], _HELD_FD[name] = stack, fd
    return True


def hold_new(name: str) -> None:
    """hold() the name of a container about to be made. Its watch may still be held by
    the finisher of the slot's previous container, which deletes it, then exits: wait for
    that (bounded). Unwatched, the new container could be reaped as a stopped one by
    another coi before it starts."""
    if not hold(name, wait=30):
        raise CoiError(f"{name} is still held by another coi process: try again")


@contextmanager
def watching(name: str, incus: IncusAPI | None = None, mode: str | None = None) -> Iterator[None]:
    """Hold the container's watch; meanwhile an allowlist container's names are resolved
    again on schedule (mode, when known, spares reading the container's record)."""
    import threading

    hold(name)
    stop = threading.Event()
    if incus is not None and mode in (None, Mode.ALLOWLIST):
        from coi.network import enforce

        threading.Thread(target=enforce.watch, args=(incus, name, stop), daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def is_watched(name: str) -> bool:
    """True when a live coi process holds the watch lock of this container."""
    try:
        with file_lock(paths.watch_lock(name), timeout=0):
            return False
    except LockBusy:
        return True

"""Advisory file locks held across slot allocation and creation, and across builds."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coi.core.errors import CoiError


class LockBusy(CoiError):
    """Another coi process holds the lock and did not release it in time."""


@contextmanager
def file_lock(path: Path, *, timeout: float = 60.0, what: str = "") -> Iterator[int]:
    """Hold an exclusive flock on `path` (created if missing); wait at most `timeout`.
    Yields the descriptor: a child given it (pass_fds) holds the lock on after we exit."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    asked, got = time.monotonic(), None
    try:
        _acquire(fd, timeout, what or str(path))
        got = time.monotonic()
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the flock
        if got is not None and os.environ.get(LOG_ENV):
            _note(path, got - asked, time.monotonic() - got)


LOG_ENV = "COI_LOCK_LOG"  # a file: how long each lock was waited for and held (the bench)
POLL = 0.02  # a waiter sees a released lock within this (a longer backoff queued runs up)


def _note(path: Path, waited: float, held: float) -> None:
    line = f"{os.getpid()} {path.name} waited {waited:.3f} held {held:.3f}\n"
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _acquire(fd: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockBusy(
                    f"{what} is held by another coi process: wait for it or stop it"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, POLL)

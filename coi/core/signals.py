"""Signals during a session: SIGTERM and SIGHUP end it like Ctrl+C, and cleanup, once
begun, finishes whatever arrives."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from coi.core.errors import Interrupted

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(Interrupted):
    """SIGTERM or SIGHUP arrived; cleanup has run."""

    def __init__(self, signum: int) -> None:
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; cleaned up")


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextmanager
def raising() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Terminated (SIGINT raises KeyboardInterrupt)."""
    previous = {s: signal.signal(s, _raise) for s in HANDLED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def shielded() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP are held off so cleanup completes."""
    sigs = (signal.SIGINT, *HANDLED)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

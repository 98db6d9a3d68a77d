"""Signals during a session: SIGTERM and SIGHUP end it like Ctrl+C, and cleanup, once
begun, finishes whatever arrives.

A signal that coi was started with ignored stays ignored. A shell ignores SIGINT only
for a job it starts without job control (`coi run ... &` in a script) or when asked
(`trap '' INT`), and `nohup` ignores SIGHUP: each says "let this job outlive Ctrl+C or
the terminal", and coi keeps that promise, as Python (which then installs no
KeyboardInterrupt), shells and make do. A person at an interactive shell loses
nothing: job control starts every job, foreground or background, with the default
dispositions, and once `coi shell` is attached the terminal is raw, so Ctrl+C is a
byte for the tool in the container, never a signal to coi. A coi with SIGINT ignored
still ends, and cleans up, on SIGTERM (`kill PID`).
"""

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
    """Within the block, SIGTERM and SIGHUP raise Terminated (SIGINT raises
    KeyboardInterrupt); one that was ignored when the block began stays ignored."""
    wanted = [s for s in HANDLED if signal.getsignal(s) != signal.SIG_IGN]
    previous = {s: signal.signal(s, _raise) for s in wanted}
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

"""coi/core/signals.py in a child that sets its own dispositions first, so the result
does not depend on what the test runner inherited (nohup, `trap '' INT`, a script's
background job)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coi.core import signals

ROOT = str(Path(signals.__file__).resolve().parents[2])  # this checkout's coi, not another

CHILD = """
import os, signal, sys
from coi.core import signals
how, sig = sys.argv[1], signal.Signals[sys.argv[2]]
signal.signal(sig, signal.SIG_IGN if how == "ignored" else signal.SIG_DFL)
if sig == signal.SIGINT and how == "default":
    signal.signal(sig, signal.default_int_handler)  # what Python installs at start
try:
    with signals.raising():
        os.kill(os.getpid(), sig)
        print("ran to the end")
except signals.Terminated as exc:
    print("terminated", exc.exit_code)
except KeyboardInterrupt:
    print("interrupted")
print("after:", "ignored" if signal.getsignal(sig) == signal.SIG_IGN else "not ignored")
"""


def child(how: str, sig: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, how, sig],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_end_the_block_like_ctrl_c(sig: str, code: int) -> None:
    assert child("default", sig) == [f"terminated {code}", "after: not ignored"]


def test_sigint_raises_keyboard_interrupt() -> None:
    assert child("default", "SIGINT") == ["interrupted", "after: not ignored"]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_ignored_at_start_stays_ignored(sig: str) -> None:
    assert child("ignored", sig) == ["ran to the end", "after: ignored"]

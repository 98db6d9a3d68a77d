"""Fault injection for tests: make a named phase fail or receive a signal.

COI_FAULT=<phase> raises at that phase; COI_FAULT_SIGNAL=<SIG>@<phase> sends the
signal to this process there (SIGINT, SIGTERM, SIGHUP...). Unset in normal use.
"""

from __future__ import annotations

import os
import signal

from coi.core.errors import CoiError


class InjectedFault(CoiError):
    """A failure asked for through COI_FAULT."""


def point(phase: str) -> None:
    """Fail or signal here when the environment asks for this phase."""
    if os.environ.get("COI_FAULT") == phase:
        raise InjectedFault(f"injected fault at phase {phase!r} (COI_FAULT)")
    sig, _, at = os.environ.get("COI_FAULT_SIGNAL", "").partition("@")
    if sig and at == phase:
        os.kill(os.getpid(), getattr(signal, sig))

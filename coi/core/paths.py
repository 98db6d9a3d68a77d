"""Where coi keeps its own files on the host: everything lives under COI_HOME."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def coi_home(environ: Mapping[str, str] | None = None) -> Path:
    """COI_HOME, or ~/.coi: the root of sessions, storage, logs and locks."""
    env = os.environ if environ is None else environ
    raw = env.get("COI_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".coi")
    return Path(os.path.expanduser(raw))


def sessions_dir(tool: str, environ: Mapping[str, str] | None = None) -> Path:
    """Saved sessions of one tool: COI_HOME/sessions-<tool>."""
    return coi_home(environ) / f"sessions-{tool}"


def logs_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Build and daemon logs written by coi."""
    return coi_home(environ) / "logs"


def locks_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Lock files: one per workspace, one per image alias."""
    return coi_home(environ) / "locks"


def watch_lock(name: str) -> Path:
    """The lock a coi process holds while it watches container `name` (a session, its
    finisher, a pool filler): a container whose lock is free has nobody watching it."""
    return locks_dir() / f"watch-{name}.lock"


def ensure(path: Path) -> Path:
    """Create a private folder (0700) if missing and return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path

"""What a session is: the request the command line makes, the open session, and how
the `code` user's commands run inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.sessions import store

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.config.tools import Tool
    from coi.incus.api import IncusAPI


HOME = store.HOME


CODE_UID = 1000


@dataclass
class Session:
    """An open session: its container and everything needed to finish it."""

    incus: IncusAPI
    cfg: Config
    tool: Tool
    workspace: Path
    name: str
    slot: int
    session_id: str
    persistent: bool
    profile: str | None
    env: dict[str, str] = field(default_factory=dict)
    finished: bool = False
    credentials: dict[str, bytes] = field(default_factory=dict, repr=False)
    files: dict[str, bytes] = field(default_factory=dict)  # the broker's, absolute paths
    announce: bool = True  # say where the session was saved (coi run: only once, or --verbose)
    how: str = "new"  # new, warm (from the pool: booted, with its address) or reused


def as_code(argv: list[str]) -> list[str]:
    """argv run as `code` with its groups (docker among them): exec's --user sets none."""
    return ["runuser", "-u", "code", "--", *argv]


def code_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the `code` user's processes (nothing from the host)."""
    base = {
        "HOME": HOME,
        "USER": "code",
        "LOGNAME": "code",
        "SHELL": "/bin/bash",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "NODE_EXTRA_CA_CERTS": "/etc/ssl/certs/ca-certificates.crt",
    }
    return {**base, **(extra or {})}


@dataclass(frozen=True)
class Request:
    """What the command line asks of a session; None (or 0) where it asked nothing."""

    workspace: Path
    flags: dict[str, Any] = field(default_factory=dict)  # the config-bearing flags given
    profile: str | None = None
    tool: str | None = None
    resume: str | None = None  # "" means the newest session of this workspace and tool
    slot: int = 0
    storage: str | None = None
    mounts: tuple[str, ...] = ()
    worktree: str | None = None  # --worktree [BRANCH]: "" means the slot's own branch


def load_config(request: Request, profile: str | None = None, *, quiet: bool = False) -> Config:
    """The merged config for the request's workspace, profile and flags; warnings said."""
    from coi.config import load

    return load.load_said(request.workspace, profile or request.profile, request.flags, quiet=quiet)

"""What most commands share: the workspace, the merged config, the Incus connection."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.core.errors import UsageError

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.api import IncusAPI
    from coi.sessions.lifecycle import Request


def workspace_of(args: argparse.Namespace) -> Path:
    """The absolute workspace folder (--workspace or the current directory)."""
    raw = getattr(args, "workspace", None) or os.getcwd()
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise UsageError(f"workspace {raw} is not a folder: pass an existing directory")
    return path


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config-bearing global flags that were given (absent flags stay absent)."""
    names = ("image", "persistent", "env", "network", "tool", "remote")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def load_config(
    args: argparse.Namespace, profile: str | None = None, *, quiet: bool = False
) -> Config:
    """The merged config for this workspace, profile and flags; warnings printed once."""
    from coi.config import load

    chosen = profile or getattr(args, "profile", None)
    return load.load_said(workspace_of(args), chosen, flag_values(args), quiet=quiet)


def session_request(args: argparse.Namespace) -> Request:
    """The session the command line asks for, in the terms of coi/sessions."""
    from coi.sessions.lifecycle import Request

    return Request(
        workspace_of(args),
        flag_values(args),
        profile=getattr(args, "profile", None),
        tool=getattr(args, "tool", None),
        resume=getattr(args, "resume", None),
        slot=getattr(args, "slot", 0) or 0,
        storage=getattr(args, "storage", None),
        mounts=tuple(getattr(args, "mount", None) or ()),
        worktree=getattr(args, "worktree", None),
    )


def connect(args: argparse.Namespace, cfg: Config | None = None) -> IncusAPI:
    """The command's Incus connection, from the context the entry point handed it (cfg:
    the config already loaded, else this workspace's)."""
    from coi.commands import context

    return context.of(args).incus(cfg if cfg is not None else load_config(args))

"""What most commands share: the workspace, the merged config, the Incus connection."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.core.errors import UsageError

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.adapter import Incus


def workspace_of(args: argparse.Namespace) -> Path:
    """The absolute workspace folder (--workspace or the current directory)."""
    raw = getattr(args, "workspace", None) or os.getcwd()
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise UsageError(f"workspace {raw} is not a folder: pass an existing directory")
    return path


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config-bearing global flags that were given (absent flags stay absent)."""
    names = ("image", "persistent", "env", "network", "tool")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def load_config(
    args: argparse.Namespace, profile: str | None = None, *, quiet: bool = False
) -> Config:
    """The merged config for this workspace, profile and flags; warnings printed once."""
    from coi.config import load as config
    from coi.core import output

    cfg = config.load(
        workspace_of(args),
        profile=profile or getattr(args, "profile", None),
        flags=flag_values(args),
    )
    for message in [] if quiet else cfg.warnings:
        output.warn(message)
    return cfg


def connect(cfg: Config) -> Incus:
    """An Incus connection in the configured project (local socket or HTTPS remote)."""
    from coi.incus.adapter import Endpoint, connect, socket_path

    section = cfg.incus
    endpoint = Endpoint(socket_path())
    if section.remote:
        certs = (section.client_cert, section.client_key, section.server_cert)
        endpoint = Endpoint(section.remote, *(None if c is None else str(c) for c in certs))
    return connect(project=section.project, group=section.group, endpoint=endpoint)

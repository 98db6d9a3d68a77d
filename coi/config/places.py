"""Where the trusted config files of one user live (paths only: cheap to import)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path


def user_dir(environ: Mapping[str, str] | None = None) -> Path:
    """$XDG_CONFIG_HOME/coi, else ~/.config/coi (a relative XDG_CONFIG_HOME is ignored, as
    the XDG spec says)."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME", "")
    home = Path(env.get("HOME") or Path.home())
    return (Path(xdg) if os.path.isabs(xdg) else home / ".config") / "coi"


def workspace_file(workspace: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The workspace's own config file, beside the user's (`coi network approve --save`
    writes it; it is read right after the user's config.toml): outside the workspace, so
    the agent that works there cannot write it."""
    key = hashlib.sha256(str(Path(workspace).resolve()).encode()).hexdigest()[:16]
    return user_dir(environ) / "workspaces" / f"{key}.toml"

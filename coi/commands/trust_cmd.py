"""`coi trust` and `coi untrust`: approve or withdraw a workspace's .coi.toml."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path

from coi import output, trust
from coi.commands.common import workspace_of
from coi.errors import UsageError


def trust_(args: argparse.Namespace) -> int:
    """Approve the workspace's .coi.toml as it is now, or list the approvals (--list)."""
    from coi import config

    if getattr(args, "list", False):
        return list_(args)
    workspace = workspace_of(args)
    path = workspace / trust.PROJECT_FILE
    # Load first: a file that does not validate is refused, and the digest stored is the
    # one of the bytes that were parsed and checked.
    cfg = config.load(workspace)
    layer = next((item for item in cfg.layers if item.path == path), None)
    if layer is None:
        fix = "coi trust approves a workspace's .coi.toml; pass --workspace to name another"
        raise UsageError(f"{path}: no such file; {fix}")
    was = trust.is_trusted(path, layer.digest)
    approval = trust.approve(path, layer.digest)
    keys = ", ".join(trust.summary_keys(cfg.ignored))
    what = "already trusted" if was else "trusted"
    output.info(f"{what}: {approval.path} (sha256 {approval.sha256[:12]})")
    if keys:
        output.info(f"it now applies: {keys}")
    return 0


def untrust(args: argparse.Namespace) -> int:
    """Withdraw the approval of the workspace's .coi.toml (the folder need not exist)."""
    raw = getattr(args, "workspace", None) or os.getcwd()
    path = Path(raw).expanduser() / trust.PROJECT_FILE
    key = trust.key_of(path)
    if trust.revoke(path):
        output.info(f"no longer trusted: {key}")
    else:
        output.info(f"{key} was not trusted: nothing to do")
    return 0


def list_(args: argparse.Namespace) -> int:
    """Print each approval with its state: trusted, changed (asks again) or missing."""
    found = sorted(trust.approvals().values(), key=lambda approval: approval.path)
    items = [
        {"state": state(Path(a.path), a.sha256), "sha256": a.sha256, **asdict(a)} for a in found
    ]
    if getattr(args, "format", "text") == "json":
        output.emit_json(items)
    elif items:
        rows = [(i["state"], i["sha256"][:12], i["approved_at"], i["path"]) for i in items]
        output.table(("state", "sha256", "approved", "file"), rows)
    else:
        output.info("no trusted project files")
    return 0


def state(path: Path, sha256: str) -> str:
    """trusted while the file's bytes match, changed once they differ, missing when gone."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    return "trusted" if trust.digest(data) == sha256 else "changed"

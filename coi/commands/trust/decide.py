"""`coi trust` and `coi untrust`: approve or withdraw a workspace's .coi.toml."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from coi.commands.common import workspace_of
from coi.config import trust
from coi.core import output
from coi.core.errors import UsageError

if TYPE_CHECKING:
    from coi.config.load import Config


def trust_(args: argparse.Namespace) -> int:
    """Show the workspace's .coi.toml (digest, what it turns on), ask, and approve exactly
    the bytes shown; or list the approvals (--list)."""
    from coi.config import files, load

    if getattr(args, "list", False):
        return list_(args)
    workspace = workspace_of(args)
    path = workspace / trust.PROJECT_FILE
    # Read once: the bytes parsed, shown and hashed are the ones approved; no second read.
    raw = files.read_project_file(path)
    if raw is None:
        fix = "coi trust approves a workspace's .coi.toml; pass --workspace to name another"
        raise UsageError(f"{path}: no such file; {fix}")
    cfg = load.load(workspace, project=raw)  # a file that does not validate is refused
    sha256 = trust.digest(raw)
    if trust.is_trusted(path, sha256):
        output.info(f"already trusted: {trust.key_of(path)} (sha256 {sha256})")
        return 0
    asks = not getattr(args, "yes", False)
    if asks and not sys.stdin.isatty():
        fix = "review the file, then run `coi trust --yes` to approve it without asking"
        raise UsageError(f"{path}: no terminal to confirm on; {fix}")
    _review(path, sha256, cfg)
    if asks and not _confirmed():
        output.info("not trusted: nothing changed")
        return 1
    approval = trust.approve(path, sha256)
    output.info(f"trusted: {approval.path} (sha256 {sha256[:12]})")
    return 0


def _review(path: Path, sha256: str, cfg: Config) -> None:
    """What the user approves: the file, the digest of its bytes, what approving turns on
    (the keys the untrusted view ignores, and the credentials of a tool the file chose)."""
    from coi.commands.config import render

    lines = [f"  {i.key} = {render(i.value)}  ({i.reason})" for i in cfg.ignored]
    if "tool.name" in cfg.untrusted_keys:
        lines.append(f'  tool.name = "{cfg.tool.name}"  (that tool gets its credential files)')
    output.info(f"{trust.key_of(path)}\nsha256 {sha256}")
    if not lines:
        output.info("it turns on nothing beyond what applies untrusted")
        return
    output.info("approving it turns on:")
    for line in lines:
        output.info(line)


def _confirmed() -> bool:
    print("trust this file? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


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
    from coi.config import files
    from coi.core.errors import ConfigError

    try:
        data = files.read_project_file(path)
    except ConfigError:
        return "unreadable"
    if data is None:
        return "missing"
    return "trusted" if trust.digest(data) == sha256 else "changed"

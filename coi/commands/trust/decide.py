"""`coi trust` and `coi untrust`: approve or withdraw a workspace's .coi.toml."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
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
    """Show the workspace's .coi.toml and devcontainer.json (digest, what each turns on),
    ask, and approve exactly the bytes shown; or list the approvals (--list)."""
    from coi.config import devcontainer, files, load

    if getattr(args, "list", False):
        return list_(args)
    workspace = workspace_of(args)
    path = workspace / trust.PROJECT_FILE
    # Read once: the bytes parsed, shown and hashed are the ones approved; no second read.
    raw = files.read_project_file(path)
    dev = devcontainer.read(workspace)
    if raw is None and dev is None:
        fix = "coi trust approves a workspace's .coi.toml or devcontainer.json; pass --workspace"
        raise UsageError(f"{path}: no such file; {fix} to name another")
    cfg = load.load(workspace, project=raw)  # a file that does not validate is refused
    pending: list[tuple[Path, bytes, Callable[[], None]]] = []
    if raw is not None:
        pending.append((path, raw, lambda: _review(cfg)))
    if dev is not None:
        dev_path, dev_raw = dev
        if isinstance(dev_raw, str):
            raise UsageError(f"{dev_path}: {dev_raw}; make it a small regular file, or remove it")
        lines = devcontainer.review(dev_raw, dev_path, workspace.resolve(), {}, Path.home())
        pending.append((dev_path, dev_raw, lambda: _say(lines)))
    pending = [item for item in pending if not _already(item[0], item[1])]
    if not pending:
        return 0
    asks = not getattr(args, "yes", False)
    if asks and not sys.stdin.isatty():
        fix = "review the file, then run `coi trust --yes` to approve it without asking"
        raise UsageError(f"{pending[0][0]}: no terminal to confirm on; {fix}")
    for where, data, show in pending:
        output.info(f"{trust.key_of(where)}\nsha256 {trust.digest(data)}")
        show()
    if asks and not _confirmed():
        output.info("not trusted: nothing changed")
        return 1
    for where, data, _ in pending:
        approval = trust.approve(where, trust.digest(data))
        output.info(f"trusted: {approval.path} (sha256 {approval.sha256[:12]})")
    return 0


def _already(path: Path, raw: bytes) -> bool:
    sha256 = trust.digest(raw)
    if trust.is_trusted(path, sha256):
        output.info(f"already trusted: {trust.key_of(path)} (sha256 {sha256})")
        return True
    return False


def _say(lines: list[str], nothing: str = "it turns on nothing coi reads") -> None:
    """What approving a file turns on, a line each; `nothing` when it turns on nothing."""
    if not lines:
        output.info(nothing)
        return
    output.info("approving it turns on:")
    for line in lines:
        output.info(line)


def _review(cfg: Config) -> None:
    """What approving .coi.toml turns on (the keys the untrusted view ignores, and the
    credentials of a tool the file chose)."""
    from coi.commands.config import render

    lines = [f"  {i.key} = {render(i.value)}  ({i.reason})" for i in cfg.ignored]
    if "tool.name" in cfg.untrusted_keys:
        lines.append(f'  tool.name = "{cfg.tool.name}"  (that tool gets its credential files)')
    _say(lines, "it turns on nothing beyond what applies untrusted")


def _confirmed() -> bool:
    print("trust this file? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def untrust(args: argparse.Namespace) -> int:
    """Withdraw the approval of the workspace's .coi.toml and devcontainer.json (the folder
    need not exist)."""
    from coi.config import devcontainer

    raw = getattr(args, "workspace", None) or os.getcwd()
    folder = Path(raw).expanduser()
    key = trust.key_of(folder / trust.PROJECT_FILE)
    dev = [folder / rel for rel in devcontainer.FILES if trust.revoke(folder / rel)]
    if trust.revoke(folder / trust.PROJECT_FILE):
        output.info(f"no longer trusted: {key}")
    elif not dev:
        output.info(f"{key} was not trusted: nothing to do")
    for path in dev:
        output.info(f"no longer trusted: {trust.key_of(path)}")
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

    data: bytes | str | None
    if path.name.endswith("devcontainer.json"):
        data = _devcontainer_bytes(path)
    else:
        try:
            data = files.read_project_file(path)
        except ConfigError:
            return "unreadable"
    if isinstance(data, str):
        return "unreadable"
    if data is None:
        return "missing"
    return "trusted" if trust.digest(data) == sha256 else "changed"


def _devcontainer_bytes(path: Path) -> bytes | str | None:
    """A devcontainer file's bytes (or why not), read as a workspace's is; None when gone."""
    from coi.config import devcontainer

    for rel in devcontainer.FILES:
        if str(path).endswith("/" + rel):
            workspace = Path(str(path)[: -len(rel) - 1])
            found = devcontainer.read(workspace)
            if found is None or found[0] != workspace.resolve() / rel:
                return None  # gone, or the other file now counts
            return found[1]
    return None

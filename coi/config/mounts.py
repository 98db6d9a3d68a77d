"""Extra host folders mounted into a session: `[[mounts]]` in trusted config and
`--mount SRC:DST[:rw]`. Pure: the decisions, no I/O beyond resolving a path.

A mount is read-only unless asked otherwise, shares the workspace's ownership mapping
(the instance-wide raw.idmap: nothing is shifted), and is refused when its source is the
root, the home folder, or holds or lies in a folder of credentials, or when its target
would cover a system folder or anything under /workspace (where the protected paths are).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from coi.core.errors import UsageError

# Relative to the home folder: keys, tokens and the tools' logins live here.
CREDENTIAL_PATHS = (
    ".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".netrc", ".git-credentials",
    ".password-store", ".pki", ".config/gh", ".config/gcloud", ".config/hub", ".config/coi",
    ".claude", ".claude.json", ".codex", ".local/share/opencode", ".aider.conf.yml", ".coi",
)  # fmt: skip
SYSTEM_SOURCES = ("/etc", "/root", "/proc", "/sys", "/dev", "/run", "/var/run", "/boot",
                  "/var/lib/incus", "/var/lib/docker")  # fmt: skip
SYSTEM_TARGETS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/root",
                  "/run", "/sbin", "/sys", "/usr", "/var", "/home/code", "/tmp")  # fmt: skip


@dataclass(frozen=True)
class Mount:
    """One host folder (or file) at a path inside."""

    source: Path
    target: str
    readonly: bool = True

    def as_device(self) -> dict[str, str]:
        """The Incus disk device (no shift: the instance's raw.idmap maps it)."""
        device = {"type": "disk", "source": str(self.source), "path": self.target}
        if self.readonly:
            device["readonly"] = "true"
        return device


def parse_flag(text: str, cwd: Path) -> Mount:
    """`SRC:DST[:rw]` (or `:ro`, the default)."""
    parts = text.split(":")
    mode = parts.pop() if len(parts) == 3 else "ro"
    if len(parts) != 2 or mode not in ("ro", "rw") or not all(parts):
        raise UsageError(f"--mount {text!r}: write SRC:DST, or SRC:DST:rw for a writable one")
    source = Path(os.path.expanduser(parts[0]))
    return Mount(source if source.is_absolute() else cwd / source, parts[1], mode == "ro")


def from_config(entries: Iterable[Mapping[str, Any]], home: Path) -> list[Mount]:
    """The `[[mounts]]` tables (validated by the schema) as Mounts."""
    from coi.config.model import expand

    found = []
    for entry in entries:
        source = expand(str(entry["source"]), home)
        found.append(Mount(source, str(entry["target"]), bool(entry.get("readonly", True))))
    return found


def check(mount: Mount, home: Path, extra_sensitive: Iterable[Path] = ()) -> Mount:
    """The mount with its source resolved, or UsageError naming why it is refused."""
    if not mount.source.exists():
        raise UsageError(f"mount source {mount.source} does not exist: create it or fix the path")
    source = mount.source.resolve()
    refused = source_problem(source, home.resolve(), [p.resolve() for p in extra_sensitive])
    if refused:
        raise UsageError(f"mount source {mount.source}: {refused}")
    problem = target_problem(mount.target)
    if problem:
        raise UsageError(f"mount target {mount.target!r}: {problem}")
    return Mount(source, str(PurePosixPath(mount.target)), mount.readonly)


def source_problem(source: Path, home: Path, extra: Iterable[Path] = ()) -> str | None:
    """Why a resolved source may not be mounted; None when it may."""
    if source == Path("/"):
        return "the root folder is never mounted; mount the folder you need"
    if source == home:
        return "the home folder is never mounted whole (it holds your keys); mount a folder in it"
    sensitive = [home / p for p in CREDENTIAL_PATHS] + [Path(p) for p in SYSTEM_SOURCES]
    for path in [*sensitive, *extra]:
        if source == path or path in source.parents:
            return f"it lies in {path}, which holds credentials or system files"
        if source in path.parents:
            return f"it holds {path}, which holds credentials or system files"
    return None


def target_problem(target: str) -> str | None:
    """Why a path inside may not receive a mount; None when it may."""
    path = PurePosixPath(target)
    if not path.is_absolute() or ".." in path.parts:
        return "use an absolute path inside the container without '..', e.g. /data"
    if str(path) == "/" or path == PurePosixPath("/workspace") or path.parts[1] == "workspace":
        return "it would cover / or the workspace (and its protected paths); use e.g. /data"
    for system in SYSTEM_TARGETS:
        if path == PurePosixPath(system) or (
            PurePosixPath(system) in path.parents and system != "/home/code"
        ):
            return f"it would cover the system folder {system}; use e.g. /data or /mnt/NAME"
    return None

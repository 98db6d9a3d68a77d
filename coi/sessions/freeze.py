"""The containers of a workspace held still while coi changes its files on the host.

A container sees the host's unlinks and renames in its workspace through inotify and can
put a link in place within microseconds. Whatever coi writes there runs from directory
descriptors without following links (coi/core/safefs.py), and a frozen container moves
nothing at all: a rollback, and the git steps of a worktree, run with every running
container of the workspace (its worktree sessions and pooled containers included) frozen,
and thawed after, whatever happened. One that cannot be frozen stops the step, named.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from coi.core import labels
from coi.core.errors import CoiError
from coi.incus.api import IncusAPI

WORKSPACE_KEY = labels.WORKSPACE


def running(listing: list[dict[str, object]], workspace: Path) -> list[str]:
    """The running containers of workspace in an instance listing (pure)."""
    found = []
    for record in listing:
        config = record.get("config") or {}
        assert isinstance(config, dict)
        if config.get(WORKSPACE_KEY) == str(workspace) and record.get("status") == "Running":
            found.append(str(record["name"]))
    return sorted(found)


@contextlib.contextmanager
def frozen(incus: IncusAPI, workspace: Path) -> Iterator[list[str]]:
    """Freeze the workspace's running containers for the block; yields their names."""
    done: list[str] = []
    try:
        for name in running(incus.instances(), workspace):
            try:
                incus.set_state(name, "freeze", timeout=30)
            except CoiError as exc:
                raise CoiError(
                    f"could not freeze {name}, which runs on {workspace} ({exc}): stop it "
                    f"first (`coi shutdown {name}`), then try again"
                ) from None
            done.append(name)
        yield done
    finally:
        for name in reversed(done):
            with contextlib.suppress(CoiError):
                incus.set_state(name, "unfreeze", timeout=30)

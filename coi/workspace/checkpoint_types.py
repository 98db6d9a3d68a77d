"""What the checkpoint modules share: a checkpoint, what coi holds, where a step works,
the names and settings of coi's store (coi/workspace/checkpoints.py is the interface)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from coi.core import safefs
from coi.core.errors import UsageError

REFS = "refs/coi/checkpoints/"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Host git never runs the repository's code: no hooks, fsmonitor, external diff, pager,
# submodule recursion; gc off.
SAFE = (
    "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "gc.auto=0",
    "-c", "core.pager=cat", "-c", "submodule.recurse=false",
    "-c", "protocol.file.allow=never",
)  # fmt: skip
IDENTITY = {
    "GIT_AUTHOR_NAME": "coi",
    "GIT_AUTHOR_EMAIL": "coi@localhost",
    "GIT_COMMITTER_NAME": "coi",
    "GIT_COMMITTER_EMAIL": "coi@localhost",
}
# git of coi's store reads no config but its own: not the system's, the user's or root's
CLEAN_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}
DEFAULT_MAX_COPY = 2 * 2**30
STORE_GIT = "git"  # the bare repository in a workspace's store (ids start with a digit)


@dataclass(frozen=True)
class Checkpoint:
    """One recorded state of a workspace."""

    id: str
    created: float
    message: str
    kind: str  # git or copy
    commit: str = ""  # git: the checkpoint commit

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, lowercase keys."""
        return {"id": self.id, "created": self.created, "message": self.message,
                "kind": self.kind, "commit": self.commit}  # fmt: skip


def new_id(name: str | None, now: float) -> str:
    """A sortable id: the UTC time, then the name (default `manual`)."""
    label = name or "manual"
    if not NAME.fullmatch(label):
        raise UsageError(f"checkpoint name {label!r}: use letters, digits, '.', '_' or '-'")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
    return f"{stamp}-{label}"


@dataclass(frozen=True)
class Held:
    """What coi holds in a workspace while sessions run (protect_host.held says): the
    placeholders it made, and every path a live locked view has mounted."""

    made: frozenset[str] = frozenset()
    mounted: frozenset[str] = frozenset()


NOTHING_HELD = Held()


class Taken(Exception):
    """Another checkpoint has this id (parallel sessions starting in the same millisecond)."""


@dataclass(frozen=True)
class At:
    """The workspace and its checkpoint store; facts holds what one step learnt of the
    workspace repository (read once per step: coi/workspace/checkpoint_git.py)."""

    ws: Path
    store: Path
    facts: dict[str, str] = field(default_factory=dict, compare=False)


def touches(rel: str, held: Iterable[str]) -> bool:
    """Whether changing rel would change a held path: it is one, lies under or above one."""
    return any(rel == h or rel.startswith(h + "/") or h.startswith(rel + "/") for h in held)


def clean_message(message: str) -> str:
    """A message without control characters (newlines and tabs kept)."""
    return "".join(ch for ch in message if ch in "\n\t" or ord(ch) >= 32).strip()


opened_dir = safefs.folder  # a descriptor of a trusted folder, closed after

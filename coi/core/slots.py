"""Workspace ids, container names and slot allocation: pure decisions, no I/O."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from coi.core.errors import CoiError

DEFAULT_PREFIX = "coi-"
DEFAULT_LIMIT = 10


class SlotsExhausted(CoiError):
    """Every slot of a workspace is in use."""


@dataclass(frozen=True)
class ContainerName:
    """A parsed coi container name: prefix + workspace id + slot."""

    prefix: str
    workspace_id: str
    slot: int

    def __str__(self) -> str:
        return f"{self.prefix}{self.workspace_id}-{self.slot}"


def prefix(environ: Mapping[str, str] | None = None) -> str:
    """The container name prefix: COI_CONTAINER_PREFIX, or `coi-`."""
    env = os.environ if environ is None else environ
    return str(env.get("COI_CONTAINER_PREFIX") or DEFAULT_PREFIX)


def workspace_id(workspace: Path | str) -> str:
    """First 8 hex digits of sha256 of the absolute workspace path."""
    absolute = os.path.abspath(os.fspath(workspace))
    return hashlib.sha256(absolute.encode()).hexdigest()[:8]


def container_name(workspace: Path | str, slot: int, name_prefix: str = DEFAULT_PREFIX) -> str:
    """The container name of a workspace's slot."""
    if slot < 1:
        raise ValueError(f"slot must be 1 or more, got {slot}")
    return str(ContainerName(name_prefix, workspace_id(workspace), slot))


def parse_name(name: str, name_prefix: str = DEFAULT_PREFIX) -> ContainerName | None:
    """Parse a container name made by container_name; None when it is not one."""
    if not name.startswith(name_prefix):
        return None
    match = re.fullmatch(r"([0-9a-f]{8})-([1-9][0-9]*)", name[len(name_prefix) :])
    if match is None:
        return None
    return ContainerName(name_prefix, match.group(1), int(match.group(2)))


def slots_in_use(names: Iterable[str], workspace: Path | str, name_prefix: str) -> set[int]:
    """The slots of a workspace that the given container names occupy."""
    wanted = workspace_id(workspace)
    parsed = (parse_name(n, name_prefix) for n in names)
    return {p.slot for p in parsed if p is not None and p.workspace_id == wanted}


def allocate(taken: Iterable[int], limit: int = DEFAULT_LIMIT, preferred: int = 0) -> int:
    """The lowest free slot in 1..limit, starting at `preferred` when it is given (not 0).

    A busy preferred slot moves to the next free one above it, then wraps to the lowest.
    """
    busy = set(taken)
    if preferred < 0 or preferred > limit:
        raise CoiError(f"slot {preferred} is outside 1..{limit}: pick a slot in range or use 0")
    start = preferred or 1
    for slot in itertools.chain(range(start, limit + 1), range(1, start)):
        if slot not in busy:
            return slot
    raise SlotsExhausted(
        f"all {limit} slots of this workspace are in use: "
        "stop one with `coi shutdown NAME` or raise [defaults] max_slots"
    )


@dataclass(frozen=True)
class Occupant:
    """A container holding a slot: whether it runs and whether it is persistent."""

    slot: int
    running: bool
    persistent: bool


def choose(
    occupants: Iterable[Occupant], limit: int, preferred: int = 0, persistent: bool = False
) -> tuple[int, bool]:
    """(slot, reuse): a persistent session reuses a stopped persistent container of the
    workspace (the preferred slot's, else the lowest); otherwise the lowest free slot."""
    held = {o.slot: o for o in occupants}
    if persistent:
        idle = sorted(s for s, o in held.items() if o.persistent and not o.running)
        if preferred and preferred in idle:
            return preferred, True
        if not preferred and idle:
            return idle[0], True
    return allocate(held, limit, preferred), False


def restart_hint(slot: object, workspace: object) -> str:
    """How a stopped persistent container starts again. Its workspace disk is the locked
    view that only coi builds, for a session's start (coi/boundary/protect_host.py), so
    Incus refuses `incus start` ("The recursive option is only supported for additional
    bind-mounted paths"), after a reboot too."""
    import shlex

    return (
        f"`coi shell --persistent --slot {slot} --workspace {shlex.quote(str(workspace))}` "
        "starts it again (not `incus start`: its workspace view exists only while coi runs it)"
    )

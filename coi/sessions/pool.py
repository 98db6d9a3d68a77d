"""The warm pool: booted containers kept ready for a workspace's next sessions.

A pooled container is a slot container of its workspace made from the launch spec a
session would use with the config as it stands (image, profile, network mode and its
rules, limits, the workspace disk with its idmap and locked view), started, past its boot
barrier and with an address. It has no session, tool or credentials: a session takes it
with one PATCH of its labels (under the workspace's slot lock) and then sends its files in
with the setup exec every session has. `[pool] size` says how many to keep; a session
that took one, or started cold, starts a filler in the background (lifecycle.fill_pool).

Why one pool per workspace and not per image: Incus applies raw.idmap (the workspace
owner's map) only when a container starts, and refuses to rename a running container, so
a container made for no workspace would need a restart, which costs about what the
warm start saves, and coi's names (the slot is in the name) would have to move to labels.

The label user.coi.pool holds the pool key (launch/spec.py pool_key) once the container
is ready, "filling" while it is made; a session takes only a running container whose key
is its own, so a config changed since the fill never gets a container made for the old one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coi.core import labels, slots
from coi.launch.spec import POOL_LABEL

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

FILLING = "filling"


@dataclass(frozen=True)
class Member:
    """One pooled container: where it belongs and whether it can be taken."""

    name: str
    workspace_id: str
    workspace: str
    slot: int
    state: str  # ready, filling (being made, or its filler died), stopped
    key: str


def members(listing: Iterable[dict[str, Any]], name_prefix: str) -> list[Member]:
    """The pooled containers of an instance listing (recursion=1 or 2), by name."""
    found = []
    for inst in listing:
        config = inst.get("config") or {}
        key = config.get(POOL_LABEL, "")
        parsed = slots.parse_name(inst["name"], name_prefix)
        if not key or parsed is None:
            continue
        if inst.get("status") != "Running":
            state = "stopped"
        else:
            state = FILLING if key == FILLING else "ready"
        found.append(
            Member(
                inst["name"],
                parsed.workspace_id,
                config.get(labels.WORKSPACE, ""),
                parsed.slot,
                state,
                key,
            )
        )
    return sorted(found, key=lambda m: m.name)


def pick(
    pooled: Iterable[Member], workspace_id: str, key: str, preferred: int = 0
) -> Member | None:
    """The pooled container a session of this workspace and key takes: the preferred
    slot's (then only that one), else the lowest ready slot; None when none fits."""
    fits = [m for m in pooled if m.workspace_id == workspace_id and m.key == key]
    ready = sorted((m for m in fits if m.state == "ready"), key=lambda m: m.slot)
    if preferred:
        return next((m for m in ready if m.slot == preferred), None)
    return ready[0] if ready else None


def key_with(
    spec_key: str, cas: Mapping[str, bytes], beside: Mapping[str, str] | None = None
) -> str:
    """The pool key: the spec's (launch/spec.py pool_key), the extra CAs the container
    trusts, which the filler puts in (they come from config and host files, not the spec),
    and the settings beside the spec a session brings in (the credentials mode)."""
    parts = {
        "spec": spec_key,
        "cas": {name: pem.hex() for name, pem in cas.items()},
        "beside": dict(beside or {}),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def claim_patch(session_id: str, tool: str) -> dict[str, Any]:
    """The one PATCH that turns a pooled container into a session's."""
    return {"config": {labels.SESSION: session_id, labels.TOOL: tool, POOL_LABEL: ""}}


def claim(incus: IncusAPI, name: str, session_id: str, tool: str) -> None:
    """Label a pooled container as the session's (the caller holds the slot lock)."""
    incus.update_instance(name, claim_patch(session_id, tool))


def unwanted(
    mine: Iterable[Member], key: str, watched: set[str], size: int | None = None
) -> list[Member]:
    """This workspace's pooled containers a filler removes: stopped ones, ones made for
    another config, ones left half made by a filler that died (nobody watches them), and,
    given a size, the ready ones beyond it (the highest slots first)."""
    mine = list(mine)
    gone = [
        m
        for m in mine
        if m.name not in watched and (m.state == "stopped" or m.state == FILLING or m.key != key)
    ]
    if size is not None:
        kept = sorted((m for m in mine if m not in gone), key=lambda m: m.slot)
        gone += [m for m in kept[size:] if m.name not in watched]
    return gone

"""The labels coi keeps on its Incus instances (`user.*` config keys), named once.

Incus keeps `user.*` keys as they are; coi reads them back to know a container's
workspace, slot, session and the rest (`coi list` shows them). Every module reads and
writes them through these names. The root helpers (coi-netrules, coi-view) are installed
as self-contained copies and spell the few keys they read themselves.
"""

from __future__ import annotations

from enum import StrEnum

PREFIX = "user.coi."
WORKSPACE = PREFIX + "workspace"  # the host folder the session works on (the main tree)
SLOT = PREFIX + "slot"
SESSION = PREFIX + "session"  # its session id; none in a pooled container
TOOL = PREFIX + "tool"
PERSISTENT = PREFIX + "persistent"  # "true": kept after the session
PROFILE = PREFIX + "profile"
IMAGE = PREFIX + "image"
NETWORK_MODE = PREFIX + "network_mode"
WORKTREE = PREFIX + "worktree"  # a worktree session's folder
WORKTREE_BRANCH = PREFIX + "worktree_branch"
POOL = PREFIX + "pool"  # a warm pool's container: its pool key, or "filling"
VERSION = PREFIX + "version"  # on coi's own resources (pool, bridge, profiles)
NETWORK = PREFIX + "network."  # the network policy's keys start so
BROKER_ENV = PREFIX + "broker-env."  # environment keys the credential broker set


class Mode(StrEnum):
    """The network modes (coi/network): what a container may reach."""

    OPEN = "open"
    RESTRICTED = "restricted"
    ALLOWLIST = "allowlist"
    LEARN = "learn"

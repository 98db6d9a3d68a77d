"""Image aliases: dated build aliases (NAME-YYYYMMDD-HHMMSS) and which ones cleanup prunes.

Pure: every decision over a mapping of alias -> fingerprint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from coi.core.errors import UsageError

STAMP = "%Y%m%d-%H%M%S"
_STAMP = re.compile(r"[0-9]{8}-[0-9]{6}")
# Incus alias names: no "/" and no whitespace; keep to a portable, shell-safe subset.
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_alias(alias: str, what: str = "image name") -> str:
    """alias, or a UsageError saying which characters an alias may hold."""
    if not _ALIAS.fullmatch(alias):
        raise UsageError(
            f"{what} {alias!r} is not valid: use up to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return alias


def dated_alias(name: str, when: datetime) -> str:
    """The alias of one build: NAME-YYYYMMDD-HHMMSS (UTC)."""
    return f"{name}-{when.astimezone(UTC).strftime(STAMP)}"


def stamp_of(alias: str, prefix: str) -> datetime | None:
    """The build time when alias is exactly prefix + YYYYMMDD-HHMMSS (a real time), else None."""
    if not alias.startswith(prefix):
        return None
    rest = alias[len(prefix) :]
    if not _STAMP.fullmatch(rest):
        return None
    try:
        return datetime.strptime(rest, STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def dated_of(name: str, aliases: Mapping[str, str]) -> list[str]:
    """The dated aliases of NAME's builds, newest first."""
    found = [(stamp, a) for a in aliases if (stamp := stamp_of(a, f"{name}-")) is not None]
    return [a for _, a in sorted(found, reverse=True)]


@dataclass(frozen=True)
class CleanupPlan:
    """What `image cleanup PREFIX --keep N` does."""

    kept: tuple[str, ...]  # dated aliases kept, newest first
    delete: tuple[str, ...]  # fingerprints of images to delete
    removed: tuple[str, ...]  # dated aliases that go with them
    protected: dict[str, str] = field(default_factory=dict)  # old alias -> alias that holds it


def plan_cleanup(aliases: Mapping[str, str], prefix: str, keep: int) -> CleanupPlan:
    """Keep the `keep` newest PREFIX-YYYYMMDD-HHMMSS aliases; delete the images of the rest.

    Only aliases that are exactly PREFIX followed by a timestamp count, so `coi-` never
    prunes `coi-rust-...`. An old build's image stays when any alias outside the pruned
    set still names it (a moving alias such as `coi`, or a kept build).
    """
    if keep < 1:
        raise UsageError(f"--keep must be 1 or more, got {keep}: cleanup never removes every build")
    if not prefix:
        raise UsageError("cleanup needs a PREFIX, e.g. `coi image cleanup coi- --keep 3`")
    found = [(stamp, a) for a in aliases if (stamp := stamp_of(a, prefix)) is not None]
    newest_first = [a for _, a in sorted(found, reverse=True)]
    kept, old = newest_first[:keep], newest_first[keep:]
    pruned = set(old)
    holders: dict[str, str] = {}
    for alias, fingerprint in sorted(aliases.items()):
        if alias not in pruned:
            holders.setdefault(fingerprint, alias)
    protected = {a: holders[aliases[a]] for a in old if aliases[a] in holders}
    removed = tuple(a for a in old if a not in protected)
    delete = tuple(dict.fromkeys(aliases[a] for a in removed))
    return CleanupPlan(tuple(kept), delete, removed, protected)


def build_container_name(alias: str, token: str) -> str:
    """The build container's instance name: coi-build-<alias>-<token>, valid for Incus."""
    slug = re.sub(r"[^a-z0-9-]+", "-", alias.lower()).strip("-")[:40].strip("-") or "image"
    return f"coi-build-{slug}-{token}"

"""Pure decisions of network isolation: a container's address, its allowlist, its /etc/hosts.

The I/O side (coi/network/enforce.py) gathers the facts (addresses in use, what names resolve to)
and records the outcome on the instance as `user.coi.network.*` keys, so a later refresh
and the privileged helper work from the instance alone.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from coi.core import labels
from coi.network import nft

PREFIX = labels.NETWORK
ENTRIES_KEY = PREFIX + "allowed_domains"  # the entries as configured, space separated
RESOLVER_KEY = PREFIX + "resolver"  # "" for the host's own resolver
REFRESH_KEY = PREFIX + "refresh_minutes"
RESOLVED_KEY = PREFIX + "resolved"  # JSON {name: [addresses]}: the last good answers
ALLOW_KEY = PREFIX + "allow"  # what the rules allow: "ip" or "ip:port", space separated
INCUS_OUI = "10:66:6a"  # the prefix Incus gives the MACs it makes


class NoFreeAddress(Exception):
    """Every host address of the subnet is taken."""


def choose_address(gateway_cidr: str, taken: Iterable[str]) -> str:
    """The lowest host address of the bridge's subnet that is neither taken nor the bridge's."""
    iface = ipaddress.IPv4Interface(gateway_cidr)
    used = {str(iface.ip), *taken}
    for host in iface.network.hosts():
        if str(host) not in used:
            return str(host)
    raise NoFreeAddress(f"no free address left in {iface.network}")


def mac_from(random_bytes: bytes) -> str:
    """A MAC in Incus's own range from three random bytes (fixed before the first start)."""
    if len(random_bytes) != 3:
        raise ValueError("need three bytes")
    return INCUS_OUI + "".join(f":{b:02x}" for b in random_bytes)


@dataclass(frozen=True)
class Entry:
    """One configured allowlist entry: a name or an IPv4 address, maybe with a port."""

    host: str
    port: int | None = None

    @property
    def is_address(self) -> bool:
        try:
            ipaddress.IPv4Address(self.host)
        except ValueError:
            return False
        return True


def parse_entry(text: str) -> Entry:
    """`github.com`, `8.8.8.8` or `example.com:443` (validated by config already)."""
    host, sep, port = text.rpartition(":") if ":" in text else (text, "", "")
    return Entry(host.lower().rstrip("."), int(port) if sep else None)


def names(entries: Sequence[Entry]) -> list[str]:
    """The names to resolve, once each, in order."""
    return list(dict.fromkeys(e.host for e in entries if not e.is_address))


def merge_resolved(
    last: Mapping[str, Sequence[str]], fresh: Mapping[str, Sequence[str] | None]
) -> dict[str, list[str]]:
    """New answers replace old ones; a name whose lookup failed (None) keeps its last good."""
    merged: dict[str, list[str]] = {}
    for name, answer in fresh.items():
        chosen = answer if answer else last.get(name, [])
        merged[name] = sorted(set(chosen), key=ipaddress.IPv4Address)
    return merged


@dataclass(frozen=True)
class Allowed:
    """What an allowlist opens, and what it refused to open (with why)."""

    allows: tuple[nft.Allow, ...]
    refused: tuple[str, ...]


def allowed(entries: Sequence[Entry], resolved: Mapping[str, Sequence[str]]) -> Allowed:
    """The addresses and ports the rules open.

    An address written out is honoured unless no allowlist may open it (loopback,
    link-local and metadata, multicast). A name only opens public addresses: a name
    that resolves into a private or local range could otherwise open it by DNS alone.
    """
    allows: list[nft.Allow] = []
    refused: list[str] = []
    for entry in entries:
        if entry.is_address:
            if nft.never_allowed(entry.host):
                refused.append(f"{entry.host}: never allowed")
            else:
                allows.append(nft.Allow(entry.host, entry.port))
            continue
        for address in resolved.get(entry.host, []):
            if nft.blocked(address):
                refused.append(f"{entry.host} -> {address}: private or local address")
            else:
                allows.append(nft.Allow(address, entry.port))
    return Allowed(tuple(dict.fromkeys(allows)), tuple(refused))


def beyond_restricted(
    entries: Sequence[Entry], resolved: Mapping[str, Sequence[str]] | None = None
) -> tuple[str, ...]:
    """What an allowlist of entries opens that restricted mode blocks (empty: it only tightens).

    A name never counts whatever it resolves to: allowed() refuses a private or local answer
    at every resolution, the first and each refresh.
    """
    opened = allowed(entries, resolved or {}).allows
    return tuple(str(a) for a in opened if nft.blocked(a.address))


def hosts_file(container: str, resolved: Mapping[str, Sequence[str]]) -> str:
    """/etc/hosts for an allowlist container: the usual lines and each name's addresses."""
    lines = [
        "127.0.0.1\tlocalhost",
        f"127.0.1.1\t{container}",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "# Pinned by coi (allowlist mode): names resolved on the host;",
        "# `coi network refresh` updates them. Other names do not resolve.",
    ]
    for name in sorted(resolved):
        lines.extend(f"{address}\t{name}" for address in resolved[name])
    return "\n".join(lines) + "\n"


def policy_keys(entries: Sequence[str], resolver: str, refresh_minutes: int) -> dict[str, str]:
    """The instance keys that carry an allowlist policy from the config to the instance."""
    return {
        ENTRIES_KEY: " ".join(entries),
        RESOLVER_KEY: resolver,
        REFRESH_KEY: str(refresh_minutes),
    }


def state_keys(
    resolved: Mapping[str, Sequence[str]], allows: Sequence[nft.Allow]
) -> dict[str, str]:
    """The instance keys that record the last good answers and what the rules allow."""
    return {
        RESOLVED_KEY: json.dumps(dict(resolved), sort_keys=True),
        ALLOW_KEY: " ".join(str(a) for a in allows),
    }


def read_resolved(config: Mapping[str, str]) -> dict[str, list[str]]:
    """The last good answers recorded on an instance (empty when none or unreadable)."""
    try:
        data = json.loads(config.get(RESOLVED_KEY) or "{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): [str(a) for a in v] for k, v in data.items() if isinstance(v, list)}

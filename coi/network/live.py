"""Live approval: open or close a destination of a running allowlist container at once.

The change goes where every allowlist rule comes from: the instance's own entries
(`user.coi.network.allowed_domains`). Then the usual refresh resolves the names on the host,
records the answers, and has the root helper write the rules from the instance's record,
with the helper's own checks (no loopback, link-local or metadata address; a name opens
public addresses only). Packets of connections already open to a denied destination are
rejected too: coi's accept rules match every packet, not just the first.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from coi.core.errors import UsageError
from coi.network import enforce, policy

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")


def check_entry(text: str) -> str:
    """An allowlist entry (`name`, `1.2.3.4`, either with `:port`), normalised; else UsageError."""
    host, sep, port = text.rpartition(":") if ":" in text else (text, "", "")
    host = host.lower().rstrip(".")
    try:
        ipaddress.IPv4Address(host)
        is_host = True
    except ValueError:
        is_host = bool(_NAME.fullmatch(host)) and len(host) <= 253 and not host.isdigit()
    port_ok = not sep or (port.isdigit() and 1 <= int(port) <= 65535)
    if not (is_host and port_ok):
        raise UsageError(
            f"{text!r} is not a hostname, IPv4 address or host:port "
            '(e.g. "github.com", "198.51.100.7", "example.com:443")'
        )
    return f"{host}:{int(port)}" if sep else host


def entries_after(entries: Sequence[str], add: Sequence[str], remove: Sequence[str]) -> list[str]:
    """The allowlist after adding and removing entries (order kept, no duplicates)."""
    gone = set(remove)
    return [e for e in dict.fromkeys([*entries, *add]) if e not in gone]


def change(
    incus: IncusAPI, name: str, add: Sequence[str] = (), remove: Sequence[str] = ()
) -> enforce.Refreshed:
    """Add or remove allowlist entries of a coi container and put its rules in force now."""
    config = incus.instance(name).get("config") or {}
    if config.get(enforce.MODE_KEY) != "allowlist":
        mode = config.get(enforce.MODE_KEY) or "open"
        raise UsageError(f"{name} is in {mode} mode: allow and deny change allowlist containers")
    entries = config.get(policy.ENTRIES_KEY, "").split()
    missing = [e for e in remove if e not in entries]
    if missing:
        raise UsageError(f"{missing[0]} is not in {name}'s allowlist: {' '.join(entries) or '-'}")
    updated = entries_after(entries, add, remove)
    if updated != entries:
        incus.update_instance(name, {"config": {policy.ENTRIES_KEY: " ".join(updated)}})
    return enforce.refresh(incus, name)

"""Config value checks: each takes a value of the right kind and returns None when it is
fine, else one line "problem; fix"; and the amounts (CPUs, memory, sizes) they parse.

The schema (schema.py) names a check per key; validation.py runs them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from coi.core import durations

Check = Callable[[Any], str | None]

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_int(value: Any) -> bool:
    """An integer that is not a boolean."""
    # bool is a subclass of int; `persistent = 1` must not pass as a boolean or vice versa.
    return isinstance(value, int) and not isinstance(value, bool)


def one_of(*allowed: str) -> Check:
    """The value is one of allowed."""

    def check(value: Any) -> str | None:
        if value in allowed:
            return None
        return f"{value!r} is not one of {', '.join(allowed)}; use one of those"

    return check


def within(low: int, high: int | None = None) -> Check:
    """A whole number from low to high (no upper bound: None)."""

    def check(value: Any) -> str | None:
        if value >= low and (high is None or value <= high):
            return None
        bounds = f"from {low} to {high}" if high is not None else f"of {low} or more"
        return f"{value} is out of range; use a whole number {bounds}"

    return check


def matches(pattern: str, rule: str) -> Check:
    """A string that pattern matches whole; rule says what it allows."""
    regex = re.compile(pattern)

    def check(value: Any) -> str | None:
        return None if regex.fullmatch(value) else f"{value!r} is not valid; use {rule}"

    return check


def each(check: Check, *, non_empty: bool = False) -> Check:
    """Every item of a list passes check (and the list has one, with non_empty)."""

    def check_all(values: Any) -> str | None:
        if non_empty and not values:
            return "is empty; list at least one entry"
        return next((p for p in map(check, values) if p), None)

    return check_all


def relative(what: str) -> Check:
    """A relative path without '..'; what says where it points."""

    def check(value: Any) -> str | None:
        parts = PurePosixPath(value).parts
        if value and not value.startswith(("/", "~")) and ".." not in parts and parts:
            return None
        return f"{value!r} is not a relative path; use a path {what}, without '..'"

    return check


def protected_path(value: Any) -> str | None:
    """A path protect.py accepts for [security]."""
    from coi.boundary.protect import check_path  # lazy: only a [security] key needs it

    return check_path(value)


def _is_ip(value: str, version: int | None = None) -> bool:
    import ipaddress  # lazy: keeps `import coi.config` cheap

    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return version is None or address.version == version


def ip(value: Any) -> str | None:
    """An IPv4 or IPv6 address."""
    return None if _is_ip(value) else f"{value!r} is not an IP address; use one like 8.8.8.8"


def resolver(value: Any) -> str | None:
    """An IP address, or empty (the default resolver)."""
    return None if value == "" else ip(value)


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _is_host(value: str) -> bool:
    if _is_ip(value, 4):
        return True
    labels = value.split(".")
    # An all-digit last label would be a mistyped IPv4 address, never a real domain.
    return len(value) <= 253 and all(map(_LABEL.fullmatch, labels)) and not labels[-1].isdigit()


def allowed_entry(value: Any) -> str | None:
    """An allowlist entry: hostname, IPv4 address, either with :port."""
    host, sep, port = value.rpartition(":") if ":" in value else (value, "", "")
    port_ok = not sep or bool(re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535)
    if _is_host(host) and port_ok:
        return None
    return (
        f"{value!r} is not a hostname, IPv4 address or host:port; "
        'use entries like "github.com", "8.8.8.8" or "example.com:443" (port 1-65535)'
    )


_CPU_SET = re.compile(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*")
_SIZE = re.compile(r"([0-9]+)(B|bytes|[kMGTPE]B|[KMGTPE]iB)?")
# Incus's byte suffixes: https://linuxcontainers.org/incus/docs/main/reference/instance_units/
_UNITS = {"": 1, "B": 1, "bytes": 1, **{f"{p}B": 1000 ** (i + 1) for i, p in enumerate("kMGTPE")}}
_UNITS.update({f"{p}iB": 1024 ** (i + 1) for i, p in enumerate("KMGTPE")})
_MIN_MEMORY = 1024**2


def cpu_amount(value: Any) -> int | frozenset[int] | None:
    """A limits.cpu value as a count or a set of CPU numbers; None when malformed."""
    if is_int(value):
        return int(value)
    if not isinstance(value, str) or not _CPU_SET.fullmatch(value):
        return None
    if value.isdigit():
        return int(value)
    chosen: set[int] = set()
    for part in value.split(","):
        low, _, high = part.partition("-")
        if int(high or low) < int(low):
            return None
        chosen.update(range(int(low), int(high or low) + 1))
    return frozenset(chosen)


def memory_amount(value: Any) -> tuple[str, int] | None:
    """A limits.memory value as ("%", percent) or ("B", bytes); None when malformed."""
    if not isinstance(value, str):
        return None
    if value.endswith("%") and value[:-1].isdigit() and not value.startswith("0"):
        return ("%", int(value[:-1])) if int(value[:-1]) <= 100 else None
    found = _SIZE.fullmatch(value)
    return ("B", int(found[1]) * _UNITS[found[2] or ""]) if found else None


def cpu(value: Any) -> str | None:
    """A limits.cpu value (see cpu_amount)."""
    amount = cpu_amount(value)
    if amount is None or (isinstance(amount, int) and amount < 1):
        return f'{value!r} is not valid; use a count like 2 or CPUs like "0-1,3" (low-high)'
    return None


def memory(value: Any) -> str | None:
    """A limits.memory value of at least 1MiB, or a percentage."""
    amount = memory_amount(value)
    if amount is None:
        return f'{value!r} is not valid; use a size like "2GiB" or "512MiB", or "50%"'
    if amount[0] == "B" and amount[1] < _MIN_MEMORY:
        return f'{value!r} is too small for a container; use at least "1MiB", e.g. "512MiB"'
    return None


def duration(value: Any) -> str | None:
    """A duration like "20s", "2h" or "1h30m" (coi/core/durations.py)."""
    return None if durations.parse(value) else f"{value!r} is not valid; use {durations.RULE}"


def https_url(value: Any) -> str | None:
    """An https URL."""
    if re.fullmatch(r"https://[A-Za-z0-9.\-\[\]:]+(/\S*)?", value):
        return None
    return f"{value!r} is not an https URL (https://HOST[:PORT][/PATH])"


def https_or_empty(value: Any) -> str | None:
    """An https URL, or empty."""
    return https_url(value) if value else None


def env_name_or_empty(value: Any) -> str | None:
    """An environment variable name, or empty."""
    if not value or ENV_NAME.fullmatch(value):
        return None
    return f"{value!r} is not an environment variable name"


def forward_port(value: Any) -> str | None:
    """A port to forward: 1024-65535 (below are the host's own services' ports; `coi port
    add` maps one to a higher port)."""
    if value.isdigit() and 1024 <= int(value) <= 65535:
        return None
    return f'{value!r} is not a port from 1024 to 65535; use e.g. "3000"'


def non_empty(value: Any) -> str | None:
    """Not empty nor only blanks."""
    return None if value.strip() else "is empty; give a value or remove the key"


INCUS_NAME = matches(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "letters, digits, '_', '.' or '-'")
# Incus caps network names at 15 characters: they become Linux interface names.
NETWORK_NAME = matches(r"[a-z][a-z0-9-]{0,14}", "1-15 lowercase letters, digits or '-'")
REMOTE = matches(
    r"https://.+|[A-Za-z0-9][A-Za-z0-9_.-]{0,62}",
    'an address like "https://host:8443" or a name from `coi remote list`',
)
BASE = matches(
    r"([a-z][a-z0-9-]*:)?[a-z0-9][a-z0-9.-]*(/[A-Za-z0-9._-]+)+",
    'a release like "debian/12" or a remote image like "images:debian/12"',
)


# [sessions] and [checkpoints] sizes: a save from a hostile container is bounded by this
# cap on the host (issue 10, item 5): the stream, the file on disk and what is extracted.
_MIN_STATE = 1024**2


def size_bytes(value: Any) -> int | None:
    """A size (bytes as a number, or text like "512MiB") in bytes; None when malformed."""
    if is_int(value):
        return int(value)
    amount = memory_amount(value) if isinstance(value, str) else None
    return amount[1] if amount is not None and amount[0] == "B" else None


def state_size(value: Any) -> str | None:
    """A size of at least 1MiB (saved sessions, checkpoint copies)."""
    amount = size_bytes(value)
    if amount is None:
        return f'{value!r} is not valid; use a size like "512MiB" or "1GiB", or bytes'
    if amount < _MIN_STATE:
        return f'{value!r} is too small for a saved state; use at least "1MiB"'
    return None

"""Pending network requests as data: what a container was refused or asked for, minus what a
person decided.

Two sources feed the list, both per container and both influenced by the container:
blocked flows in its egress log (coi/network/egress.py: the destination address and port of
each refused new connection) and explicit requests (`coi-request HOST[:PORT] "why"` inside,
recorded by the session's broker: coi/network/pending_store.py). A person's decisions
(approve, reject) are a third file that only coi on the host writes; a decided destination
leaves the list. Everything here is pure, and everything the container could have chosen is
bounded in size and made inert before a terminal sees it (`inert`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

MAX_PENDING = 64  # per container: the newest kept, the rest counted as dropped
MAX_REASON = 200  # characters of a request's reason
MAX_HOST = 253
MAX_LINE = 2048  # a stored record longer than this is not read
MAX_STORE_BYTES = 256 * 1024  # what is read of a store file (its end: the newest records)
BLOCKED_RULES = ("private", "not-allowed")  # forward-chain refusals a person can open
ASKED, BLOCKED = "asked", "blocked"
APPROVED, REJECTED = "approved", "rejected"

_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
# ESC and CSI sequences are dropped whole, so no part of one is left to print as text.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|\x1b.?|\x9b[0-?]*[ -/]*[@-~]"
)


def inert(text: object, limit: int = MAX_REASON) -> str:
    """text safe to print on a terminal: escape sequences and every control, format (bidi
    overrides, zero-width) and unassigned character gone, whitespace runs one space, at most
    limit characters."""
    raw = _ESCAPES.sub("", str(text))
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in raw
        if ch.isspace() or unicodedata.category(ch)[0] not in ("C",)
    )
    return " ".join(kept.split())[:limit].rstrip()  # a cut may end on the space


def parse_dest(text: str) -> tuple[str, int | None]:
    """(host, port) from `name`, `1.2.3.4`, either with `:PORT`; ValueError for anything
    else (a host is an IPv4 address or a DNS name of letters, digits, `-`, `_` and dots)."""
    host, sep, port = text.rpartition(":") if ":" in text else (text, "", "")
    host = host.lower().rstrip(".")
    if sep and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{inert(text, 80)!r}: the port must be 1-65535")
    try:
        host = str(ipaddress.IPv4Address(host))
    except ValueError:
        if not (_NAME.fullmatch(host) and len(host) <= MAX_HOST and not host.isdigit()):
            raise ValueError(
                f"{inert(text, 80)!r} is not a hostname or IPv4 address, with an optional :PORT"
            ) from None
    return host, int(port) if sep else None


def dest_text(host: str, port: int | None) -> str:
    """`host` or `host:port`: also the allowlist entry an approval adds."""
    return host if port is None else f"{host}:{port}"


def request_id(host: str, port: int | None) -> str:
    """The stable id of a destination: the same in every listing, so the id a person read
    is the destination they approve (8 hex digits of a sha256)."""
    return hashlib.sha256(dest_text(host, port).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Pending:
    """One destination waiting for a person."""

    id: str
    host: str
    port: int | None
    kind: str  # blocked (the egress log saw it refused) or asked (coi-request)
    proto: str = ""
    rule: str = ""  # the rule that refused it (blocked)
    reason: str = ""  # the agent's words (asked), inert
    names: tuple[str, ...] = ()
    first: str = ""
    last: str = ""
    count: int = 1

    @property
    def dest(self) -> str:
        return dest_text(self.host, self.port)

    def as_json(self) -> dict[str, object]:
        """The entry for `--format json` (every string inert)."""
        return {
            "id": self.id,
            "dest": self.dest,
            "host": self.host,
            "port": self.port,
            "kind": self.kind,
            "proto": self.proto,
            "rule": self.rule,
            "reason": self.reason,
            "names": list(self.names),
            "first": self.first,
            "last": self.last,
            "count": self.count,
        }


@dataclass(frozen=True)
class Listing:
    """A container's pending requests, newest last, and how many older ones were dropped."""

    items: tuple[Pending, ...] = ()
    dropped: int = 0
    decided: dict[str, str] = field(default_factory=dict)  # id: approved|rejected


# -- records (one JSON object a line) ------------------------------------------------------


def request_record(
    seconds_stamp: str, host: str, port: int | None, reason: str
) -> dict[str, object]:
    """What the broker stores for one coi-request (the reason made inert and bounded)."""
    return {
        "time": seconds_stamp,
        "kind": "request",
        "host": host,
        "port": port,
        "reason": inert(reason),
    }


def decision_record(stamp: str, item_id: str, dest: str, verdict: str) -> dict[str, object]:
    """What coi stores when a person approves or rejects."""
    if verdict not in (APPROVED, REJECTED):
        raise ValueError(f"unknown decision {verdict!r}")
    return {"time": stamp, "kind": "decision", "id": item_id, "dest": dest, "verdict": verdict}


def render(records: Iterable[Mapping[str, object]]) -> str:
    """Records as the store's text."""
    return "".join(
        json.dumps(dict(r), separators=(",", ":"), sort_keys=True) + "\n" for r in records
    )


def parse(text: str) -> list[dict[str, object]]:
    """The records of a store's text: lines too long, not JSON or not an object are skipped
    (a partial first line, from reading only the end of a file, among them)."""
    found = []
    for line in text.splitlines():
        if len(line) > MAX_LINE:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            found.append(record)
    return found


def _port_of(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return None
    return value


def _host_of(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_dest(value)[0] if ":" not in value else None
    except ValueError:
        return None


# -- folding --------------------------------------------------------------------------------


def listing(
    flows: Iterable[Mapping[str, object]],
    requests: Iterable[Mapping[str, object]],
    decisions: Iterable[Mapping[str, object]],
    since: str = "",
    limit: int = MAX_PENDING,
) -> Listing:
    """The pending requests: blocked flows (forward refusals only: a person can open those)
    and explicit requests at or after `since` (an ISO stamp: the container's creation), by
    destination, minus every destination a decision at or after `since` names."""
    decided: dict[str, str] = {}
    for record in decisions:
        if record.get("kind") == "decision" and str(record.get("time", "")) >= since:
            verdict = record.get("verdict")
            if isinstance(record.get("id"), str) and verdict in (APPROVED, REJECTED):
                decided[str(record["id"])] = str(verdict)
    found: dict[str, Pending] = {}
    for item in _entries(flows, requests, since):
        if item.id in decided:
            continue
        old = found.pop(item.id, None)  # re-inserted: the dict's order is the newest last
        found[item.id] = item if old is None else _merge(old, item)
    items = list(found.values())
    kept = items[-limit:] if limit > 0 else []
    return Listing(tuple(kept), len(items) - len(kept), decided)


def _entries(
    flows: Iterable[Mapping[str, object]], requests: Iterable[Mapping[str, object]], since: str
) -> list[Pending]:
    out: list[tuple[str, Pending]] = []
    for record in flows:
        item = _from_flow(record)
        if item is not None and item.last >= since:
            out.append((item.last, item))
    for record in requests:
        item = _from_request(record)
        if item is not None and item.last >= since:
            out.append((item.last, item))
    out.sort(key=lambda pair: pair[0])  # stable: one source's order kept within a stamp
    return [item for _, item in out]


def _from_flow(record: Mapping[str, object]) -> Pending | None:
    if record.get("kind") != "flow" or record.get("verdict") != "blocked":
        return None
    rule = record.get("rule")
    if rule not in BLOCKED_RULES:
        return None
    try:
        host = str(ipaddress.IPv4Address(str(record.get("dst"))))
    except ValueError:
        return None
    port = _port_of(record.get("port"))
    names = record.get("names")
    shown = tuple(inert(n, MAX_HOST) for n in names[:4]) if isinstance(names, list) else ()
    stamp = inert(record.get("time", ""), 32)
    return Pending(
        request_id(host, port),
        host,
        port,
        BLOCKED,
        inert(record.get("proto", ""), 8),
        str(rule),
        "",
        shown,
        stamp,
        stamp,
    )


def _from_request(record: Mapping[str, object]) -> Pending | None:
    if record.get("kind") != "request":
        return None
    host = _host_of(record.get("host"))
    if host is None:
        return None
    port = record.get("port")
    if port is not None and _port_of(port) is None:
        return None
    port = _port_of(port)
    stamp = inert(record.get("time", ""), 32)
    reason = inert(record.get("reason", ""))
    return Pending(request_id(host, port), host, port, ASKED, "", "", reason, (), stamp, stamp)


def _merge(old: Pending, new: Pending) -> Pending:
    """One destination seen again: the first stamp kept, the latest reason and kind (an
    explicit request's reason is kept over a later blocked flow)."""
    keep = new if new.kind == ASKED or old.kind != ASKED else old
    return Pending(
        old.id,
        old.host,
        old.port,
        keep.kind,
        new.proto or old.proto,
        new.rule or old.rule,
        keep.reason,
        new.names or old.names,
        old.first,
        new.last,
        min(old.count + 1, 10**6),
    )


def find(items: Sequence[Pending], wanted: str) -> Pending | None:
    """The item whose id is exactly `wanted` (case folded), else None."""
    wanted = wanted.strip().lower()
    return next((i for i in items if i.id == wanted), None)


def keep_requests(
    records: Sequence[Mapping[str, object]], limit: int = MAX_PENDING
) -> list[dict[str, object]]:
    """The request store after adding: one record per destination (the newest), at most
    limit of them (the oldest go first)."""
    by_dest: dict[tuple[object, object], dict[str, object]] = {}
    for record in records:
        if record.get("kind") != "request":
            continue
        key = (record.get("host"), record.get("port"))
        by_dest.pop(key, None)
        by_dest[key] = dict(record)
    return list(by_dest.values())[-limit:] if limit > 0 else []

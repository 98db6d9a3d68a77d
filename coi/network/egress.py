"""The egress log as data: records, what a logged packet says, rotation, a learned allowlist.

How connections are seen (measured on this kernel, 6.18, nftables 1.0.6, with 10,000 TCP
connection attempts on the loopback; `bench/bench_egress.py` repeats it through a container):

- NFLOG (`log group N` in coi's own rules, read from a NETLINK_NETFILTER socket): every
  new connection, allowed AND blocked, with the rule that decided in its prefix; 10,000 of
  10,000 received, 0.08 s of reader CPU with JSON writing included. Chosen.
- conntrack events (NFNLGRP_CONNTRACK_NEW): a rejected connection is never confirmed, so
  it is never reported (0 events for 3 rejected attempts); 6,167 of 10,000 allowed ones
  arrived (the rest overflowed the socket), 0.12 s CPU. Misses exactly what a user asks for.
- `log prefix` to the kernel ring buffer: readable (dmesg, /dev/kmsg, 10,000 lines, 0.05 s
  CPU) but global to the host, shared with every user and overwritten (the buffer held 780
  of the 10,000 lines afterwards), and it floods the host's kernel log.
- `nft monitor trace`: works, but needs `meta nftrace` rules, prints several text lines
  per packet for every traced table on the host, and costs an nft process to parse.

Each container's log rules (coi/network/nft.py) send the first packet of each new
connection to its own NFLOG group, prefixed `allowed|blocked RULE`; one collector per
container (coi/network/nflog.py) turns them into the records below.

Stdlib only, with no coi imports: the privileged helper runs a root-owned copy of this file.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Iterable, Mapping, Sequence

LOG_MAX_BYTES = 4 * 1024 * 1024  # one file; one older file is kept beside it
KEEP = 1
PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
FLOW, DNS, LOST = "flow", "dns", "lost"


def log_name(container: str) -> str:
    """The log file's name in COI_HOME/logs."""
    return f"net-{container}.jsonl"


def rotated_name(container: str, index: int = 1) -> str:
    """The name of the index-th older file."""
    return f"{log_name(container)}.{index}"


def rotate_due(size: int, incoming: int, limit: int = LOG_MAX_BYTES) -> bool:
    """True when appending incoming bytes to a file of size would pass limit (a record
    never splits: an empty file takes any record)."""
    return size > 0 and size + incoming > limit


def stamp(seconds: float) -> str:
    """ISO 8601 UTC with milliseconds."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds * 1000) % 1000:03d}Z"


# -- what a logged packet says --------------------------------------------------------------


def packet_fields(payload: bytes) -> tuple[str, str, int | None]:
    """(protocol, destination address, destination port or None) of an IP packet."""
    if len(payload) >= 20 and payload[0] >> 4 == 4:
        header = (payload[0] & 0x0F) * 4
        proto = payload[9]
        daddr = str(ipaddress.IPv4Address(payload[16:20]))
        return PROTOS.get(proto, str(proto)), daddr, _port(payload, header, proto)
    if len(payload) >= 40 and payload[0] >> 4 == 6:
        proto = payload[6]
        daddr = str(ipaddress.IPv6Address(payload[24:40]))
        return PROTOS.get(proto, str(proto)), daddr, _port(payload, 40, proto)
    return "unknown", "", None


def _port(payload: bytes, offset: int, proto: int) -> int | None:
    if proto not in (6, 17) or len(payload) < offset + 4:
        return None
    return int(struct.unpack_from(">H", payload, offset + 2)[0])


def attempt(payload: bytes) -> tuple[object, ...]:
    """What identifies one connection attempt: protocol, ports and addresses (a SYN the
    kernel sends again after a reject has the same)."""
    if len(payload) >= 20 and payload[0] >> 4 == 4:
        header = (payload[0] & 0x0F) * 4
        return (payload[9], payload[12:20], payload[header : header + 4])
    return (payload[:40],)


class Repeats:
    """Which packets repeat an attempt seen within `window` seconds (at most `size` kept)."""

    def __init__(self, window: float = 10.0, size: int = 8192) -> None:
        self.window, self.size = window, size
        self.seen: dict[tuple[object, ...], float] = {}

    def repeated(self, key: tuple[object, ...], now: float) -> bool:
        """True when key was seen less than window seconds ago; records it either way."""
        last = self.seen.pop(key, None)
        self.seen[key] = now
        if len(self.seen) > self.size:
            del self.seen[next(iter(self.seen))]  # the oldest
        return last is not None and now - last < self.window


def verdict_of(prefix: str) -> tuple[str, str]:
    """(verdict, rule) from a log rule's prefix `allowed|blocked RULE`."""
    verdict, _, rule = prefix.strip("\0 ").partition(" ")
    return (verdict, rule) if verdict in ("allowed", "blocked") else ("unknown", prefix)


def dns_query(payload: bytes) -> str | None:
    """The name asked by a DNS query in an IPv4 UDP packet to port 53, else None."""
    if len(payload) < 20 or payload[0] >> 4 != 4 or payload[9] != 17:
        return None
    offset = (payload[0] & 0x0F) * 4 + 8 + 12  # UDP header, DNS header
    labels: list[str] = []
    while offset < len(payload):
        length = payload[offset]
        if length == 0:
            name = ".".join(labels).lower()
            return name or None
        if length > 63 or offset + 1 + length > len(payload):
            return None
        labels.append(payload[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    return None


def a_query(name: str, txid: int) -> bytes:
    """A DNS query for name's A records, recursion desired (RFC 1035)."""
    labels = [x.encode() for x in name.rstrip(".").split(".") if x]
    if not labels or any(len(x) > 63 for x in labels):
        raise ValueError(f"{name!r} is not a valid name")
    qname = b"".join(bytes([len(x)]) + x for x in labels) + b"\0"
    return struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)


def a_answers(packet: bytes, txid: int) -> list[str]:
    """The IPv4 addresses in an answer to a_query(txid) (empty for any other packet)."""
    try:
        rid, flags, qd, an, _, _ = struct.unpack_from(">HHHHHH", packet)
        if rid != txid or not flags & 0x8000 or flags & 0x020F:
            return []
        offset = 12
        for _ in range(qd):
            offset = _skip_name(packet, offset) + 4
        found = []
        for _ in range(an):
            offset = _skip_name(packet, offset)
            rtype, rclass, _ttl, length = struct.unpack_from(">HHIH", packet, offset)
            offset += 10
            if rtype == 1 and rclass == 1 and length == 4:
                found.append(str(ipaddress.IPv4Address(packet[offset : offset + 4])))
            offset += length
    except (struct.error, IndexError):
        return []
    return sorted(set(found), key=ipaddress.IPv4Address)


def _skip_name(packet: bytes, offset: int) -> int:
    # The same walk as coi/network/dns.py's: this file ships in the stdlib-only root helper,
    # which cannot import that one.
    while True:
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def flow(
    seconds: float,
    container: str,
    payload: bytes,
    prefix: str,
    names: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, object]:
    """The record of one logged packet; names maps an address to the names it answers."""
    proto, daddr, port = packet_fields(payload)
    verdict, rule = verdict_of(prefix)
    record: dict[str, object] = {
        "time": stamp(seconds),
        "kind": FLOW,
        "container": container,
        "proto": proto,
        "dst": daddr,
        "port": port,
        "verdict": verdict,
        "rule": rule,
    }
    found = (names or {}).get(daddr)
    if found:
        record["names"] = sorted(found)
    return record


def dns(
    seconds: float, container: str, name: str, answers: Sequence[str], source: str
) -> dict[str, object]:
    """The record of a name and its answers (source: allowlist, or query seen from inside)."""
    return {
        "time": stamp(seconds),
        "kind": DNS,
        "container": container,
        "name": name,
        "answers": list(answers),
        "source": source,
    }


def lost(seconds: float, container: str, count: int | None = None) -> dict[str, object]:
    """The record of events the kernel dropped (the reader fell behind; None: how many is
    not known, the kernel only says some were)."""
    return {"time": stamp(seconds), "kind": LOST, "container": container, "count": count}


def names_by_address(resolved: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """{address: [names]} from {name: [addresses]}."""
    found: dict[str, list[str]] = {}
    for name, addresses in resolved.items():
        for address in addresses:
            found.setdefault(address, []).append(name)
    return {a: sorted(set(n)) for a, n in found.items()}


# -- reading ----------------------------------------------------------------------------------


def wanted(record: Mapping[str, object], denied: bool) -> bool:
    """True when `coi network log` shows the record (--denied: blocked flows only)."""
    return not denied or (record.get("kind") == FLOW and record.get("verdict") == "blocked")


def line(record: Mapping[str, object]) -> str:
    """One human line for a record."""
    kind = record.get("kind")
    when = str(record.get("time", ""))
    if kind == FLOW:
        port = record.get("port")
        dest = f"{record.get('dst')}:{port}" if port is not None else str(record.get("dst"))
        names = record.get("names")
        named = f" ({', '.join(str(n) for n in names)})" if isinstance(names, list) else ""
        return (
            f"{when}  {record.get('verdict')!s:7}  {record.get('proto')}  {dest}{named}"
            f"  [{record.get('rule')}]"
        )
    if kind == DNS:
        answers = record.get("answers")
        text = " ".join(str(a) for a in answers) if isinstance(answers, list) else ""
        return f"{when}  dns      {record.get('name')} -> {text or '-'}  [{record.get('source')}]"
    if kind == LOST:
        count = record.get("count")
        return f"{when}  lost     {count or 'some'} events (the reader fell behind)"
    return f"{when}  {kind}"


# -- learning ---------------------------------------------------------------------------------


def propose(records: Iterable[Mapping[str, object]]) -> list[str]:
    """allowed_domains for what a learning run reached: each destination by a name that
    resolved to it (every such name: a CDN's names share addresses), else by its address;
    only allowed flows count, and the DHCP and DNS traffic to the host does not."""
    resolved: dict[str, set[str]] = {}
    reached: dict[str, None] = {}
    for record in records:
        if record.get("kind") == DNS:
            for address in record.get("answers") or []:  # type: ignore[attr-defined]
                resolved.setdefault(str(address), set()).add(str(record.get("name")))
        elif (
            record.get("kind") == FLOW
            and record.get("verdict") == "allowed"
            and record.get("rule") not in ("dhcp", "dns")
            and record.get("dst")
        ):
            reached[str(record["dst"])] = None
    proposal: dict[str, None] = {}
    for address in reached:
        for entry in sorted(resolved.get(address) or [address]):
            proposal[entry] = None
    return sorted(proposal, key=_entry_key)


def _entry_key(entry: str) -> tuple[int, str]:
    try:
        ipaddress.IPv4Address(entry)
    except ValueError:
        return (0, entry)
    return (1, entry)

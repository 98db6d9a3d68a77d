"""Resolve allowlist names on the host: through the host's resolver or a named DNS server.

A named server gets a plain A query (RFC 1035) over UDP, retried over TCP when the answer
is truncated. The wire format is built and parsed by pure functions.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct

from coi.core.errors import CoiError

TIMEOUT = 2.0
TYPE_A, CLASS_IN = 1, 1


class ResolveError(CoiError):
    """A name did not resolve (no answer, an error code, or no server)."""


def query(name: str, txid: int) -> bytes:
    """An A query for name with recursion desired."""
    labels = [p for p in name.rstrip(".").split(".") if p]
    if not labels or any(len(p.encode()) > 63 for p in labels):
        raise ResolveError(f"{name!r} is not a valid name")
    qname = b"".join(bytes([len(p.encode())]) + p.encode() for p in labels) + b"\0"
    return struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)


def _skip_name(packet: bytes, offset: int) -> int:
    while True:
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def answers(packet: bytes, txid: int) -> tuple[list[str], bool]:
    """(IPv4 addresses of the A records, truncated?) from a response to query(txid)."""
    try:
        rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", packet[:12])
        if rid != txid or not flags & 0x8000:
            raise ResolveError("the DNS answer does not match the query")
        if flags & 0x0200:
            return [], True
        if flags & 0x000F:
            raise ResolveError(f"DNS error code {flags & 0x000F}")
        offset = 12
        for _ in range(qd):
            offset = _skip_name(packet, offset) + 4
        found = []
        for _ in range(an):
            offset = _skip_name(packet, offset)
            rtype, rclass, _ttl, length = struct.unpack(">HHIH", packet[offset : offset + 10])
            offset += 10
            if rtype == TYPE_A and rclass == CLASS_IN and length == 4:
                found.append(str(ipaddress.IPv4Address(packet[offset : offset + 4])))
            offset += length
    except (struct.error, IndexError) as exc:
        raise ResolveError("malformed DNS answer") from exc
    return found, False


def resolve(name: str, server: str = "", timeout: float = TIMEOUT) -> list[str]:
    """The IPv4 addresses of name, through server (or the host's resolver when "")."""
    if not server:
        try:
            infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            raise ResolveError(f"{name} does not resolve: {exc}") from exc
        return sorted({str(i[4][0]) for i in infos}, key=ipaddress.IPv4Address)
    txid = random.randrange(1 << 16)
    packet = query(name, txid)
    try:
        found, truncated = answers(_udp(server, packet, timeout), txid)
        if truncated:
            found, _ = answers(_tcp(server, packet, timeout), txid)
    except OSError as exc:
        raise ResolveError(f"{name}: no answer from {server}: {exc}") from exc
    if not found:
        raise ResolveError(f"{name}: {server} knows no IPv4 address for it")
    return sorted(set(found), key=ipaddress.IPv4Address)


def _udp(server: str, packet: bytes, timeout: float) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, 53))
        return sock.recv(4096)


def _tcp(server: str, packet: bytes, timeout: float) -> bytes:
    with socket.create_connection((server, 53), timeout=timeout) as sock:
        sock.sendall(struct.pack(">H", len(packet)) + packet)
        size = struct.unpack(">H", _read(sock, 2))[0]
        return _read(sock, size)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data

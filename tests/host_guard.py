"""Unit and property tests stay off the host: no network, no nft, sudo or incus.

tests/conftest.py installs the guard around each unit and property test. A socket
connects only to the loopback, to a Unix socket under the test's own folders, or to a
missing one (the connect fails at once, as INCUS_SOCKET's does outside integration
tests); a name other than localhost is not resolved; nft, sudo and incus do not run,
whether the test's process starts them (by name or by path) or a program it started
looks them up on PATH, where a stub that says why and exits 97 comes first.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

STUBBED = ("nft", "sudo", "incus")
REACHED_LOG = "TESTS_REACHED_LOG"  # where a stub notes that it ran (not COI_*: isolated_home)


class ReachedOut(Exception):
    """A unit or property test reached for the network, nft, sudo or Incus."""


class Attempts:
    """What a test tried: refused in its process, or run by a stub in a child."""

    def __init__(self, log: Path) -> None:
        self.refused: list[str] = []
        self.log = log

    def refuse(self, what: str) -> ReachedOut:
        """Note an attempt; the error to raise where it happened."""
        self.refused.append(what)
        return ReachedOut(f"unit tests must not reach the host: {what}")

    def all(self) -> list[str]:
        ran = self.log.read_text().splitlines() if self.log.exists() else []
        return [*self.refused, *(f"ran {line}" for line in ran)]

    def clear(self) -> None:
        """Forget what was tried (a test of the guard itself)."""
        self.refused.clear()
        self.log.unlink(missing_ok=True)


def make_stubs(folder: Path) -> Path:
    """Stand-ins for nft, sudo and incus in folder: each says why, notes itself, exits 97."""
    for name in STUBBED:
        stub = folder / name
        stub.write_text(
            "#!/bin/sh\n"
            f'echo "unit tests must not run {name}" >&2\n'
            f'[ -n "${REACHED_LOG}" ] && echo "{name} $*" >> "${REACHED_LOG}"\n'
            "exit 97\n"
        )
        stub.chmod(0o755)
    return folder


def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stubs: Path) -> Attempts:
    """Guard sockets, name lookups and programs until monkeypatch undoes it."""
    attempts = Attempts(tmp_path / "reached-out.log")
    _guard_sockets(monkeypatch, tmp_path, attempts.refuse)
    _guard_programs(monkeypatch, tmp_path, attempts.refuse)
    monkeypatch.setenv("PATH", f"{stubs}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv(REACHED_LOG, str(attempts.log))
    return attempts


Refuse = Callable[[str], ReachedOut]


def _guard_sockets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, refuse: Refuse) -> None:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sendto, real_getaddrinfo = socket.socket.sendto, socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if not _allowed(sock.family, address, tmp_path):
            sock.close()  # left open, it would warn in whichever test collects it
            raise refuse(f"connect to {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *rest: Any) -> int:
        check(self, rest[-1])  # sendto(data, address) or sendto(data, flags, address)
        return real_sendto(self, data, *rest)

    def getaddrinfo(host: Any, *rest: Any, **kw: Any) -> Any:
        if not _asks_no_one(host):
            raise refuse(f"resolve {host!r}")
        return real_getaddrinfo(host, *rest, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _allowed(family: int, address: Any, tmp_path: Path) -> bool:
    """The loopback, or a Unix socket that is missing (the connect fails at once, as
    INCUS_SOCKET's does), under tmp_path or under the test's own COI_HOME (a test may
    move it to a short folder: a socket path holds 107 bytes)."""
    if family == socket.AF_UNIX:
        path = os.fsdecode(address)
        if not path or path.startswith("\0"):  # an abstract socket: some host service's
            return False
        where = Path(os.path.abspath(path))
        ours = [tmp_path, Path(os.environ.get("COI_HOME") or tmp_path)]
        return not os.path.lexists(where) or any(where.is_relative_to(d) for d in ours)
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        host = os.fsdecode(address[0]) if isinstance(address[0], bytes) else str(address[0])
        if host == "localhost":
            return True
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False  # a name: connect would resolve it
        mapped = getattr(ip, "ipv4_mapped", None)
        return ip.is_loopback or (mapped is not None and mapped.is_loopback)
    return False


def _asks_no_one(host: Any) -> bool:
    """Whether getaddrinfo answers host without asking a name server: None, localhost,
    or a literal address (any: that is how a connect to it begins, and connect judges)."""
    if host is None:
        return True
    name = os.fsdecode(host) if isinstance(host, bytes) else str(host)
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    return True


def _guard_programs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, refuse: Refuse) -> None:
    real_init = subprocess.Popen.__init__

    def init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> None:
        program = _program(args, kw.get("executable"), bool(kw.get("shell")))
        if program is not None and os.path.basename(program) in STUBBED:
            where = Path(os.path.abspath(program))
            if not where.is_relative_to(tmp_path):  # a test's own stand-in may run
                raise refuse(f"run {program}")
        real_init(self, args, *rest, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", init)


def _program(args: Any, executable: Any, shell: bool) -> str | None:
    """The program a Popen would start (the first word of a shell command)."""
    if executable is not None:
        return os.fsdecode(executable)
    if isinstance(args, str | bytes | os.PathLike):
        line = os.fsdecode(args)
        if not shell:
            return line
        try:
            words = shlex.split(line)
        except ValueError:
            return None
        return words[0] if words else None
    first = next(iter(args), None)
    return None if first is None else os.fsdecode(first)

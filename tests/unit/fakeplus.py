"""What the command and session tests need beyond tests/fakes.py, kept apart from it.

`FakePlus` is the one fake Incus (FakeIncus) with exec answers per program, images
given as tarballs and a record of what was published; `install` makes every connection
coi opens in a test this one fake; `coi` runs the command line through its one error
boundary (coi.commands.cli.main), as a user does.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from coi.commands.cli import main
from coi.incus.adapter import ExecResult
from coi.incus.api import Json
from tests.fakes import FakeIncus

NO_HELPER = Path("/nonexistent/coi-helper")  # a root helper this host does not have
Answer = Callable[[str, list[str], dict[str, Any]], ExecResult]


@dataclass
class FakePlus(FakeIncus):
    """FakeIncus, also keeping each publish (an image of the container, fingerprint
    fp-NAME); its image listing carries each image's aliases, as Incus's does, and an
    image given as a tarball exports those bytes."""

    published: list[Json] = field(default_factory=list)
    answers: dict[str, Answer] = field(default_factory=dict)  # program -> its answer inside
    connected: list[dict[str, Any]] = field(default_factory=list)  # each connect's arguments
    tarballs: dict[str, bytes] = field(default_factory=dict)  # fingerprint -> what export writes

    def __post_init__(self) -> None:
        self.runs = self._answer

    def _answer(self, name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
        """What a command inside answers: the answer given for its program (the word after
        `runuser -u USER --` when it runs as a user), else success with no output."""
        words = argv[argv.index("--") + 1 :] if argv[:1] == ["runuser"] and "--" in argv else argv
        answer = self.answers.get(words[0] if words else "")
        return ExecResult(0, "", "") if answer is None else answer(name, words, options)

    def state(self, name: str) -> Json:
        """A running instance has an address on eth0 (DHCP done), as Incus reports it."""
        found = super().state(name)
        if found["status"] == "Running":
            slot = sorted(self.instances_by_name).index(name) + 2
            address = {"family": "inet", "address": f"10.99.0.{slot}"}
            found["network"] = {"eth0": {"addresses": [address]}}
        return found

    def add_tarball(
        self, alias: str | None, data: bytes, properties: Mapping[str, str] | None = None
    ) -> str:
        """An image whose export is `data` (its fingerprint is data's sha256)."""
        fingerprint = hashlib.sha256(data).hexdigest()
        self.tarballs[fingerprint] = data
        return self.add_image(alias, properties, fingerprint=fingerprint)

    def images(self) -> list[Json]:
        return [self.image(fingerprint) for fingerprint in self.images_by_fingerprint]

    def export_image(self, fingerprint: str, out: BinaryIO) -> str:
        if fingerprint not in self.tarballs:
            return super().export_image(fingerprint, out)
        out.write(self.tarballs[fingerprint])
        return "unified"

    def import_image_file(self, tarball: Path, properties: Mapping[str, str]) -> str:
        return self.add_tarball(None, tarball.read_bytes(), properties)

    def publish_image(self, body: Json, what: str = "publishing an image") -> Json:
        source = body["source"]["name"]
        self._record(source)
        self.published.append(copy.deepcopy(body))
        fingerprint = self.add_image(None, body.get("properties"), fingerprint=f"fp-{source}")
        return {"metadata": {"fingerprint": fingerprint}}


def state_tar(state_dir: str, files: Mapping[str, bytes]) -> bytes:
    """A tar of a tool's state folder as a container sends it: state_dir/PATH -> bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        folder = tarfile.TarInfo(state_dir)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(folder)
        for path, data in files.items():
            info = tarfile.TarInfo(f"{state_dir}/{path}")
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_answer(data: bytes) -> Answer:
    """The answer of `tar -c` inside: data, streamed to whoever reads the raw stdout."""

    def answer(name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
        if options.get("raw_stdout") is not None:
            options["raw_stdout"](data)
        return ExecResult(0, "", "")

    return answer


class Setups:
    """Answers a setup exec (`sh -c SCRIPT` with an archive on stdin): keeps the files of
    each archive it was sent, in `archives`."""

    def __init__(self) -> None:
        self.archives: list[dict[str, bytes]] = []

    def __call__(self, name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
        stdin = options.get("stdin")
        if stdin is not None:
            data = stdin if isinstance(stdin, bytes) else stdin.read()
            self.archives.append(members(data))
        return ExecResult(0, "", "")


def members(data: bytes) -> dict[str, bytes]:
    """Every member of the archives in data, one after the other (as `tar -i` reads
    them): path -> its bytes (b"" for a folder)."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", ignore_zeros=True) as archive:
        for member in archive.getmembers():
            extracted = archive.extractfile(member) if member.isfile() else None
            found[member.name] = extracted.read() if extracted else b""
    return found


@dataclass
class RootHelper:
    """Stands in for coi's root network helper (coi/network/nft_cli.py: the only code that
    runs nft) and for the host's resolver: rules are kept per container comment
    (`coi:PROJECT/NAME`), names resolve from `dns`. Every helper command is in `ran`."""

    dns: dict[str, list[str]] = field(default_factory=dict)
    rules: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    ran: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, incus: Any, *args: str) -> Any:
        self.ran.append(args)
        verb, rest = args[0], args[1:]
        if verb == "apply":
            record = incus.instance(rest[1])["config"]
            allows = record.get("user.coi.network.allow", "")
            self.rules[f"coi:{rest[0]}/{rest[1]}"] = [f"accept {allows}".strip()]
            return {"rules": self.rules[f"coi:{rest[0]}/{rest[1]}"]}
        if verb == "remove":
            self.rules.pop(f"coi:{rest[0]}/{rest[1]}", None)
            return {}
        if verb == "list":
            return {"rules": dict(self.rules), "counts": dict(self.counts)}
        if verb == "orphans":
            gone = [c for c in self.rules if not incus.has_instance(c.rpartition("/")[2])]
            for comment in gone:
                del self.rules[comment]
            return {"removed": [c.removeprefix("coi:") for c in gone]}
        return {}  # heal: nothing lost its rules

    def resolve(self, name: str, server: str = "", timeout: float = 0) -> list[str]:
        from coi.network.dns import ResolveError

        if name not in self.dns:
            raise ResolveError(f"{name} does not resolve")
        return list(self.dns[name])

    def install(self, monkeypatch: pytest.MonkeyPatch) -> RootHelper:
        """coi may change network rules now, through this stand-in."""
        from coi.network import enforce

        monkeypatch.setattr(enforce, "can_apply", lambda: True)
        monkeypatch.setattr(enforce, "privileged", self.run)
        monkeypatch.setattr(enforce, "resolve", self.resolve)
        return self


@dataclass
class ViewHelper:
    """Stands in for coi's view helper (coi-view, which mounts a workspace's locked view
    as root): a view is a folder under `root` standing for the mount; `views` maps each
    staged instance to its workspace and protected list. Every helper command is in `ran`."""

    root: Path
    views: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    ran: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, *args: str) -> Any:
        self.ran.append(args)
        verb, rest = args[0], args[1:]
        if verb == "stage":
            self.views[rest[0]] = (rest[1], tuple(rest[2:]))
            (self.root / rest[0]).mkdir(parents=True, exist_ok=True)
            return {"view": str(self.root / rest[0])}
        if verb == "release":
            self.views.pop(rest[0], None)
            with contextlib.suppress(FileNotFoundError):
                (self.root / rest[0]).rmdir()
            return {}
        return {"made": [], "mounted": []}  # held: nothing mounted in the workspace

    def install(self, monkeypatch: pytest.MonkeyPatch) -> ViewHelper:
        """coi may build locked views now, through this stand-in."""
        from coi.boundary import protect, protect_host

        monkeypatch.setattr(protect, "VIEW_ROOT", self.root)
        monkeypatch.setattr(protect_host, "RECORDS", self.root.parent / "records")
        monkeypatch.setattr(protect_host, "can_stage", lambda: True)
        monkeypatch.setattr(protect_host, "_by_helper", lambda: True)
        monkeypatch.setattr(protect_host, "through_helper", self.run)
        return self


@contextlib.contextmanager
def sessions_ended(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What sessions opened in a test hold in this process ends with it: the profiles
    made current (executor.prepare) are forgotten, the watch locks taken are let go and
    the credential brokers started (processes of their own) are stopped."""
    from coi.broker import process
    from coi.launch import executor
    from coi.sessions import watch

    monkeypatch.setattr(executor, "_prepared", set())
    before = set(watch._HELD)  # changed in place: finish.py holds the same dicts
    children = set(process._children)
    try:
        yield
    finally:
        for name in process.running():  # this test's COI_HOME: its own brokers only
            process.stop(name)
        for pid in set(process._children) - children:  # one that died after the stops
            with contextlib.suppress(subprocess.TimeoutExpired):
                process._children[pid].wait(timeout=10)
                process._children.pop(pid)
        for name in set(watch._HELD) - before:
            watch._HELD.pop(name).close()
            watch._HELD_FD.pop(name, None)


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeIncus) -> FakeIncus:
    """Every Incus connection coi opens during the test is `fake` (whatever project,
    endpoint or remote it names): the one place connections are made is patched. The
    host's privileged sides are off: coi may neither change network rules (nft) nor
    build locked views (mounts), as a user without coi's helpers; the host maps this
    user's uid into containers (the /etc/subuid line `coi setup` writes), whoever runs the
    tests."""
    import os

    from coi.boundary import idmap, protect_host
    from coi.incus import adapter
    from coi.network import enforce

    def connect(*args: Any, **kwargs: Any) -> FakeIncus:
        if isinstance(fake, FakePlus):
            fake.connected.append(kwargs)
        return fake

    monkeypatch.setattr(adapter, "connect", connect)
    monkeypatch.setattr(enforce, "can_apply", lambda: False)
    monkeypatch.setattr(enforce, "HELPER", NO_HELPER)  # whatever this host has installed
    monkeypatch.setattr(protect_host, "can_stage", lambda: False)
    monkeypatch.setattr(protect_host, "VIEW_HELPER", NO_HELPER)
    monkeypatch.setattr(idmap, "subid_lines", lambda: (f"root:{os.getuid()}:1",))
    return fake


def coi(argv: Sequence[str]) -> int:
    """Run `coi ARGV` through the CLI's error boundary; its exit code."""
    return main(list(argv))


def one_error(err: str) -> str:
    """The single `coi: error:` line stderr holds (fails if there is none, several, or a
    traceback)."""
    lines = [line for line in err.splitlines() if line.startswith("coi: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]

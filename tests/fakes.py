"""The one fake Incus of the unit and property tests: an in-memory daemon that keeps
instances, profiles, images, files and snapshots in dicts, and answers `execute` through
a function the test gives. It implements coi.incus.api.IncusAPI (mypy checks this file),
so code under test takes it where it takes the real adapter.

Integration tests never use it: they talk to a real daemon.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from coi.core.errors import NotFound
from coi.incus.adapter import Endpoint, ExecResult
from coi.incus.api import IncusAPI, Json

Runner = Callable[[str, list[str], dict[str, Any]], ExecResult]


def _ok(name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
    return ExecResult(0, "", "")


@dataclass
class FakeIncus(IncusAPI):
    """An Incus daemon in memory. `runs` answers execute (name, argv, keyword options);
    every command is recorded in `commands`, every push in `files`."""

    instances_by_name: dict[str, Json] = field(default_factory=dict)
    profiles: dict[str, Json] = field(default_factory=dict)
    images_by_fingerprint: dict[str, Json] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> fingerprint
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    snapshots_by_name: dict[str, list[str]] = field(default_factory=dict)
    runs: Runner = _ok
    project: str = "proj"
    endpoint: Endpoint = field(default_factory=lambda: Endpoint("/fake/unix.socket"))
    commands: list[list[str]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)

    # -- instances ----------------------------------------------------------------------

    def add_instance(
        self, name: str, config: Mapping[str, str] | None = None, status: str = "Running"
    ) -> Json:
        """Put an instance in the daemon (a test's setup); returns its record."""
        record: Json = {
            "name": name,
            "status": status,
            "config": dict(config or {}),
            "devices": {},
            "profiles": ["coi-base"],
        }
        self.instances_by_name[name] = record
        return record

    def _record(self, name: str) -> Json:
        if name not in self.instances_by_name:
            raise NotFound(f"instance {name} not found")
        return self.instances_by_name[name]

    def instance(self, name: str) -> Json:
        return copy.deepcopy(self._record(name))

    def instances(self) -> list[Json]:
        return [copy.deepcopy(r) for r in self.instances_by_name.values()]

    def instance_names(self) -> list[str]:
        return list(self.instances_by_name)

    def create_instance(self, body: Json) -> None:
        record = self.add_instance(body["name"], body.get("config"), status="Stopped")
        record["devices"] = dict(body.get("devices") or {})
        record["profiles"] = list(body.get("profiles") or [])

    def set_state(self, name: str, action: str, *, force: bool = False, timeout: int = -1) -> None:
        statuses = {
            "start": "Running",
            "stop": "Stopped",
            "restart": "Running",
            "unfreeze": "Running",
        }
        self._record(name)["status"] = statuses.get(action, "Frozen")

    def state(self, name: str) -> Json:
        return {"status": self._record(name)["status"], "network": {}}

    def delete_instance(self, name: str, *, force: bool = False) -> None:
        self._record(name)
        del self.instances_by_name[name]

    def update_instance(self, name: str, patch: Json) -> None:
        record = self._record(name)
        for key in ("config", "devices"):
            record[key].update(patch.get(key) or {})

    def remove_devices(self, name: str, devices: Sequence[str]) -> None:
        for device in devices:
            self._record(name)["devices"].pop(device, None)

    # -- snapshots ----------------------------------------------------------------------

    def snapshots(self, name: str) -> list[Json]:
        return [{"name": s} for s in self.snapshots_by_name.get(name, [])]

    def create_snapshot(self, name: str, snapshot: str) -> None:
        self.snapshots_by_name.setdefault(name, []).append(snapshot)

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        if snapshot not in self.snapshots_by_name.get(name, []):
            raise NotFound(f"snapshot {name}/{snapshot} not found")

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        self.snapshots_by_name.get(name, []).remove(snapshot)

    # -- commands and files -------------------------------------------------------------

    def execute(
        self,
        name: str,
        argv: Sequence[str],
        *,
        user: int | None = None,
        group: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: BinaryIO | bytes | None = None,
        on_stdout: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
        raw_stdout: Callable[[bytes], object] | None = None,
        raw_stderr: Callable[[bytes], object] | None = None,
        idempotent: bool = False,
    ) -> ExecResult:
        options: dict[str, Any] = {"user": user, "env": env, "cwd": cwd, "stdin": stdin}
        options.update(raw_stdout=raw_stdout, raw_stderr=raw_stderr)
        self.commands.append(list(argv))
        return self.runs(name, list(argv), options)

    def execute_interactive(
        self,
        name: str,
        argv: Sequence[str],
        *,
        user: int | None = None,
        group: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> int:
        return self.execute(name, argv, user=user, group=group, env=env, cwd=cwd).exit_code

    def channel(self) -> Any:
        raise NotImplementedError("the fake has no websocket channel")

    def push_file(
        self, name: str, path: str, content: bytes, *, uid: int = 0, gid: int = 0, mode: int = 0o644
    ) -> None:
        self.files[(name, path)] = content

    def pull_file(self, name: str, path: str) -> bytes:
        if (name, path) not in self.files:
            raise NotFound(f"{path} not found in {name}")
        return self.files[(name, path)]

    def pull_stream(self, name: str, path: str, sink: Callable[[bytes], object]) -> None:
        data = self.pull_file(name, path)
        for start in range(0, len(data), 65536):
            sink(data[start : start + 65536])

    # -- images and profiles ------------------------------------------------------------

    def image_alias(self, alias: str) -> Json | None:
        found = self.aliases.get(alias)
        return None if found is None else {"name": alias, "target": found}

    def images(self) -> list[Json]:
        return [copy.deepcopy(i) for i in self.images_by_fingerprint.values()]

    def image(self, fingerprint: str) -> Json:
        if fingerprint not in self.images_by_fingerprint:
            raise NotFound(f"image {fingerprint} not found")
        record = copy.deepcopy(self.images_by_fingerprint[fingerprint])
        record["aliases"] = [{"name": a} for a, f in self.aliases.items() if f == fingerprint]
        return record

    def add_image(
        self,
        alias: str | None,
        properties: Mapping[str, str] | None = None,
        *,
        fingerprint: str = "",
        created_at: str = "",
    ) -> str:
        """Put an image in the daemon, under alias if given (a test's setup); returns its
        fingerprint (made from the alias unless given)."""
        fingerprint = fingerprint or hashlib.sha256(str(alias).encode()).hexdigest()
        record = {"fingerprint": fingerprint, "properties": dict(properties or {})}
        self.images_by_fingerprint[fingerprint] = {**record, "created_at": created_at}
        if alias is not None:
            self.aliases[alias] = fingerprint
        return fingerprint

    def import_image(self, metadata: Path, rootfs: Path, properties: Mapping[str, str]) -> str:
        return self.add_image(metadata.name, properties)

    def set_alias(self, alias: str, fingerprint: str, description: str = "") -> None:
        self.aliases[alias] = fingerprint

    def delete_image(self, fingerprint: str) -> None:
        self.images_by_fingerprint.pop(fingerprint, None)
        self.aliases = {a: f for a, f in self.aliases.items() if f != fingerprint}

    def export_image(self, fingerprint: str, out: BinaryIO) -> str:
        out.write(fingerprint.encode())
        return "unified"

    def import_image_file(self, tarball: Path, properties: Mapping[str, str]) -> str:
        return self.add_image(tarball.name, properties)

    def profile(self, name: str) -> Json | None:
        found = self.profiles.get(name)
        return None if found is None else copy.deepcopy(found)

    def put_profile(self, name: str, body: Json) -> None:
        self.profiles[name] = copy.deepcopy(body)

    def delete_profile(self, name: str) -> None:
        self.profiles.pop(name, None)

    # -- the REST surface -----------------------------------------------------------------

    def get(self, path: str, what: str = "", **params: Any) -> Any:
        found = self.find(path)
        if found is None:
            raise NotFound(f"{path} not found")
        return found

    def call(self, method: str, path: str, body: Any = None, what: str = "", **kwargs: Any) -> Any:
        self.calls.append((method, path))
        return {}

    def exists(self, path: str) -> bool:
        return self.find(path) is not None

    def server(self) -> Json:
        return {"environment": {"server_version": "6.0.4", "storage": "btrfs"}, "config": {}}

    def names(self, collection: str) -> list[str]:
        tables: dict[str, Mapping[str, Any]] = {
            "instances": self.instances_by_name,
            "profiles": self.profiles,
        }
        return list(tables.get(collection, {}))

    def find(self, path: str) -> Json | None:
        kind, _, name = path.partition("/")
        if kind == "instances" and name in self.instances_by_name:
            return self.instance(name)
        if kind == "profiles":
            return self.profile(name)
        return None

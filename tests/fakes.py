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

from coi.core.errors import IncusError, NotFound
from coi.incus.adapter import Endpoint, ExecResult
from coi.incus.api import IncusAPI, Json

Runner = Callable[[str, list[str], dict[str, Any]], ExecResult]


def _ok(name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
    return ExecResult(0, "", "")


@dataclass
class FakeIncus:
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
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path) asked for
    elsewhere: list[Json] = field(default_factory=list)  # instances of other projects
    templates: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    busy_names: set[str] = field(default_factory=set)  # instances an operation works on
    networks_by_name: dict[str, Json] = field(default_factory=dict)
    leases: dict[str, list[Json]] = field(default_factory=dict)
    acls: dict[str, Json] = field(default_factory=dict)
    pools: dict[str, Json] = field(default_factory=dict)
    volumes: set[tuple[str, str]] = field(default_factory=set)  # (pool, volume)
    projects: dict[str, Json] = field(default_factory=dict)
    members: dict[str, Json] = field(default_factory=dict)
    trust_tokens: set[str] = field(default_factory=set)
    trusted_names: list[str] = field(default_factory=list)  # names that redeemed a token

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

    def instances(self, *, state: bool = False, all_projects: bool = False) -> list[Json]:
        self.calls.append(("GET", "instances"))
        found = [copy.deepcopy(r) for r in self.instances_by_name.values()]
        if all_projects:
            found += [copy.deepcopy(r) for r in self.elsewhere]
        for record in found if state else ():
            record["state"] = {"status": record["status"], "network": {}}
        return found

    def instance_names(self, *, all_projects: bool = False) -> list[str]:
        names = list(self.instances_by_name)
        return names + [r["name"] for r in self.elsewhere] if all_projects else names

    def has_instance(self, name: str) -> bool:
        return name in self.instances_by_name

    def create_instance(self, body: Json, *, target: str = "") -> None:
        record = self.add_instance(body["name"], body.get("config"), status="Stopped")
        record["devices"] = dict(body.get("devices") or {})
        record["profiles"] = list(body.get("profiles") or [])
        if target:
            record["location"] = target

    def set_state(self, name: str, action: str, *, force: bool = False, timeout: int = -1) -> None:
        self.calls.append(("PUT", f"instances/{name}/state"))
        statuses = {
            "start": "Running",
            "stop": "Stopped",
            "restart": "Running",
            "unfreeze": "Running",
        }
        self._record(name)["status"] = statuses.get(action, "Frozen")

    def state(self, name: str) -> Json:
        self.calls.append(("GET", f"instances/{name}/state"))
        return {"status": self._record(name)["status"], "network": {}}

    def delete_instance(self, name: str, *, force: bool = False) -> None:
        self._record(name)
        del self.instances_by_name[name]

    def update_instance(self, name: str, patch: Json) -> None:
        self.calls.append(("PATCH", f"instances/{name}"))
        record = self._record(name)
        for key in ("config", "devices"):
            record[key].update(patch.get(key) or {})

    def put_instance(self, name: str, record: Json) -> None:
        self.calls.append(("PUT", f"instances/{name}"))
        kept = self._record(name)
        kept["config"] = dict(record.get("config") or {})
        kept["devices"] = copy.deepcopy(record.get("devices") or {})
        kept["description"] = record.get("description", "")

    def template_of(self, name: str, path: str) -> str:
        self._record(name)
        return self.templates.get((name, path), ("", b""))[0]

    def put_template(self, name: str, template: str, content: bytes) -> None:
        for (inst, path), (kept, _) in list(self.templates.items()):
            if inst == name and kept == template:
                self.templates[(inst, path)] = (template, content)
                return
        raise NotFound(f"template {template} of {name} not found")

    def busy(self, name: str) -> bool:
        return name in self.busy_names

    def remove_devices(self, name: str, devices: Sequence[str]) -> None:
        record = self.instance(name)
        record["devices"] = {k: v for k, v in record["devices"].items() if k not in devices}
        self.put_instance(name, record)

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
        fingerprint = fingerprint or _digest(str(alias))
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

    def has_image(self, fingerprint: str) -> bool:
        return fingerprint in self.images_by_fingerprint

    def publish_image(self, body: Json, what: str = "publishing an image") -> Json:
        source = body["source"]["name"]
        self._record(source)
        fingerprint = self.add_image(None, body.get("properties"), fingerprint=_digest(source))
        return {"metadata": {"fingerprint": fingerprint}}

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

    def profile_names(self) -> list[str]:
        return list(self.profiles)

    # -- the server, networks, storage, projects, trust -----------------------------------

    def server(self) -> Json:
        return {"environment": {"server_version": "6.0.4", "storage": "btrfs"}, "config": {}}

    def add_network(self, name: str, config: Mapping[str, str] | None = None) -> Json:
        """Put a managed bridge in the daemon (a test's setup); returns its record."""
        record: Json = {"name": name, "type": "bridge", "config": dict(config or {})}
        record.update(description="", state={"state": "up", "addresses": []})
        self.networks_by_name[name] = record
        return record

    def _network(self, name: str) -> Json:
        if name not in self.networks_by_name:
            raise NotFound(f"network {name} not found")
        return self.networks_by_name[name]

    def networks(self, *, target: str = "") -> list[Json]:
        return [self.network(n) for n in self.networks_by_name]

    def network(self, name: str) -> Json:
        record = copy.deepcopy(self._network(name))
        record.pop("state", None)
        return record

    def network_state(self, name: str, *, target: str = "") -> Json:
        return copy.deepcopy(self._network(name)["state"])

    def network_leases(self, name: str) -> list[Json]:
        self._network(name)
        return copy.deepcopy(self.leases.get(name, []))

    def create_network(self, body: Json) -> None:
        if body["name"] in self.networks_by_name:
            raise IncusError(f"network {body['name']} already exists")
        self.add_network(body["name"], body.get("config"))["type"] = body.get("type", "bridge")

    def update_network(self, name: str, config: Json, what: str = "") -> None:
        self.calls.append(("PATCH", f"networks/{name}"))
        self._network(name)["config"].update(config)

    def put_network(self, name: str, config: Json, description: str, what: str = "") -> None:
        self.calls.append(("PUT", f"networks/{name}"))
        record = self._network(name)
        record.update(config=dict(config), description=description)

    def network_acl(self, name: str) -> Json | None:
        found = self.acls.get(name)
        return None if found is None else copy.deepcopy(found)

    def create_network_acl(self, body: Json) -> None:
        if body["name"] in self.acls:
            raise IncusError(f"ACL {body['name']} already exists")
        self.acls[body["name"]] = copy.deepcopy(body)

    def delete_network_acl(self, name: str) -> None:
        users = [n for n, r in self.networks_by_name.items() if name in _acls_of(r)]
        if users:
            raise IncusError(f"ACL {name} is still used by {', '.join(users)}")
        if self.acls.pop(name, None) is None:
            raise NotFound(f"ACL {name} not found")

    def storage_pool(self, name: str) -> Json | None:
        found = self.pools.get(name)
        return None if found is None else copy.deepcopy(found)

    def create_storage_pool(self, body: Json) -> None:
        self.pools[body["name"]] = copy.deepcopy(body)

    def create_volume(self, pool: str, name: str, *, target: str = "") -> None:
        if pool not in self.pools:
            raise NotFound(f"storage pool {pool} not found")
        self.volumes.add((pool, name))

    def delete_volume(self, pool: str, name: str, *, target: str = "") -> None:
        if (pool, name) not in self.volumes:
            raise NotFound(f"volume {name} not found")
        self.volumes.discard((pool, name))

    def create_project(self, name: str, config: Json, description: str = "") -> None:
        self.projects[name] = {"name": name, "config": dict(config), "description": description}

    def delete_project(self, name: str) -> None:
        if self.projects.pop(name, None) is None:
            raise NotFound(f"project {name} not found")

    def cluster_member(self, name: str) -> Json:
        if name not in self.members:
            raise NotFound(f"member {name} not found")
        return copy.deepcopy(self.members[name])

    def redeem_token(self, token: str, name: str) -> None:
        self.calls.append(("POST", "certificates"))
        if token not in self.trust_tokens:
            raise IncusError("not authorized")
        self.trust_tokens.discard(token)
        self.trusted_names.append(name)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _acls_of(network: Json) -> list[str]:
    listed = str((network.get("config") or {}).get("security.acls", ""))
    return [a for a in listed.split(",") if a]


# mypy checks the fake against the Protocol here: a verb missing or of another signature
# fails `mypy` (tests/fakes.py is in its files), not a test at run time.
_: IncusAPI = FakeIncus()

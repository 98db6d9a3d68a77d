"""The instance verbs: listing, records, state, devices, snapshots and the operations that
touch them (https://linuxcontainers.org/incus/docs/main/rest-api-spec/#/instances)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from coi.core.errors import NotFound
from coi.incus import freezer
from coi.incus.rest import Json, Rest

# What a PUT of an instance takes back (the rest of a GET is read-only or derived).
WRITABLE = ("architecture", "config", "devices", "ephemeral", "profiles", "stateful")


def writable(record: Json) -> Json:
    """The part of an instance's record that a PUT writes (description always given: a
    PUT without it clears it)."""
    body = {k: record[k] for k in WRITABLE if k in record}
    body["description"] = record.get("description", "")
    return body


class Instances(Rest):
    """Instances of the connection's project."""

    def instances(self, *, state: bool = False, all_projects: bool = False) -> list[Json]:
        """Every instance with its config, devices and status (one request); state adds each
        one's runtime state (addresses, processes), all_projects every project's."""
        params: Json = {"recursion": 2 if state else 1}
        if all_projects:
            params["all-projects"] = "true"
        what = "listing every project's instances" if all_projects else "listing instances"
        result: list[Json] = self.get("instances", what, **params) or []
        return result

    def instance_names(self, *, all_projects: bool = False) -> list[str]:
        """Names of the project's instances (of every project's with all_projects)."""
        if all_projects:
            what = "listing every project's instances"
            return self.names("instances", what, **{"all-projects": "true"})
        return self.names("instances", "listing instances")

    def instance(self, name: str) -> Json:
        """One instance's config and devices."""
        result: Json = self.get(f"instances/{name}", f"instance {name}")
        return result

    def has_instance(self, name: str) -> bool:
        """True when the instance exists (one request)."""
        return self.exists(f"instances/{name}")

    def create_instance(self, body: Json, *, target: str = "") -> None:
        """POST /1.0/instances with a complete body (target: the cluster member to place it
        on). Locally this returns once Incus holds the instance's record (its name is taken,
        so a slot lock need not be held across the copy of the image); the first later
        request about the instance waits until it is created, and raises its failure."""
        name, what = str(body.get("name")), f"creating instance {body.get('name')}"
        params = {"target": target} if target else {}
        if self.lean is None:
            self.call("POST", "instances", body, what, params=params)
            return
        payload = self._lean_call("POST", "instances", body, what, params or None)
        if payload.get("type") == "async":
            self._creating[name] = (payload["operation"], what)
            self._until_recorded(name, payload["operation"])

    def set_state(self, name: str, action: str, *, force: bool = False, timeout: int = -1) -> None:
        """start, stop, restart, freeze or unfreeze an instance and wait."""
        body = {"action": action, "force": force, "timeout": timeout}
        pid = self._prefrozen(name) if action == "freeze" else 0
        try:
            self.call("PUT", f"instances/{name}/state", body, f"{action} of instance {name}")
        except BaseException:
            if pid:
                freezer.thaw(pid, self.project, name)
            raise

    def _prefrozen(self, name: str) -> int:
        """A local container frozen through its freezer first (coi/incus/freezer.py): its
        init's pid, or 0 when that was not done (a remote, not root, no v1 freezer)."""
        if self.lean is None or os.geteuid() != 0 or not freezer.FREEZER.is_dir():
            return 0
        now = self.state(name)
        if now.get("status") != "Running":  # frozen already, or stopped: Incus says what
            return 0
        pid = int(now.get("pid") or 0)
        return pid if freezer.prefreeze(pid, self.project, name) else 0

    def state(self, name: str) -> Json:
        """The runtime state: status, network addresses, processes."""
        result: Json = self.get(f"instances/{name}/state", f"instance {name}")
        return result

    def delete_instance(self, name: str, *, force: bool = False) -> None:
        """Delete an instance, stopping it first when force is set."""
        if force:
            try:
                if self.state(name).get("status") != "Stopped":
                    self.set_state(name, "stop", force=True)
            except NotFound:
                return
        self.call("DELETE", f"instances/{name}", what=f"deleting instance {name}")

    def update_instance(self, name: str, patch: Json) -> None:
        """PATCH an instance's config or devices: the keys and devices given are set, the
        others kept (one request, no read first)."""
        self.call("PATCH", f"instances/{name}", patch, f"updating instance {name}")

    def put_instance(self, name: str, record: Json) -> None:
        """Replace an instance's writable record with record's (as `instance` returned it,
        changed): config keys and devices it lacks are gone afterwards."""
        self.call("PUT", f"instances/{name}", writable(record), f"updating instance {name}")

    def remove_devices(self, name: str, devices: Sequence[str]) -> None:
        """Remove devices from an instance (a PATCH merges devices, so this PUTs its whole
        writable record without them); a running instance loses them at once."""
        record = self.instance(name)
        record["devices"] = {k: v for k, v in record["devices"].items() if k not in devices}
        self.put_instance(name, record)

    def template_of(self, name: str, path: str) -> str:
        """The name of the image template an instance renders path from ('' when none)."""
        meta = self.get(f"instances/{name}/metadata", f"metadata of {name}") or {}
        return str(((meta.get("templates") or {}).get(path) or {}).get("template") or "")

    def put_template(self, name: str, template: str, content: bytes) -> None:
        """Replace one of the instance's image templates (rendered at its next first start)."""
        self.call(
            "POST",
            f"instances/{name}/metadata/templates",
            what=f"writing template {template} of {name}",
            params={"path": template},
            data=content,
            headers={"Content-Type": "application/octet-stream"},
        )

    def busy(self, name: str) -> bool:
        """True while an operation on the instance runs anywhere in the cluster (one
        request for every operation of the project)."""
        mine = f"/1.0/instances/{name}"
        listing: dict[str, list[Json]] = (
            self.get("operations", "listing operations", recursion=1) or {}
        )
        return any(
            op.get("status") == "Running"
            and any(mine in r for r in (op.get("resources") or {}).get("instances", ()))
            for ops in listing.values()
            for op in ops or ()
        )

    # -- snapshots ----------------------------------------------------------------------

    def snapshots(self, name: str) -> list[Json]:
        """An instance's snapshots (name, created_at, stateful), oldest first."""
        found: list[Json] = self.get(
            f"instances/{name}/snapshots", f"snapshots of {name}", recursion=1
        )
        return sorted(found, key=lambda snap: str(snap.get("created_at", "")))

    def create_snapshot(self, name: str, snapshot: str) -> None:
        """Snapshot an instance's filesystem and config (copy-on-write on btrfs)."""
        body = {"name": snapshot, "stateful": False}
        self.call("POST", f"instances/{name}/snapshots", body, f"snapshotting {name}")

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        """Put an instance back as its snapshot had it (Incus stops and starts a running one)."""
        self.call("PUT", f"instances/{name}", {"restore": snapshot}, f"restoring {name}/{snapshot}")

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        """Delete one snapshot."""
        path = f"instances/{name}/snapshots/{snapshot}"
        self.call("DELETE", path, what=f"deleting snapshot {name}/{snapshot}")

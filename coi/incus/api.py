"""What coi asks of Incus, as a Protocol of verbs: the adapter (coi/incus/adapter.py) is the
real one, tests/fakes.py the one fake, and mypy checks both against it. Code above the
adapter annotates with IncusAPI and never spells a REST path (tests/unit/test_rest_paths.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

if TYPE_CHECKING:
    from coi.incus.adapter import Endpoint, ExecResult

Json = dict[str, Any]


class IncusAPI(Protocol):
    """A connection to one Incus daemon, scoped to one project."""

    endpoint: Endpoint
    project: str

    # -- instances --------------------------------------------------------------

    def instances(self, *, state: bool = False, all_projects: bool = False) -> list[Json]:
        """Every instance with its config, devices and status (one request); state adds each
        one's runtime state (addresses, processes), all_projects every project's."""
        ...

    def instance_names(self, *, all_projects: bool = False) -> list[str]:
        """Names of the project's instances (of every project's with all_projects)."""
        ...

    def instance(self, name: str) -> Json:
        """One instance's config and devices."""
        ...

    def has_instance(self, name: str) -> bool:
        """True when the instance exists (one request)."""
        ...

    def create_instance(self, body: Json, *, target: str = "") -> None:
        """POST /1.0/instances with a complete body (target: the cluster member to place it
        on). Locally this returns once Incus holds the instance's record (its name is taken,
        so a slot lock need not be held across the copy of the image); the first later
        request about the instance waits until it is created, and raises its failure."""
        ...

    def set_state(self, name: str, action: str, *, force: bool = False, timeout: int = -1) -> None:
        """start, stop, restart, freeze or unfreeze an instance and wait."""
        ...

    def state(self, name: str) -> Json:
        """The runtime state: status, network addresses, processes."""
        ...

    def delete_instance(self, name: str, *, force: bool = False) -> None:
        """Delete an instance, stopping it first when force is set."""
        ...

    def update_instance(self, name: str, patch: Json) -> None:
        """PATCH an instance's config or devices: the keys and devices given are set, the
        others kept (one request, no read first)."""
        ...

    def put_instance(self, name: str, record: Json) -> None:
        """Replace an instance's writable record with record's (as `instance` returned it,
        changed): config keys and devices it lacks are gone afterwards."""
        ...

    def remove_devices(self, name: str, devices: Sequence[str]) -> None:
        """Remove devices from an instance (a PATCH merges devices, so this PUTs its whole
        writable record without them); a running instance loses them at once."""
        ...

    def template_of(self, name: str, path: str) -> str:
        """The name of the image template an instance renders path from ('' when none)."""
        ...

    def put_template(self, name: str, template: str, content: bytes) -> None:
        """Replace one of the instance's image templates (rendered at its next first start)."""
        ...

    def busy(self, name: str) -> bool:
        """True while an operation on the instance runs anywhere in the cluster (one
        request for every operation of the project)."""
        ...

    def snapshots(self, name: str) -> list[Json]:
        """An instance's snapshots (name, created_at, stateful), oldest first."""
        ...

    def create_snapshot(self, name: str, snapshot: str) -> None:
        """Snapshot an instance's filesystem and config (copy-on-write on btrfs)."""
        ...

    def restore_snapshot(self, name: str, snapshot: str) -> None:
        """Put an instance back as its snapshot had it (Incus stops and starts a running one)."""
        ...

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        """Delete one snapshot."""
        ...

    # -- commands and files inside ----------------------------------------------

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
        """Run argv inside; stream output as it comes; return the exit code and output.

        idempotent: running argv twice does no harm, so a failure the daemon reports
        after the streams connected (when the command may have run) is tried again too.

        on_* receive decoded text, raw_* the bytes; output is also collected unless a
        raw sink takes it.
        """
        ...

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
        """Run argv on a pty bridged to this process's terminal; return its exit code."""
        ...

    def channel(self) -> Any:
        """How execws reaches this daemon."""
        ...

    def push_file(
        self, name: str, path: str, content: bytes, *, uid: int = 0, gid: int = 0, mode: int = 0o644
    ) -> None:
        """Write one file inside an instance (created or replaced)."""
        ...

    def pull_file(self, name: str, path: str) -> bytes:
        """Read one file from an instance."""
        ...

    def pull_stream(self, name: str, path: str, sink: Callable[[bytes], object]) -> None:
        """Read one file from an instance into sink chunk by chunk, never whole in memory;
        a sink that raises ends the transfer (the exception passes through)."""
        ...

    # -- images -----------------------------------------------------------------

    def image_alias(self, alias: str) -> Json | None:
        """The alias record (with its target fingerprint), or None."""
        ...

    def images(self) -> list[Json]:
        """Every image with its aliases and properties."""
        ...

    def image(self, fingerprint: str) -> Json:
        """One image's record."""
        ...

    def import_image(self, metadata: Path, rootfs: Path, properties: Mapping[str, str]) -> str:
        """Upload a split image (metadata tarball + rootfs tarball); returns its fingerprint."""
        ...

    def set_alias(self, alias: str, fingerprint: str, description: str = "") -> None:
        """Point alias at fingerprint, creating or moving it."""
        ...

    def delete_image(self, fingerprint: str) -> None:
        """Delete an image by fingerprint."""
        ...

    def export_image(self, fingerprint: str, out: BinaryIO) -> str:
        """Stream an image's tarball into out (never whole in memory); returns its type."""
        ...

    def import_image_file(self, tarball: Path, properties: Mapping[str, str]) -> str:
        """Upload a unified image tarball (as `export_image` writes); returns its fingerprint."""
        ...

    def has_image(self, fingerprint: str) -> bool:
        """True when an image of that fingerprint is here (one request)."""
        ...

    def publish_image(self, body: Json, what: str = "publishing an image") -> Json:
        """Make an image from an instance or snapshot (body as POST /1.0/images takes it)
        and wait; the finished operation, whose metadata names the fingerprint."""
        ...

    # -- server, profiles, networks, storage, projects, trust -------------------

    def server(self) -> Json:
        """GET /1.0: server config and environment."""
        ...

    def profile(self, name: str) -> Json | None:
        """A profile's record, or None. Never cached: another process (`coi setup`,
        `doctor --fix`, incus itself) may change it at any time."""
        ...

    def profile_names(self) -> list[str]:
        """Names of the project's profiles."""
        ...

    def put_profile(self, name: str, body: Json) -> None:
        """Create the profile or replace its config, devices and description."""
        ...

    def delete_profile(self, name: str) -> None:
        """Delete a profile."""
        ...

    def networks(self, *, target: str = "") -> list[Json]:
        """Every network with its config (as the member target sees them)."""
        ...

    def network(self, name: str) -> Json:
        """One network's record (type, config, description); NotFound when there is none."""
        ...

    def network_state(self, name: str, *, target: str = "") -> Json:
        """A network's live state on the member target: up or down, its addresses."""
        ...

    def network_leases(self, name: str) -> list[Json]:
        """The addresses a managed bridge leased (DHCP and static ones)."""
        ...

    def create_network(self, body: Json) -> None:
        """Create a network (body as POST /1.0/networks takes it)."""
        ...

    def update_network(self, name: str, config: Json, what: str = "") -> None:
        """Set these config keys of a network, keeping the others (one PATCH, no read)."""
        ...

    def put_network(self, name: str, config: Json, description: str, what: str = "") -> None:
        """Replace a network's config: keys it lacks are gone afterwards."""
        ...

    def network_acl(self, name: str) -> Json | None:
        """A network ACL's record, or None."""
        ...

    def create_network_acl(self, body: Json) -> None:
        """Create a network ACL (name, description, egress and ingress rules)."""
        ...

    def delete_network_acl(self, name: str) -> None:
        """Delete a network ACL (no network may still name it)."""
        ...

    def storage_pool(self, name: str) -> Json | None:
        """A storage pool's record (driver, config), or None."""
        ...

    def create_storage_pool(self, body: Json) -> None:
        """Create a storage pool (body as POST /1.0/storage-pools takes it)."""
        ...

    def create_volume(self, pool: str, name: str, *, target: str = "") -> None:
        """Create a custom filesystem volume in pool, on the member target."""
        ...

    def delete_volume(self, pool: str, name: str, *, target: str = "") -> None:
        """Delete a custom volume of pool, on the member target."""
        ...

    def create_project(self, name: str, config: Json, description: str = "") -> None:
        """Create a project with these features (config)."""
        ...

    def delete_project(self, name: str) -> None:
        """Delete an empty project."""
        ...

    def cluster_member(self, name: str) -> Json:
        """A cluster member's record (its url, roles, status)."""
        ...

    def redeem_token(self, token: str, name: str) -> None:
        """Have the server trust this client's certificate through a trust token."""
        ...

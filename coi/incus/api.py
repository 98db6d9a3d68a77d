"""What coi asks of Incus, as a Protocol: the adapter (coi/incus/adapter.py) is the real
one, tests/fakes.py the one fake. Code above the adapter annotates with IncusAPI, so both fit.
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

    def get(self, path: str, what: str = "", **params: Any) -> Any:
        """GET /1.0/<path>; returns the response metadata."""
        ...

    def call(self, method: str, path: str, body: Any = None, what: str = "", **kwargs: Any) -> Any:
        """POST/PUT/PATCH/DELETE; waits for an async operation; returns its metadata."""
        ...

    def exists(self, path: str) -> bool:
        """True when GET /1.0/<path> answers (404 means no)."""
        ...

    def server(self) -> Json:
        """GET /1.0: server config and environment."""
        ...

    def instances(self) -> list[Json]:
        """Every instance of the project, with its state (one request)."""
        ...

    def names(self, collection: str) -> list[str]:
        """Names in a collection such as instances or profiles (one cheap request)."""
        ...

    def instance_names(self) -> list[str]:
        """Names of the project's instances."""
        ...

    def find(self, path: str) -> Json | None:
        """GET /1.0/<path>, or None when it does not exist."""
        ...

    def instance(self, name: str) -> Json:
        """One instance's config and devices."""
        ...

    def create_instance(self, body: Json) -> None:
        """POST /1.0/instances with a complete body; waits until created."""
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
        """PATCH an instance's config or devices."""
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

    def remove_devices(self, name: str, devices: Sequence[str]) -> None:
        """Remove devices from an instance (a PATCH merges devices, so this PUTs its whole
        writable record without them); a running instance loses them at once."""
        ...

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

    def profile(self, name: str) -> Json | None:
        """A profile's record, or None."""
        ...

    def put_profile(self, name: str, body: Json) -> None:
        """Create the profile or replace its config, devices and description."""
        ...

    def delete_profile(self, name: str) -> None:
        """Delete a profile."""
        ...

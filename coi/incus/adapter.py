"""The one adapter over Incus: the only module that imports pylxd.

A local daemon is spoken to over its unix socket through the lean path (lean.py, the
standard library's HTTP client); pylxd serves a remote HTTPS daemon and image uploads,
imported only then. Everything speaks plain dicts in the shape of the Incus REST API
(https://linuxcontainers.org/incus/docs/main/rest-api/), so callers never see pylxd
objects and a fake can stand in for unit tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from coi.core.errors import CoiError, IncusError, NotFound
from coi.incus import lean

Json = dict[str, Any]
DEFAULT_SOCKET = "/var/lib/incus/unix.socket"


@dataclass(frozen=True)
class Endpoint:
    """Where the daemon listens: a unix socket path or an https URL with certificates."""

    url: str
    client_cert: str | None = None
    client_key: str | None = None
    server_cert: str | None = None

    @property
    def is_local(self) -> bool:
        return not self.url.startswith("https://")


@dataclass(frozen=True)
class ExecResult:
    """What a command run inside an instance returned."""

    exit_code: int
    stdout: str
    stderr: str


def socket_path(environ: Mapping[str, str] | None = None) -> str:
    """INCUS_SOCKET, else $INCUS_DIR/unix.socket, else /var/lib/incus/unix.socket."""
    env = os.environ if environ is None else environ
    if env.get("INCUS_SOCKET"):
        return env["INCUS_SOCKET"]
    if env.get("INCUS_DIR"):
        return os.path.join(env["INCUS_DIR"], "unix.socket")
    return DEFAULT_SOCKET


def _check_socket(path: str, group: str) -> None:
    if not os.path.exists(path):
        raise IncusError(f"Incus is not running (no socket at {path}): start it or run `coi setup`")
    if not os.access(path, os.R_OK | os.W_OK):
        raise IncusError(
            f"permission denied on the Incus socket {path}: add yourself to the "
            f"`{group}` group (sudo usermod -aG {group} $USER) and log in again"
        )


def _explain(exc: Exception, what: str) -> CoiError:
    """Turn a pylxd/requests failure into an error a user can act on."""
    from pylxd import exceptions as px

    if isinstance(exc, px.NotFound):
        return NotFound(f"{what} not found")
    if isinstance(exc, px.LXDAPIException):
        return IncusError(f"{what}: {exc}")
    text = str(exc)
    if "Permission denied" in text:
        return IncusError("permission denied on the Incus socket: join the Incus admin group")
    if "Connection refused" in text or "No such file" in text:
        return IncusError("Incus is not running: start it or run `coi setup`")
    return IncusError(f"{what}: cannot reach Incus ({text.splitlines()[0] if text else exc!r})")


class Incus:
    """A connection to one Incus daemon, scoped to one project."""

    def __init__(
        self, endpoint: Endpoint | None = None, project: str = "default", group: str = "incus-admin"
    ) -> None:
        self.endpoint = endpoint or Endpoint(socket_path())
        self.project = project
        self.lean: lean.Local | None = None
        self._client: Any = None
        self._creating: dict[str, tuple[str, str]] = {}  # name: (operation, what)
        if self.endpoint.is_local:
            _check_socket(self.endpoint.url, group)
            self.lean = lean.Local(self.endpoint.url, project)
        else:
            self._client = self._connect()

    @property
    def client(self) -> Any:
        """The pylxd client (made on first use: a local daemon rarely needs it)."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        import pylxd
        from pylxd import exceptions as px

        lean.note("GET", "/1.0")  # pylxd.Client reads the server's record
        try:
            if self.endpoint.is_local:
                client = pylxd.Client(endpoint=self.endpoint.url, project=self.project)
            else:
                client = self._remote(pylxd)
        except (px.ClientConnectionFailed, OSError) as exc:
            raise _explain(exc, "connecting to Incus") from exc
        if os.environ.get(lean.API_LOG_ENV):
            _count_requests(client.api.session)
        return client

    def _remote(self, pylxd: Any) -> Any:
        ep = self.endpoint
        if not (ep.client_cert and ep.client_key):
            raise CoiError(f"{ep.url} needs [incus] client_cert and client_key")
        cert = (ep.client_cert, ep.client_key)
        # pylxd pins the server certificate's fingerprint when `verify` names a file, but
        # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace that file on every
        # request (the "fingerprint mismatch" in DESIGN). A session that ignores the
        # environment keeps the pin.
        session = pylxd.client.get_session_for_url(ep.url, verify=ep.server_cert or True, cert=cert)
        session.trust_env = False
        return pylxd.Client(endpoint=ep.url, cert=cert, project=self.project, session=session)

    # -- raw requests -------------------------------------------------------------

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from pylxd import exceptions as px
        from requests import exceptions as rx

        try:
            yield
        except (px.LXDAPIException, px.ClientConnectionFailed, rx.RequestException) as exc:
            raise _explain(exc, what) from exc

    def _node(self, path: str) -> Any:
        node = self.client.api
        for part in filter(None, path.strip("/").split("/")):
            node = node[part]
        return node

    def get(self, path: str, what: str = "", **params: Any) -> Any:
        """GET /1.0/<path>; returns the response metadata."""
        self._created(path)
        if self.lean is not None:
            return self.lean.get(path, what or path, params)
        with self._errors(what or path):
            return self._node(path).get(params=dict(params)).json()["metadata"]

    def call(self, method: str, path: str, body: Any = None, what: str = "", **kwargs: Any) -> Any:
        """POST/PUT/PATCH/DELETE; waits for an async operation; returns its metadata."""
        self._created(path)
        if self.lean is not None:
            payload = self._lean_call(method, path, body, what or path, **kwargs)
            if payload.get("type") == "async":
                return self._wait(payload["operation"])
            return payload.get("metadata")
        with self._errors(what or path):
            node = self._node(path)
            if body is not None:
                kwargs["json"] = body
            response = getattr(node, method.lower())(**kwargs)
            payload = response.json()
            if payload.get("type") == "async":
                return self._wait(payload["operation"])
            return payload.get("metadata")

    def _lean_call(
        self,
        method: str,
        path: str,
        body: Any,
        what: str,
        params: Mapping[str, Any] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Json:
        """One request through the lean path: a JSON body, or raw data with its headers."""
        assert self.lean is not None
        if data is None:
            document: Json = self.lean.json(method, path, what, body, params)
            return document
        status, raw, _ = self.lean.raw(
            method, path, what, params=params, body=data, headers=headers
        )
        if status >= 400:
            raise lean.refusal(status, raw, what)
        import json

        return dict(json.loads(raw or b"{}"))

    def _wait(self, operation: str) -> Any:
        op_id = operation.rstrip("/").rsplit("/", 1)[-1]
        if self.lean is not None:
            meta = self.lean.get(f"operations/{op_id}/wait", "waiting for an operation") or {}
        else:
            with self._errors("waiting for an operation"):
                meta = self.client.api.operations[op_id].wait.get().json().get("metadata") or {}
        if meta.get("status") == "Failure" or meta.get("err"):
            raise IncusError(meta.get("err") or "operation failed")
        return meta

    def exists(self, path: str) -> bool:
        """True when GET /1.0/<path> answers (404 means no)."""
        try:
            self.get(path)
        except NotFound:
            return False
        return True

    # -- server ---------------------------------------------------------------------

    def server(self) -> Json:
        """GET /1.0: server config and environment."""
        info: Json = self.get("", "the server's record")
        return info

    # -- instances ------------------------------------------------------------------

    def instances(self) -> list[Json]:
        """Every instance of the project, with its state (one request)."""
        result: list[Json] = self.get("instances", "listing instances", recursion=2)
        return result

    def names(self, collection: str) -> list[str]:
        """Names in a collection such as instances or profiles (one cheap request)."""
        urls: list[str] = self.get(collection, f"listing {collection}")
        return [u.rsplit("/", 1)[-1].split("?", 1)[0] for u in urls]

    def instance_names(self) -> list[str]:
        """Names of the project's instances."""
        return self.names("instances")

    def find(self, path: str) -> Json | None:
        """GET /1.0/<path>, or None when it does not exist."""
        try:
            result: Json = self.get(path)
        except NotFound:
            return None
        return result

    def instance(self, name: str) -> Json:
        """One instance's config and devices."""
        result: Json = self.get(f"instances/{name}", f"instance {name}")
        return result

    def create_instance(self, body: Json) -> None:
        """POST /1.0/instances with a complete body. Locally this returns once Incus holds
        the instance's record (its name is taken, so a slot lock need not be held across
        the copy of the image); the first later request about the instance waits until
        it is created, and raises its failure."""
        name, what = str(body.get("name")), f"creating instance {body.get('name')}"
        if self.lean is None:
            self.call("POST", "instances", body, what)
            return
        payload = self._lean_call("POST", "instances", body, what)
        if payload.get("type") == "async":
            self._creating[name] = (payload["operation"], what)
            self._until_recorded(name, payload["operation"])

    def _until_recorded(self, name: str, operation: str, timeout: float = 60.0) -> None:
        """Wait until the instance is in Incus's database (the operation makes the record
        first, then copies) or the operation has ended."""
        assert self.lean is not None
        op_id = operation.rstrip("/").rsplit("/", 1)[-1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lean.raw("GET", f"instances/{name}", name)[0] == 200:
                return
            if self.lean.get(f"operations/{op_id}", what=name).get("status") != "Running":
                self._created(f"instances/{name}")  # ended: its failure is raised now
                return
            time.sleep(0.02)

    def _created(self, path: str) -> None:
        """Wait for the creation of the instance a request is about, if it is under way."""
        if not self._creating:
            return
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "instances":
            return
        pending = self._creating.pop(parts[1].split("?", 1)[0], None)
        if pending is not None:
            operation, what = pending
            try:
                self._wait(operation)
            except IncusError as exc:
                raise IncusError(f"{what}: {exc}") from exc

    def set_state(self, name: str, action: str, *, force: bool = False, timeout: int = -1) -> None:
        """start, stop, restart, freeze or unfreeze an instance and wait."""
        body = {"action": action, "force": force, "timeout": timeout}
        self.call("PUT", f"instances/{name}/state", body, f"{action} of instance {name}")

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
        """PATCH an instance's config or devices."""
        self.call("PATCH", f"instances/{name}", patch, f"updating instance {name}")

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

    def remove_devices(self, name: str, devices: Sequence[str]) -> None:
        """Remove devices from an instance (a PATCH merges devices, so this PUTs its whole
        writable record without them); a running instance loses them at once."""
        record = self.instance(name)
        keys = ("architecture", "config", "devices", "ephemeral", "profiles", "stateful")
        body = {k: record[k] for k in keys if k in record}
        body["description"] = record.get("description", "")
        body["devices"] = {k: v for k, v in record["devices"].items() if k not in devices}
        self.call("PUT", f"instances/{name}", body, f"updating instance {name}")

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
        from functools import partial

        from websockets.exceptions import WebSocketException

        from coi.incus import execws

        body = _exec_body(argv, env or {}, user, group, cwd)
        out, err = execws.TextSink(on_stdout), execws.TextSink(on_stderr)
        heard: list[bool] = []

        def noted(sink: Callable[[bytes], object]) -> Callable[[bytes], object]:
            def write(data: bytes) -> object:
                heard.append(True)
                return sink(data)

            return write

        # A loaded daemon sometimes refuses the exec's websockets (HTTP 500) before the
        # command starts; then, while stdin can be sent again, try again.
        source = stdin if isinstance(stdin, bytes | None) else execws.StreamIn(stdin)
        for attempt in range(EXEC_RETRIES + 1):
            payload = self._post_exec(name, body)
            operation = payload["metadata"]
            try:
                result = execws.mirror(
                    self.channel(),
                    operation["id"],
                    operation["metadata"]["fds"],
                    self.project,
                    source,
                    noted(raw_stdout or out),
                    noted(raw_stderr or err),
                    partial(self._wait, payload["operation"]),
                )
                break
            except (OSError, WebSocketException, IncusError) as exc:
                # A refused websocket means the daemon gave up on the operation before
                # the command started (it waits for every stream): safe to try again. A
                # failure reported later ("Failed to retrieve PID") may follow a command
                # that ran, so only an idempotent one is tried again then.
                started = isinstance(exc, IncusError)
                failure = str(exc) if started else self._failure(payload["operation"])
                failure = failure or str(exc)
                replayable = not (isinstance(source, execws.StreamIn) and source.sent)
                again = (idempotent or not started) and replayable and not heard
                if attempt == EXEC_RETRIES or not (again and _transient(failure + str(exc))):
                    raise IncusError(f"exec in {name}: {failure}") from exc
                time.sleep(0.3 * (attempt + 1))
        code = int((result.get("metadata") or {}).get("return", -1))
        return ExecResult(code, out.text(), err.text())

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
        import shutil
        import sys
        import termios
        import tty

        from coi.incus import execws

        cols, rows = shutil.get_terminal_size()
        term = {"TERM": os.environ.get("TERM", "xterm-256color"), **dict(env or {})}
        body = _exec_body(argv, term, user, group, cwd, interactive=True)
        body.update(width=cols, height=rows)
        payload = self._post_exec(name, body)
        operation = payload["metadata"]
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd) if os.isatty(fd) else None
        try:
            if saved is not None:
                tty.setraw(fd)
            result = execws.interactive(
                self.channel(),
                operation["id"],
                operation["metadata"]["fds"],
                self.project,
                fd,
                sys.stdout.buffer,
                lambda: self._wait(payload["operation"]),
                size=lambda: (shutil.get_terminal_size().columns, shutil.get_terminal_size().lines),
                ended=lambda: self._ended(operation["id"]),
            )
        finally:
            if saved is not None:
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        return int((result.get("metadata") or {}).get("return", -1))

    def _post_exec(self, name: str, body: Json) -> Json:
        """POST an exec whose streams coi connects itself; the operation's document."""
        self._created(f"instances/{name}")
        if self.lean is not None:
            return self._lean_call("POST", f"instances/{name}/exec", body, f"exec in {name}")
        with self._errors(f"exec in {name}"):
            payload: Json = self._node(f"instances/{name}/exec").post(json=body).json()
        return payload

    def _failure(self, operation: str) -> str:
        """The error of a finished operation, or '' when it has none."""
        try:
            self._wait(operation)
        except CoiError as exc:
            return str(exc)
        return ""

    def _ended(self, operation_id: str) -> bool:
        try:
            return bool(self.get(f"operations/{operation_id}").get("status") != "Running")
        except CoiError:
            return True

    def channel(self) -> Any:
        """How execws reaches this daemon."""
        from coi.incus import execws

        ep = self.endpoint
        if ep.is_local:
            return execws.Channel(socket_path=ep.url)
        fingerprint = _fingerprint(ep.server_cert) if ep.server_cert else None
        return execws.Channel(
            base_url="wss://" + ep.url.split("://", 1)[1].rstrip("/"),
            client_cert=ep.client_cert,
            client_key=ep.client_key,
            server_fingerprint=fingerprint,
        )

    def push_file(
        self, name: str, path: str, content: bytes, *, uid: int = 0, gid: int = 0, mode: int = 0o644
    ) -> None:
        """Write one file inside an instance (created or replaced)."""
        self._created(f"instances/{name}")
        headers = {
            "X-Incus-uid": str(uid),
            "X-Incus-gid": str(gid),
            "X-Incus-mode": f"{mode:04o}",
            "X-Incus-type": "file",
            "Content-Type": "application/octet-stream",
        }
        if self.lean is not None:
            where, what = f"instances/{name}/files", f"writing {path} in {name}"
            self._lean_call("POST", where, None, what, {"path": path}, content, headers)
            return
        with self._errors(f"writing {path} in {name}"):
            self._node(f"instances/{name}/files").post(
                params={"path": path}, data=content, headers=headers
            )

    def pull_file(self, name: str, path: str) -> bytes:
        """Read one file from an instance."""
        self._created(f"instances/{name}")
        if self.lean is not None:
            chunks: list[bytes] = []
            self.pull_stream(name, path, chunks.append)
            return b"".join(chunks)
        with self._errors(f"reading {path} in {name}"):
            response = self._node(f"instances/{name}/files").get(
                params={"path": path}, is_api=False
            )
            data: bytes = response.content
            return data

    def pull_stream(self, name: str, path: str, sink: Callable[[bytes], object]) -> None:
        """Read one file from an instance into sink chunk by chunk, never whole in memory;
        a sink that raises ends the transfer (the exception passes through)."""
        self._created(f"instances/{name}")
        if self.lean is not None:
            what, where = f"reading {path} in {name}", f"instances/{name}/files"
            status, raw, _ = self.lean.raw(
                "GET", where, what, params={"path": path}, sink=sink, chunk=PULL_CHUNK
            )
            if status >= 400:
                raise lean.refusal(status, raw, what)
            return
        with self._errors(f"reading {path} in {name}"):
            response = self._node(f"instances/{name}/files").get(
                params={"path": path}, is_api=False, stream=True
            )
            with response:
                for chunk in response.iter_content(PULL_CHUNK):
                    sink(chunk)

    # -- images ---------------------------------------------------------------------

    def image_alias(self, alias: str) -> Json | None:
        """The alias record (with its target fingerprint), or None."""
        return self.find(f"images/aliases/{alias}")

    def images(self) -> list[Json]:
        """Every image with its aliases and properties."""
        result: list[Json] = self.get("images", "listing images", recursion=1)
        return result

    def image(self, fingerprint: str) -> Json:
        """One image's record."""
        result: Json = self.get(f"images/{fingerprint}", f"image {fingerprint[:12]}")
        return result

    def import_image(self, metadata: Path, rootfs: Path, properties: Mapping[str, str]) -> str:
        """Upload a split image (metadata tarball + rootfs tarball); returns its fingerprint."""
        from requests_toolbelt import MultipartEncoder  # type: ignore[import-untyped]

        with (
            self._errors("importing image"),
            open(metadata, "rb") as meta,
            open(rootfs, "rb") as root,
        ):
            data = MultipartEncoder(
                {
                    "metadata": ("metadata", meta, "application/octet-stream"),
                    "rootfs": ("rootfs", root, "application/octet-stream"),
                }
            )
            response = self.client.api.images.post(
                data=data, headers={"Content-Type": data.content_type}
            )
            meta_out = self._wait(response.json()["operation"])
        fingerprint: str = meta_out["metadata"]["fingerprint"]
        self.call(
            "PATCH",
            f"images/{fingerprint}",
            {"properties": dict(properties)},
            "setting image properties",
        )
        return fingerprint

    def set_alias(self, alias: str, fingerprint: str, description: str = "") -> None:
        """Point alias at fingerprint, creating or moving it."""
        if self.image_alias(alias) is None:
            body = {"name": alias, "target": fingerprint, "description": description}
            self.call("POST", "images/aliases", body, f"creating alias {alias}")
        else:
            body = {"target": fingerprint, "description": description}
            self.call("PUT", f"images/aliases/{alias}", body, f"moving alias {alias}")

    def delete_image(self, fingerprint: str) -> None:
        """Delete an image by fingerprint."""
        self.call("DELETE", f"images/{fingerprint}", what=f"deleting image {fingerprint[:12]}")

    def export_image(self, fingerprint: str, out: BinaryIO) -> str:
        """Stream an image's tarball into out (never whole in memory); returns its type."""
        if self.lean is not None:
            what = f"exporting image {fingerprint[:12]}"
            status, raw, headers = self.lean.raw(
                "GET", f"images/{fingerprint}/export", what, sink=out.write
            )
            if status >= 400:
                raise lean.refusal(status, raw, what)
            return headers.get("Content-Type", "")
        with self._errors(f"exporting image {fingerprint[:12]}"):
            response = self._node(f"images/{fingerprint}/export").get(stream=True, is_api=False)
            for chunk in response.iter_content(chunk_size=1 << 20):
                out.write(chunk)
            kind: str = response.headers.get("Content-Type", "")
            return kind

    def import_image_file(self, tarball: Path, properties: Mapping[str, str]) -> str:
        """Upload a unified image tarball (as `export_image` writes); returns its fingerprint."""
        with self._errors("importing image"), open(tarball, "rb") as data:
            response = self.client.api.images.post(
                data=data, headers={"Content-Type": "application/octet-stream"}
            )
            meta_out = self._wait(response.json()["operation"])
        fingerprint: str = meta_out["metadata"]["fingerprint"]
        if properties:
            image = self.image(fingerprint)
            merged = {**(image.get("properties") or {}), **properties}
            self.call("PATCH", f"images/{fingerprint}", {"properties": merged}, "image properties")
        return fingerprint

    # -- profiles, networks, pools, projects ------------------------------------------

    def profile(self, name: str) -> Json | None:
        """A profile's record, or None. Never cached: another process (`coi setup`,
        `doctor --fix`, incus itself) may change it at any time."""
        return self.find(f"profiles/{name}")

    def put_profile(self, name: str, body: Json) -> None:
        """Create the profile or replace its config, devices and description."""
        if self.profile(name) is None:
            self.call("POST", "profiles", {"name": name, **body}, f"creating profile {name}")
        else:
            self.call("PUT", f"profiles/{name}", body, f"updating profile {name}")

    def delete_profile(self, name: str) -> None:
        """Delete a profile."""
        self.call("DELETE", f"profiles/{name}", what=f"deleting profile {name}")


EXEC_RETRIES = 3


def _count_requests(session: Any) -> None:
    """Note every request pylxd's requests session sends (COI_API_LOG is set)."""
    send = session.request

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        lean.note(method.upper(), "/1.0" + url.split("/1.0", 1)[-1])
        return send(method, url, *args, **kwargs)

    session.request = counted


PULL_CHUNK = 1 << 20


def _transient(failure: str) -> bool:
    """Exec failures that a moment later do not repeat (a container still starting; on a
    loaded cluster member, streams whose handshake did not end in time, measured on the
    test cluster: the daemon then gave up waiting for them and never ran the command)."""
    signs: tuple[str, ...] = ("PID", "not running", "Only running operations", "HTTP 500")
    signs += ("handshake", "websockets to connect")
    return any(t in failure for t in signs)


def _exec_body(
    argv: Sequence[str],
    env: Mapping[str, str],
    user: int | None,
    group: int | None,
    cwd: str | None,
    interactive: bool = False,
) -> Json:
    """The POST body of an exec whose streams coi connects itself."""
    body: Json = {
        "command": list(argv),
        "environment": dict(env),
        "interactive": interactive,
        "wait-for-websocket": True,
    }
    body.update(
        {k: v for k, v in (("user", user), ("group", group), ("cwd", cwd)) if v is not None}
    )
    return body


def _fingerprint(pem_path: str) -> str:
    """sha256 hex of a PEM certificate's DER form."""
    import hashlib
    import ssl

    der = ssl.PEM_cert_to_DER_cert(Path(pem_path).read_text())
    return hashlib.sha256(der).hexdigest()


def connect(
    project: str = "default",
    group: str = "incus-admin",
    endpoint: Endpoint | None = None,
    retries: int = 0,
) -> Incus:
    """Connect, retrying a few times while a freshly started daemon comes up."""
    for attempt in range(retries + 1):
        try:
            return Incus(endpoint, project=project, group=group)
        except IncusError:
            if attempt == retries:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")

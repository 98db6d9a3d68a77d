"""The connection to one Incus daemon and its raw requests: the only place REST paths are
spelled is coi/incus/, and the verbs (instances.py, inside.py, images.py, resources.py) are
built on this module's get and call.

A local daemon is spoken to over its unix socket through the lean path (lean.py, the
standard library's HTTP client); pylxd serves a remote HTTPS daemon and image uploads,
imported only then. Everything speaks plain dicts in the shape of the Incus REST API
(https://linuxcontainers.org/incus/docs/main/rest-api/), so callers never see pylxd
objects and a fake can stand in for unit tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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


class Rest:
    """A connection to one Incus daemon, scoped to one project, and its raw requests
    (`get`, `call`, `exists`, `find`: for coi/incus/ and the integration tests only; the
    rest of coi speaks the verbs of IncusAPI)."""

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

    def find(self, path: str) -> Json | None:
        """GET /1.0/<path>, or None when it does not exist."""
        try:
            result: Json = self.get(path)
        except NotFound:
            return None
        return result

    def names(self, collection: str, what: str = "", **params: Any) -> list[str]:
        """Names in a collection such as instances or profiles (one cheap request)."""
        from urllib.parse import unquote

        urls: list[str] = self.get(collection, what or f"listing {collection}", **params) or []
        return [unquote(str(u).partition("?")[0].rsplit("/", 1)[-1]) for u in urls]

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


def _count_requests(session: Any) -> None:
    """Note every request pylxd's requests session sends (COI_API_LOG is set)."""
    send = session.request

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        lean.note(method.upper(), "/1.0" + url.split("/1.0", 1)[-1])
        return send(method, url, *args, **kwargs)

    session.request = counted

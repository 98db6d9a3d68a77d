"""Running commands in an instance and moving files in and out of it (the exec and file
endpoints; the websockets themselves are execws.py's)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from coi.core.errors import CoiError, IncusError
from coi.incus import lean
from coi.incus.rest import Json, Rest

EXEC_RETRIES = 3
PULL_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExecResult:
    """What a command run inside an instance returned."""

    exit_code: int
    stdout: str
    stderr: str


class Inside(Rest):
    """Commands and files inside the project's instances."""

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

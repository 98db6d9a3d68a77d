"""The command line of coi's view helper (`coi-view`): the locked view for non-root users.

sudo runs this, through the wrapper `coi setup` installs (coi/host/netrules.py), for members
of the Incus admin group; coi runs it when it is not root (protect_host.through_helper).
It builds and releases the locked view of protected paths (protect_host.py, run here as
root) for the CALLING user's own workspaces only, and trusts nothing it is given:

- the caller is sudo's SUDO_UID (never root: root builds views in-process);
- a workspace is an absolute, plain path opened from / one component at a time without
  following links; every folder above it belongs to root or the caller, and the folder
  itself to the caller (protect_survey.open_folder); the view is mounted from that very
  descriptor, not from the path;
- an instance name is an Incus name (with `.git` for a worktree's git dir view); when Incus
  has an instance of that name, it must carry coi's labels and be stopped (releasing the
  view of a running container would lift its mounts); a view already recorded under that
  name must be the caller's own;
- each protected path passes protect.check_path, and there are at most MAX_PATHS.

Verbs: stage NAME WORKSPACE PATH..., release NAME, held WORKSPACE, stand-in NAME WORKSPACE
(the folder stays until its input ends), fingerprint. One JSON line out, or one error line.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coi.boundary import protect, protect_host, protect_survey
from coi.boundary.protect_host import fingerprint
from coi.core.errors import CoiError

USAGE = (
    "usage: coi-view [--expect FINGERPRINT] stage NAME WORKSPACE PATH... | release NAME | "
    "held WORKSPACE | stand-in NAME WORKSPACE | fingerprint"
)
NAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.git)?")
MAX_PATHS = 4096
MAX_PATH_LEN = 1024
SOCKET = "/var/lib/incus/unix.socket"
STAND_IN_LIMIT = 600.0  # seconds a stand-in may stay (coi's change of a record takes less)


class Refused(Exception):
    """A refusal, printed as one line."""


# -- argument checks (pure, or reading the host only) --------------------------------------


def check_name(name: str) -> str:
    """name when it is an Incus instance name (optionally with `.git`); else Refused."""
    if not NAME.fullmatch(name):
        raise Refused(f"refusing instance name {name!r}: not a coi container name")
    return name


def check_paths(paths: Sequence[str]) -> list[str]:
    """The protected paths, each relative and inside (protect.check_path), normalised."""
    if len(paths) > MAX_PATHS:
        raise Refused(f"refusing {len(paths)} protected paths: at most {MAX_PATHS}")
    found = []
    for value in paths:
        why = protect.check_path(value) or (
            f"{value[:40]!r}... is too long" if len(value) > MAX_PATH_LEN else None
        )
        if why:
            raise Refused(f"refusing protected path: {why}")
        found.append(protect.normal(value))
    return found


def check_workspace(text: str, caller: int) -> Path:
    """The workspace as a Path, once it is a folder of the caller's reached without links."""
    if os.path.normpath(text) != text or "\0" in text:
        raise Refused(f"refusing {text!r}: not a plain absolute path (no '.', '..' or '//')")
    try:
        fd = protect_survey.open_folder(Path(text), caller)
    except CoiError as exc:
        raise Refused(f"refusing {text!r}: {exc}") from None
    except OSError as exc:
        raise Refused(f"refusing {text!r}: {exc.strerror}") from None
    os.close(fd)
    return Path(text)


def check_record(name: str, caller: int) -> None:
    """A view already recorded under name must be the caller's own."""
    record = protect_host.record_of(name)
    if record is None:
        if protect.view_path(name).exists() or protect_host.manifest_path(name).exists():
            raise Refused(f"refusing {name}: its view has no record coi can read")
        return
    if record.get("caller") != caller:
        raise Refused(f"refusing {name}: its view belongs to another user (or to root)")


def check_instance(name: str, caller: int | None, socket_path: str = SOCKET) -> None:
    """When Incus has an instance of that name (any project): coi's, stopped, and (with
    caller) of a workspace the caller owns."""
    base = name.removesuffix(".git")
    for inst in _instances(base, socket_path):
        config = inst.get("config") or {}
        workspace = config.get("user.coi.workspace", "")
        if not workspace:
            raise Refused(f"refusing {base}: it is not a coi container")
        try:
            owner = os.lstat(workspace).st_uid
        except OSError:
            owner = None
        if caller is not None and owner != caller:
            raise Refused(f"refusing {base}: it is not a container of your workspaces")
        if inst.get("status") != "Stopped":
            raise Refused(f"refusing {base}: it is {str(inst.get('status')).lower()}")


def _instances(name: str, socket_path: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode(
        {"all-projects": "true", "recursion": "1", "filter": f"name eq {name}"}
    )
    try:
        found = _get(f"/1.0/instances?{query}", socket_path)
    except OSError as exc:
        raise Refused(f"cannot reach Incus at {socket_path}: {exc}") from None
    return [i for i in found or [] if isinstance(i, dict) and i.get("name") == name]


def _get(path: str, socket_path: str) -> Any:
    """GET path from the local Incus daemon; the response metadata."""
    import http.client

    class _Unix(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(socket_path)
            except OSError:
                sock.close()
                raise
            self.sock = sock

    conn = _Unix("localhost", timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = json.loads(response.read() or b"{}")
    finally:
        conn.close()
    if response.status >= 400 or body.get("type") == "error":
        raise Refused(f"Incus refused GET {path}: {body.get('error') or response.status}")
    return body.get("metadata")


def caller_of(environ: dict[str, str]) -> int:
    """sudo's SUDO_UID: the user who asked (never root, never missing)."""
    text = environ.get("SUDO_UID", "")
    if not text.isdigit():
        raise Refused("run through sudo (no SUDO_UID): coi-view acts for its caller only")
    uid = int(text)
    if uid == 0:
        raise Refused("root builds views in-process: coi-view is for other users")
    return uid


# -- verbs --------------------------------------------------------------------------------


def run(
    argv: Sequence[str],
    caller: int,
    socket_path: str = SOCKET,
    stdin: int = 0,
) -> Any:
    """Carry out one command line for caller; returns what to print as JSON."""
    args = list(argv)
    if len(args) >= 2 and args[0] == "--expect":
        if args[1] != fingerprint():
            raise Refused(
                f"the installed coi view helper ({fingerprint()}) is not this coi's "
                f"({args[1]}): run `sudo coi setup` to update it"
            )
        args = args[2:]
    verb, rest = (args[0], args[1:]) if args else ("", [])
    if verb == "stage" and len(rest) >= 2:
        name, workspace = check_name(rest[0]), check_workspace(rest[1], caller)
        paths = check_paths(rest[2:])
        check_record(name, caller)
        check_instance(name, caller, socket_path)
        return {"view": str(protect_host.stage(name, workspace, paths, caller))}
    if verb == "release" and len(rest) == 1:
        name = check_name(rest[0])
        check_record(name, caller)
        check_instance(name, None, socket_path)  # the record says whose it is
        protect_host.release(name)
        return {"released": name}
    if verb == "held" and len(rest) == 1:
        made, mounted = protect_host.held(check_workspace(rest[0], caller))
        return {"made": sorted(made), "mounted": sorted(mounted)}
    if verb == "stand-in" and len(rest) == 2:
        name, workspace = check_name(rest[0]), check_workspace(rest[1], caller)
        check_record(name, caller)
        check_instance(name, caller, socket_path)
        with protect_host.stand_in(name, workspace):
            print(json.dumps({"stand-in": str(protect.view_path(name))}), flush=True)
            _wait_for_end(stdin, STAND_IN_LIMIT)
        return {"removed": name}
    if verb == "fingerprint" and not rest:
        return {"fingerprint": fingerprint()}
    raise Refused(USAGE)


def _wait_for_end(fd: int, limit: float) -> None:
    """Until fd reaches its end (coi closed it, or died), at most limit seconds."""
    import time

    deadline = time.monotonic() + limit
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], min(left, 5.0))
        if ready and not os.read(fd, 4096):
            return


def main(argv: Sequence[str] | None = None) -> int:
    """The installed helper's entry point: one JSON line on stdout, or one error line."""
    if os.geteuid() != 0:
        print("coi-view: must run as root (through sudo)", file=sys.stderr)
        return 1
    os.umask(0o022)
    try:
        caller = caller_of(dict(os.environ))
        result = run(sys.argv[1:] if argv is None else argv, caller)
    except (Refused, CoiError, ValueError) as exc:
        print(f"coi-view: {exc}", file=sys.stderr)
        return 2 if str(exc) == USAGE else 1
    except OSError as exc:
        print(f"coi-view: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

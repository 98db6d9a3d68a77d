"""`coi file push|pull [-r]`: copy between host and container as one tar stream.

A pull never deletes an existing destination (it merges into it), refuses paths that
escape it, and drops links and special files.
"""

from __future__ import annotations

import argparse
import io
import os
import posixpath
import tarfile
import tempfile
from pathlib import Path

from coi.commands.common import connect
from coi.core import output, tarsafe
from coi.core.errors import CoiError, UsageError

CODE_TREES = ("/workspace", "/home/code")


def split_remote(text: str) -> tuple[str, str]:
    """NAME:/path -> (NAME, /path); the path must be absolute."""
    name, sep, path = text.partition(":")
    if not sep or not name or not path.startswith("/"):
        raise UsageError(f"{text!r} is not NAME:/absolute/path")
    return name, posixpath.normpath(path)


def _owner(path: str) -> int:
    return 1000 if any(path == t or path.startswith(t + "/") for t in CODE_TREES) else 0


def push(args: argparse.Namespace) -> int:
    """Copy a host file (or folder with -r) into a container."""
    source = Path(args.source)
    name, dest = split_remote(args.dest)
    if not source.exists():
        raise UsageError(f"{source} does not exist")
    if source.is_dir() and not args.recursive:
        raise UsageError(f"{source} is a folder: pass -r")
    incus = connect(args)
    uid = _owner(dest)
    if not source.is_dir():
        incus.push_file(
            name, dest, source.read_bytes(), uid=uid, gid=uid, mode=source.stat().st_mode & 0o777
        )
        return 0
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(source, arcname=".", filter=lambda i: _chown(i, uid))
    script = 'mkdir -p "$1" && tar -C "$1" -xf - --no-same-permissions'
    result = incus.execute(
        name, ["sh", "-c", script, "sh", dest], stdin=buffer.getvalue(), idempotent=True
    )
    if result.exit_code != 0:
        raise CoiError(f"push into {name}:{dest} failed: {result.stderr.strip()}")
    return 0


def _chown(info: tarfile.TarInfo, uid: int) -> tarfile.TarInfo:
    info.uid = info.gid = uid
    info.uname = info.gname = ""
    return info


def pull(args: argparse.Namespace) -> int:
    """Copy a container file (or folder with -r) to the host."""
    name, source = split_remote(args.source)
    dest = Path(args.dest)
    incus = connect(args)
    base = posixpath.basename(source) or "root"
    if not args.recursive:
        target = dest / base if dest.is_dir() else dest
        data = incus.pull_file(name, source)
        _write_atomic(target, data)
        return 0
    target_parent, top = (dest, base) if dest.is_dir() else (dest.parent, None)
    with tempfile.TemporaryDirectory(dir=target_parent) as work:
        tar_path = Path(work) / "pull.tar"
        argv = ["tar", "-C", posixpath.dirname(source) or "/", "-cf", "-", base]
        with open(tar_path, "wb") as sink:
            result = incus.execute(name, argv, raw_stdout=sink.write, idempotent=True)
        if result.exit_code not in (0, 1):
            raise CoiError(f"pull from {name}:{source} failed: {result.stderr.strip()}")
        if top is not None:
            tarsafe.extract(tar_path, dest, top=top)
        else:  # dest does not exist yet: the folder's contents become dest
            staging = Path(work) / "out"
            tarsafe.extract(tar_path, staging, top=base)
            os.rename(staging / base, dest)
    output.info(f"pulled {name}:{source} into {dest}")
    return 0


def _write_atomic(target: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temp, target)

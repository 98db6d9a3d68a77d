"""The workspace carried to a remote session and back.

A remote member cannot mount a host folder, so its session works on a copy: `pack` writes
the workspace as a tar stream (a git work tree: the files git knows plus the untracked ones
it does not ignore, i.e. HEAD with the uncommitted and untracked changes, never .git; any
other folder: the tree), bounded in bytes; `send` puts it into the container's /workspace
(a custom storage volume on the member that runs it) as one stream. `fetch` brings
/workspace back as a tar stream, extracts it with coi/core/tarsafe.py into a private
folder, and then either commits it onto branch coi/remote/<slot> (parent: the HEAD it was
sent from; git run as the workspace's owner, without hooks or fsmonitor, through a private
index: the user's work tree, index and HEAD are never touched) or leaves it as files in
COI_HOME/remote/<workspace id>/<slot> for a folder that is not a repository.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from coi.core import paths, slots, tarsafe
from coi.core.errors import CoiError

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

DEFAULT_LIMIT = 1 << 30  # 1 GiB each way
MAX_FILES = 200_000
SAFE_GIT = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
INSIDE = "/workspace"


@dataclass(frozen=True)
class Packed:
    """What went out: git or not, the HEAD it came from, how many files and bytes."""

    git: bool
    head: str | None
    files: int
    size: int


@dataclass(frozen=True)
class Fetched:
    """What came back: a branch and its commit (git), or a folder (not git)."""

    branch: str | None
    commit: str | None
    folder: Path | None
    files: int


def _owner(workspace: Path) -> tuple[int, int]:
    info = os.stat(workspace)
    return info.st_uid, info.st_gid


def _git(workspace: Path, *args: str, env: dict[str, str] | None = None,
         stdin: bytes | None = None) -> bytes:  # fmt: skip
    """git in workspace as its owner (when coi is root), hooks and fsmonitor off."""
    uid, gid = _owner(workspace)
    as_owner = os.geteuid() == 0 and uid != 0
    argv = ["git", *SAFE_GIT, "-c", f"safe.directory={workspace}", *args]
    try:
        done = subprocess.run(
            argv,
            cwd=workspace,
            input=stdin,
            capture_output=True,
            env={**os.environ, **(env or {})},
            user=uid if as_owner else None,
            group=gid if as_owner else None,
            extra_groups=[] if as_owner else None,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CoiError(f"git {args[0]} in {workspace}: {exc}") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise CoiError(f"git {args[0]} in {workspace}: {message[-1] if message else 'failed'}")
    return done.stdout


def is_git(workspace: Path) -> bool:
    try:
        top = _git(workspace, "rev-parse", "--show-toplevel").decode().strip()
    except CoiError:
        return False
    return Path(top).resolve() == workspace.resolve()


def _head(workspace: Path) -> str | None:
    try:
        return _git(workspace, "rev-parse", "--verify", "-q", "HEAD^{commit}").decode().strip()
    except CoiError:
        return None  # a repository with no commit yet


def _names(workspace: Path, git: bool) -> Iterator[str]:
    if git:
        listed = _git(workspace, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
        seen: set[str] = set()
        for raw in listed.split(b"\0"):
            name = os.fsdecode(raw)
            if name and name not in seen:
                seen.add(name)
                yield name
        return
    for top, dirs, files in os.walk(workspace):  # never follows links
        dirs[:] = sorted(d for d in dirs if d != ".git")
        rel = os.path.relpath(top, workspace)
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            yield name if rel == "." else os.path.join(rel, name)


def pack(workspace: Path, out: IO[bytes], *, limit: int = DEFAULT_LIMIT) -> Packed:
    """The workspace as an uncompressed tar stream into out; CoiError past limit bytes."""
    git = is_git(workspace)
    head = _head(workspace) if git else None
    files = size = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for name in _names(workspace, git):
            if ".git" in Path(name).parts:
                continue
            path = workspace / name
            try:
                info = archive.gettarinfo(str(path), arcname=name)  # lstat: links stay links
            except FileNotFoundError:
                continue  # tracked but deleted: absent in the copy too
            if not (info.isreg() or info.issym()):
                continue
            info.uid = info.gid = 1000
            info.uname = info.gname = ""
            size += info.size
            files += 1
            if size > limit or files > MAX_FILES:
                raise CoiError(
                    f"{workspace} is larger than {limit >> 20} MiB or {MAX_FILES} files: "
                    "a remote session gets a copy; leave build output to .gitignore"
                )
            if info.isreg():
                with open(path, "rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)
    return Packed(git, head, files, size)


def send(incus: IncusAPI, name: str, workspace: Path, *, limit: int = DEFAULT_LIMIT) -> Packed:
    """The workspace into the running container's /workspace, as one tar stream."""
    with tempfile.TemporaryFile() as buffer:
        packed = pack(workspace, buffer, limit=limit)
        buffer.seek(0)
        # Up to 64 MiB goes as bytes: the adapter can send bytes again when a busy member
        # refuses the exec's websockets, which it cannot do with a stream half read.
        stdin: IO[bytes] | bytes = buffer.read() if packed.size < (64 << 20) else buffer
        done = incus.execute(
            name,
            ["tar", "-x", "-f", "-", "-C", INSIDE, "--no-same-permissions"],
            stdin=stdin,  # type: ignore[arg-type]
            idempotent=True,  # unpacking the same stream twice leaves the same files
        )
    if done.exit_code != 0:
        raise CoiError(f"{name}: unpacking the workspace failed: {done.stderr.strip()[-200:]}")
    incus.execute(name, ["chown", "-R", "1000:1000", INSIDE])
    return packed


def fetch(
    incus: IncusAPI,
    name: str,
    workspace: Path,
    packed: Packed,
    slot: int,
    *,
    limit: int = DEFAULT_LIMIT,
) -> Fetched:
    """/workspace of the container back: a branch coi/remote/<slot>, or a folder."""
    with tempfile.TemporaryFile() as spool:
        written = [0]

        def sink(chunk: bytes) -> None:
            written[0] += len(chunk)
            if written[0] > limit + (64 << 20):
                raise CoiError(f"{name}: /workspace is larger than {limit >> 20} MiB")
            spool.write(chunk)

        done = incus.execute(
            name, ["tar", "-c", "-f", "-", "--exclude=./.git", "-C", INSIDE, "."], raw_stdout=sink
        )
        if done.exit_code != 0:
            raise CoiError(f"{name}: reading /workspace failed: {done.stderr.strip()[-200:]}")
        spool.seek(0)
        landing = Path(tempfile.mkdtemp(prefix="coi-remote-"))
        try:
            tarsafe.extract_stream(spool, landing, limit=limit)
            if packed.git:
                return _commit(workspace, landing, packed.head, slot, name)
            return _folder(workspace, landing, slot)
        finally:
            shutil.rmtree(landing, ignore_errors=True)


def _entries(root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = Path(top) / name
            yield str(path.relative_to(root)), path, os.lstat(path)


def _commit(workspace: Path, landing: Path, head: str | None, slot: int, name: str) -> Fetched:
    uid, gid = _owner(workspace)
    if os.geteuid() == 0:
        os.chown(landing, uid, gid)
        for _, path, _ in _entries(landing):
            os.lchown(path, uid, gid)
        for top, dirs, _ in os.walk(landing):
            for d in dirs:
                os.lchown(Path(top) / d, uid, gid)
    lines: list[str] = []
    # A name with a newline cannot pass --stdin-paths: such files stay out.
    regular = [
        (rel, path, st)
        for rel, path, st in _entries(landing)
        if stat.S_ISREG(st.st_mode) and "\n" not in str(path)
    ]
    if regular:
        listing = "\n".join(str(path) for _, path, _ in regular).encode() + b"\n"
        hashes = _git(
            workspace, "hash-object", "-w", "--no-filters", "--stdin-paths", stdin=listing
        )
        for (rel, _, st), sha in zip(regular, hashes.decode().split(), strict=True):
            mode = "100755" if st.st_mode & 0o111 else "100644"
            lines.append(f"{mode} {sha}\t{rel}")
    for rel, path, st in _entries(landing):
        if stat.S_ISLNK(st.st_mode):
            target = os.fsencode(os.readlink(path))
            sha = _git(workspace, "hash-object", "-w", "--stdin", stdin=target).decode().strip()
            lines.append(f"120000 {sha}\t{rel}")
    index = landing.parent / f"{landing.name}.index"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        _git(workspace, "update-index", "-z", "--index-info", env=env,
             stdin="".join(f"{line}\0" for line in lines).encode())  # fmt: skip
        if not lines:
            _git(workspace, "read-tree", "--empty", env=env)
        tree = _git(workspace, "write-tree", env=env).decode().strip()
    finally:
        index.unlink(missing_ok=True)
    parent = ["-p", head] if head else []
    ident = {
        "GIT_AUTHOR_NAME": "coi",
        "GIT_AUTHOR_EMAIL": "coi@localhost",
        "GIT_COMMITTER_NAME": "coi",
        "GIT_COMMITTER_EMAIL": "coi@localhost",
    }
    message = f"coi: remote session {name} (slot {slot})".encode()
    commit = _git(workspace, "commit-tree", tree, *parent, env=ident, stdin=message)
    sha = commit.decode().strip()
    branch = f"coi/remote/{slot}"
    _git(workspace, "update-ref", "-m", "coi sync", f"refs/heads/{branch}", sha)
    return Fetched(branch, sha, None, len(lines))


def _folder(workspace: Path, landing: Path, slot: int) -> Fetched:
    where = paths.ensure(paths.coi_home() / "remote" / slots.workspace_id(workspace))
    target = where / str(slot)
    fresh = where / f".{slot}.{os.getpid()}"
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.copytree(landing, fresh, symlinks=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(fresh, target)
    files = sum(1 for _ in _entries(target))
    return Fetched(None, None, target, files)


def packed_bytes(workspace: Path, limit: int = DEFAULT_LIMIT) -> bytes:
    """The tar stream in memory (tests and small workspaces)."""
    buffer = io.BytesIO()
    pack(workspace, buffer, limit=limit)
    return buffer.getvalue()

"""Carry out protect.py's plan on the host: a locked, read-only view of protected paths.

Read-only disk devices over /workspace do not hold: root in the container (and the AI
has sudo) can `umount` them, or bind /workspace elsewhere without them, and write what
lies beneath (measured). Mounts the container inherits from the host's mount namespace
are locked instead (the kernel's MNT_LOCKED: no umount, no remount rw, no bind that
would uncover them; see mount_namespaces(7), "Restrictions on mount namespaces"). So,
as root, coi builds the workspace view under /run/coi-protect before each start: a private
bind of the workspace, with each protected path bound read-only over itself and the
folders on the way bound over themselves (a mount point cannot be renamed), and gives
Incus that view as the workspace disk with `recursive=true`.

Missing paths get an empty placeholder (owned by the workspace owner) while a session
runs; `release` unmounts the view and removes exactly the placeholders coi created (a
folder only when still empty, a file only when it still holds coi's bytes). Every path is
opened component by component with O_NOFOLLOW, and mounts go through /proc/self/fd, so
a link planted in the workspace can never send a root mount elsewhere on the host
(reading the workspace that way is protect_survey.py's job).

A coi that is not root does all of this through coi's view helper (`coi-view`, installed
by `coi setup` beside the network helper and run through sudo; coi/boundary/view_cli.py):
the same code, run as root for the calling user's own workspaces only (`caller`: every
folder on the way is root's or theirs, no link anywhere on it, the workspace is theirs).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

from coi.boundary import protect, protect_survey
from coi.core.errors import CoiError

# What each view created in its workspace, kept across reboots (the views on /run are not):
# a session that a reboot or a crash ended leaves placeholders that the next release removes.
RECORDS = Path("/var/lib/coi-protect")
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_PRIVATE = 1, 32, 4096, 1 << 18
MNT_DETACH = 2


# The view helper a non-root coi runs through sudo (coi/host/netrules.py installs it), and
# its files (relative to the folder holding `coi`); the fingerprint covers each of them,
# so coi refuses a helper that is not its own.
VIEW_HELPER = Path("/usr/local/sbin/coi-view")
SOURCES = (
    "coi/core/errors.py",
    "coi/core/lock.py",
    "coi/core/mountinfo.py",
    "coi/boundary/protect.py",
    "coi/boundary/protect_host.py",
    "coi/boundary/protect_survey.py",
    "coi/boundary/view_cli.py",
)


def fingerprint() -> str:
    """sha256 of the view helper's files (this coi's copy, or the installed one)."""
    top = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for rel in SOURCES:
        digest.update((top / rel).read_bytes())
    return digest.hexdigest()[:16]


def can_stage() -> bool:
    """Whether this process may build the locked view: as root in-process, else through
    the view helper (mounting needs root)."""
    return os.geteuid() == 0 or VIEW_HELPER.exists()


def _by_helper() -> bool:
    return os.geteuid() != 0


def through_helper(*args: str) -> Any:
    """One command of the view helper through sudo; its JSON answer (CoiError: its line)."""
    from coi.core import proc

    if not VIEW_HELPER.exists():
        raise CoiError(
            "protected paths need root: run `sudo coi setup` once to install coi's view "
            f"helper {VIEW_HELPER}"
        )
    argv = ["sudo", "-n", str(VIEW_HELPER), "--expect", fingerprint(), *args]
    done = proc.run(argv, check=False, timeout=300)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise CoiError(f"protected paths: {detail.removeprefix('coi-view: ')}")
    return json.loads(done.stdout or "{}")


# --- stage and release -------------------------------------------------------------------


def stage(name: str, workspace: Path, listed: Sequence[str], caller: int | None = None) -> Path:
    """Build the locked view of workspace for instance `name`; return its path (through the
    view helper when not root; caller: the helper's user, see protect_survey.open_folder).

    A view left from an earlier start (a crash, a persistent container) is released first.
    """
    if _by_helper():
        return Path(through_helper("stage", name, str(workspace), *listed)["view"])
    release(name)
    RECORDS.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _one_at_a_time(str(workspace)):
        return _stage(name, workspace, listed, caller)


@contextlib.contextmanager
def _one_at_a_time(workspace: str) -> Iterator[None]:
    """Views of one workspace are made and released one at a time: two slots starting
    together would both see a protected path missing and both create its placeholder
    (the second failing with EEXIST), or one would remove a placeholder the other is
    about to mount."""
    from coi.core.lock import file_lock

    key = hashlib.sha256(workspace.encode()).hexdigest()[:16]
    with file_lock(RECORDS / f"ws-{key}.lock", timeout=120, what=f"the views of {workspace}"):
        yield


def _stage(name: str, workspace: Path, listed: Sequence[str], caller: int | None) -> Path:
    folder = protect_survey.open_folder(workspace, caller)
    try:
        return _stage_from(name, workspace, folder, listed, caller)
    finally:
        os.close(folder)


def _stage_from(
    name: str, workspace: Path, folder: int, listed: Sequence[str], caller: int | None
) -> Path:
    entries = protect.plan(listed, protect_survey.survey(workspace, listed))
    target = protect.view_path(name)
    protect.VIEW_ROOT.mkdir(mode=0o700, exist_ok=True)
    target.mkdir(mode=0o700, exist_ok=True)
    owner = os.fstat(folder)
    # A placeholder another slot's view made is ours too: the last view released removes it.
    shared = _created_by_others(workspace)
    created = [[e.rel, e.kind] for e in entries if [e.rel, e.kind] in shared]
    mounted = [e.rel for e in entries]
    _record(name, workspace, created, mounted, caller)
    try:
        # the folder checked above, not whatever its path names by now
        _mount(f"/proc/self/fd/{folder}", str(target), MS_BIND)
        _mount(None, str(target), MS_PRIVATE)
        for entry in entries:
            if entry.placeholder is not None:
                _create(target, entry, owner.st_uid, owner.st_gid)
                created.append([entry.rel, entry.kind])
                _record(name, workspace, created, mounted, caller)
            _bind_over_itself(target, entry)
    except protect_survey.Link as exc:
        _release(name)
        raise CoiError(f"workspace path {exc} turned into a symbolic link: start again") from None
    except BaseException:
        _release(name)
        raise
    return target


def _record(
    name: str, workspace: Path, created: list[list[str]], mounted: list[str], caller: int | None
) -> None:
    record: dict[str, Any] = {"workspace": str(workspace), "created": created, "mounted": mounted}
    if caller is not None:  # made through the view helper for this user
        record["caller"] = caller
    manifest_path(name).write_text(json.dumps(record))


def record_of(name: str) -> dict[str, Any] | None:
    """The record of the view of `name` (None: no view, or no record readable)."""
    try:
        record = json.loads(manifest_path(name).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _records(workspace: Path) -> Iterator[tuple[str, dict[str, list[Any]]]]:
    """(instance name, record) of every view made of workspace (none without root)."""
    with contextlib.suppress(OSError):
        for manifest in RECORDS.glob("*.json"):
            try:
                record = json.loads(manifest.read_text())
            except (OSError, ValueError):
                continue
            if record.get("workspace") == str(workspace):
                yield manifest.name.removesuffix(".json"), record


def _created_by_others(workspace: Path) -> list[list[str]]:
    return [list(item) for _, record in _records(workspace) for item in record.get("created", [])]


def held(workspace: Path) -> tuple[frozenset[str], frozenset[str]]:
    """What coi holds in workspace now: (the placeholders it created, which are not the
    user's files; every path a live view has mounted, placeholders included).

    Replacing or removing a mounted path on the host detaches its mount in the container
    (mount_namespaces(7)), so a rollback leaves these alone. Without root, the view helper
    reads them (views are root's; RECORDS is root's alone); without it, there are none.
    """
    from coi.core import mountinfo

    if _by_helper():
        if not VIEW_HELPER.exists():
            return frozenset(), frozenset()
        found = through_helper("held", str(workspace))
        return frozenset(found["made"]), frozenset(found["mounted"])

    made: set[str] = set()
    mounted: set[str] = set()
    live: set[str] | None = None
    for name, record in _records(workspace):
        made.update(rel for rel, _ in record.get("created", []))
        live = set(mountinfo.points()) if live is None else live
        if str(protect.view_path(name)) in live:
            mounted.update(record.get("mounted", []))
            mounted.update(rel for rel, _ in record.get("created", []))
    return frozenset(made), frozenset(mounted)


def manifest_path(name: str) -> Path:
    return RECORDS / f"{name}.json"


def _create(view: Path, entry: protect.Entry, uid: int, gid: int) -> None:
    parent, leaf = PurePosixPath(entry.rel).parent.as_posix(), PurePosixPath(entry.rel).name
    with protect_survey.walk(view, parent, os.O_RDONLY | os.O_DIRECTORY) as dfd:
        if entry.kind == protect.DIR:
            os.mkdir(leaf, 0o755, dir_fd=dfd)
            fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(leaf, flags, 0o644, dir_fd=dfd)
            os.write(fd, entry.placeholder or b"")
        try:
            os.fchown(fd, uid, gid)
        finally:
            os.close(fd)


def _bind_over_itself(view: Path, entry: protect.Entry) -> None:
    with protect_survey.walk(view, entry.rel) as fd:
        path = f"/proc/self/fd/{fd}"
        _mount(path, path, MS_BIND)
    with protect_survey.walk(view, entry.rel) as fd:  # opened again: now the new mount's root
        path = f"/proc/self/fd/{fd}"
        _mount(None, path, MS_PRIVATE)
        if entry.readonly:
            _mount(None, path, MS_BIND | MS_REMOUNT | MS_RDONLY)


def release(name: str) -> None:
    """Unmount the view of `name` and remove the placeholders coi created; nothing: no-op.

    Only for a stopped or deleted instance: unlinking a placeholder that a running
    container has mounted would unmount it there (mount_namespaces(7)).
    """
    if _by_helper():
        through_helper("release", name)
        return
    target, manifest = protect.view_path(name), manifest_path(name)
    if not manifest.exists() and not target.exists():
        return
    try:
        workspace = json.loads(manifest.read_text()).get("workspace", "")
    except (OSError, ValueError):
        workspace = ""
    if not workspace:
        _release(name)
        return
    with _one_at_a_time(workspace):
        _release(name)


@contextlib.contextmanager
def stand_in(name: str, workspace: Path) -> Iterator[None]:
    """An empty folder where the view of a stopped instance goes, while coi changes its
    record. Incus checks every disk on every update and takes a recursive one only when its
    source is a folder, and the view exists only while coi runs the instance. Under the
    workspace's view lock (no start stages the view meanwhile); removed after, so that
    `incus start` still refuses to run the instance without coi. Without root: through the
    view helper, which holds it until its input ends."""
    target = protect.view_path(name)
    if _by_helper():
        with _helper_stand_in(name, workspace):
            yield
        return
    RECORDS.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _one_at_a_time(str(workspace)):
        made = not os.path.lexists(target)
        if made:
            protect.VIEW_ROOT.mkdir(mode=0o700, exist_ok=True)
            target.mkdir(mode=0o700)
        try:
            yield
        finally:
            if made:
                with contextlib.suppress(OSError):
                    target.rmdir()


@contextlib.contextmanager
def _helper_stand_in(name: str, workspace: Path) -> Iterator[None]:
    """The view helper's stand-in: it answers one line once the folder is there, and
    removes it when its input ends (closed here, or by the end of this process)."""
    import subprocess

    if not VIEW_HELPER.exists():
        yield  # no view can exist without the helper: nothing to stand in for
        return
    argv = ["sudo", "-n", str(VIEW_HELPER), "--expect", fingerprint()]
    helper = subprocess.Popen(
        [*argv, "stand-in", name, str(workspace)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = _first_line(helper.stdout)
        if not ready:
            helper.wait(timeout=60)
            err = (_rest(helper.stderr).strip().splitlines() or ["no answer"])[-1]
            raise CoiError(f"protected paths: {err.removeprefix('coi-view: ')}")
        yield
    finally:
        if helper.stdin is not None:
            with contextlib.suppress(OSError):
                helper.stdin.close()
        try:
            helper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()


def _first_line(stream: IO[str] | None) -> str:
    return stream.readline() if stream is not None else ""


def _rest(stream: IO[str] | None) -> str:
    return stream.read() if stream is not None else ""


def _release(name: str) -> None:
    target, manifest = protect.view_path(name), manifest_path(name)
    with contextlib.suppress(OSError):
        _umount(str(target))
    record = record_of(name) or {"workspace": "", "created": []}
    if record.get("workspace"):
        _remove_recorded(record)
    manifest.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        target.rmdir()


def _remove_recorded(record: dict[str, Any]) -> None:
    """Remove a record's placeholders. A view the helper made is released in the folder
    its user still owns, reached without links (else its placeholders stay: a folder that
    changed hands is not coi's to touch)."""
    workspace, created = Path(record["workspace"]), record.get("created", [])
    caller = record.get("caller")
    if not isinstance(caller, int):
        remove_placeholders(workspace, created)
        return
    try:
        folder = protect_survey.open_folder(workspace, caller)
    except (CoiError, OSError):
        return
    try:
        remove_placeholders(Path(f"/proc/self/fd/{folder}"), created)
    finally:
        os.close(folder)


YOUNG = 300.0  # seconds: a view this new may belong to an instance still being made


def staged(*, settled: bool = False) -> set[str]:
    """Names of the instances with a view (or a worktree's git view) on this host; settled:
    only views older than YOUNG (a launch makes the view before the instance, so a view
    without an instance may be one whose instance is on its way)."""
    names: set[str] = set()
    now = time.time()
    for folder, suffix in ((protect.VIEW_ROOT, ""), (RECORDS, ".json")):
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if not entry.name.endswith(suffix):
                    continue
                with contextlib.suppress(OSError):
                    if settled and now - entry.stat(follow_symlinks=False).st_mtime < YOUNG:
                        continue
                    names.add(entry.name.removesuffix(suffix))
    return {n.removesuffix(".git") for n in names}


def remove_placeholders(workspace: Path, created: Sequence[Sequence[str]]) -> list[str]:
    """Remove what coi created, deepest first; return the paths left (changed or not empty)."""
    left = []
    for rel, kind in sorted(created, key=lambda item: -len(PurePosixPath(item[0]).parts)):
        if not _remove_one(workspace, rel, kind):
            left.append(rel)
    return left


def _remove_one(workspace: Path, rel: str, kind: str) -> bool:
    parent, leaf = PurePosixPath(rel).parent.as_posix(), PurePosixPath(rel).name
    try:
        with protect_survey.walk(workspace, parent, os.O_RDONLY | os.O_DIRECTORY) as dfd:
            if kind == protect.DIR:
                os.rmdir(leaf, dir_fd=dfd)
                return True
            fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
            try:
                info, data = os.fstat(fd), os.read(fd, 64)
            finally:
                os.close(fd)
            # b"": the stand-in of a .yml an earlier coi made (a session it left running)
            if stat.S_ISREG(info.st_mode) and data in (protect.placeholder(rel), b""):
                os.unlink(leaf, dir_fd=dfd)
                return True
            return False
    except FileNotFoundError:
        return True
    except (OSError, protect_survey.Link):
        return False


# --- libc --------------------------------------------------------------------------------

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    if _lib().mount(src, target.encode(), None, ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise CoiError(f"protecting the workspace: mount {target} failed: {os.strerror(err)}")


def _umount(target: str) -> None:
    if _lib().umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not mounted, or gone
            raise OSError(err, os.strerror(err), target)

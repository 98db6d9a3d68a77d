"""Read the host's workspace for protect.py's plan without following any link: the
workspace folder itself (checked for the view helper's caller), the kind of each path, and
the git layout (a `.git` file's target, worktrees, submodules' git dirs).

A link planted anywhere on the way is reported as a link, never followed, so a hostile
workspace cannot make root read or mount a path elsewhere on the host. Stdlib and the
files of the view helper's copy (protect_host.SOURCES) only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from coi.boundary import protect
from coi.core.errors import CoiError

_MAX_GIT_DIRS = 64  # worktrees and submodules looked at, so a planted swarm stays cheap
_LOOKS = ("HEAD", "config", "commondir")  # what makes a folder under .git/modules a git dir


# --- the workspace folder itself -----------------------------------------------------------


def open_folder(path: Path, caller: int | None = None) -> int:
    """An O_PATH descriptor on the folder at path. With caller (the view helper's user):
    path must be absolute and plain, opened from / one component at a time without
    following any link, every folder above owned by root or the caller, the folder itself
    by the caller (CoiError saying which rule it breaks). Without: opened as it is."""
    if caller is None:
        return os.open(path, os.O_PATH | os.O_DIRECTORY)
    text = str(path)
    if not text.startswith("/") or os.path.normpath(text) != text or text == "/":
        raise CoiError(f"{text!r} is not an absolute, plain folder path")
    if text.split("/")[1] in ("proc", "sys", "dev", "run"):
        raise CoiError(f"{text} is outside your workspaces (a system folder)")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        parts = text.split("/")[1:]
        for i, part in enumerate(parts):
            step = os.open(part, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = step
            info = os.fstat(fd)
            shown = "/" + "/".join(parts[: i + 1])
            if stat.S_ISLNK(info.st_mode):
                raise CoiError(f"{shown} is a symbolic link: pass the folder it leads to")
            if not stat.S_ISDIR(info.st_mode):
                raise CoiError(f"{shown} is not a folder")
            last = i == len(parts) - 1
            if last and info.st_uid != caller:
                raise CoiError(f"{text} is owned by uid {info.st_uid}, not by you")
            if not last and info.st_uid not in (0, caller):
                raise CoiError(
                    f"{text} is outside your workspaces: {shown} belongs to uid {info.st_uid}"
                )
        return fd
    except FileNotFoundError:
        os.close(fd)
        raise CoiError(f"{text} does not exist") from None
    except BaseException:
        os.close(fd)
        raise


# --- survey (read the host's workspace, never following links) ---------------------------


def survey(workspace: Path, listed: Sequence[str]) -> protect.Survey:
    """The layout protect.plan needs: git facts, then the kind of every path it may touch."""
    pointer = _pointer(workspace)
    gitdirs = [d for d in (".git", pointer) if d]
    commondirs = {d: _commondir(workspace, d) for d in gitdirs}
    facts = protect.Survey(
        kinds={".git": kind_of(workspace, ".git")},
        git_pointer=pointer,
        commondirs=commondirs,
        worktrees=_subdirs(workspace, ".git/worktrees"),
        modules=git_dirs(workspace, ".git/modules"),
    )
    kinds = dict(facts.kinds)
    for rel in protect.targets(listed, facts):
        for part in [*reversed(PurePosixPath(rel).parents[:-1]), PurePosixPath(rel)]:
            kinds[part.as_posix()] = kind_of(workspace, part.as_posix())
    return protect.Survey(kinds, pointer, commondirs, facts.worktrees, facts.modules)


def kind_of(workspace: Path, rel: str) -> str:
    """file, dir, link, other or missing for rel under workspace (a link on the way: link)."""
    try:
        with walk(workspace, rel) as fd:
            mode = os.fstat(fd).st_mode
    except FileNotFoundError:
        return protect.MISSING
    except Link:
        return protect.LINK
    except NotADirectoryError:
        return protect.OTHER
    if stat.S_ISDIR(mode):
        return protect.DIR
    return protect.FILE if stat.S_ISREG(mode) else protect.OTHER


def _pointer(workspace: Path) -> str | None:
    """The workspace-relative target of a `.git` file (gitdir: PATH); None when outside or none."""
    if kind_of(workspace, ".git") != protect.FILE:
        return None
    text = _read_small(workspace, ".git")
    if not text.startswith("gitdir:"):
        return None
    return _inside(workspace, workspace, text[len("gitdir:") :].strip())


def _commondir(workspace: Path, gitdir: str) -> str | None:
    if kind_of(workspace, f"{gitdir}/commondir") != protect.FILE:
        return None
    return _inside(workspace, workspace / gitdir, _read_small(workspace, f"{gitdir}/commondir"))


def _inside(workspace: Path, base: Path, target: str) -> str | None:
    """target (relative to base, or absolute) as a workspace-relative path; None if outside."""
    full = Path(os.path.normpath(base / target.strip()))
    try:
        rel = full.relative_to(workspace)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else None


def _subdirs(workspace: Path, rel: str) -> tuple[str, ...]:
    if kind_of(workspace, rel) != protect.DIR:
        return ()
    names = sorted(os.listdir(workspace / rel))[:_MAX_GIT_DIRS]
    return tuple(f"{rel}/{n}" for n in names if kind_of(workspace, f"{rel}/{n}") == protect.DIR)


def git_dirs(workspace: Path, rel: str) -> tuple[str, ...]:
    """The submodules' git dirs under rel, nested ones included: a folder holding HEAD,
    config or commondir is one (its own modules/ is looked in too); any other folder is
    looked through (a submodule's name may hold '/'). Bounded; links never followed."""
    found: list[str] = []
    queue, looked = [rel], 0
    while queue and looked < _MAX_GIT_DIRS * 4 and len(found) < _MAX_GIT_DIRS:
        folder = queue.pop(0)
        looked += 1
        for sub in _subdirs(workspace, folder):
            if any(kind_of(workspace, f"{sub}/{n}") != protect.MISSING for n in _LOOKS):
                found.append(sub)
                queue.append(f"{sub}/modules")
            elif sub.count("/") < rel.count("/") + 8:
                queue.append(sub)
    return tuple(found[:_MAX_GIT_DIRS])


def _read_small(workspace: Path, rel: str) -> str:
    with walk(workspace, rel, os.O_RDONLY) as fd:
        return os.read(fd, 4096).decode("utf-8", "replace")


class Link(Exception):
    """A symbolic link on the way to a path."""


@contextlib.contextmanager
def walk(root: Path, rel: str, flags: int = os.O_PATH) -> Iterator[int]:
    """An fd for rel under root, opened component by component without following links."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        parts = PurePosixPath(rel).parts
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                step = os.open(part, (flags if last else os.O_PATH) | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise Link(rel) from None
                raise
            if stat.S_ISLNK(os.fstat(step).st_mode):  # O_PATH|O_NOFOLLOW opens the link itself
                os.close(step)
                raise Link(rel)
            os.close(fd)
            fd = step
        yield fd
    finally:
        os.close(fd)

"""A git worktree per slot: each session in worktree mode works on its own branch in its own
folder under COI_HOME, so parallel slots never touch each other's files.

The worktree of branch B of a workspace lives at COI_HOME/worktrees/<workspace id>/<B with
'%' and '/' escaped>, so a branch names one folder and the folder names its branch (the
default branch of slot N is `coi/N`). It is created from the workspace's HEAD, locked (so a
`git worktree prune` or `git gc` inside another container, which cannot see this folder,
never drops its git dir), and owned by the workspace's owner, as the workspace is.

git runs here without hooks or fsmonitor (checkpoints.git), whatever the repository says,
and always as the workspace's owner, so the files it writes are the owner's.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from coi.core import dropped, paths, safefs, slots
from coi.core.errors import CoiError, CommandFailed, UsageError
from coi.workspace import checkpoints, owner

T = TypeVar("T")

PREFIX = "coi/"
# A conservative subset of git-check-ref-format(1): letters, digits, '.', '_', '-', '/'.
_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,99}")
LOCK_REASON = "coi worktree slot (coi worktree discard NAME removes it)"


@dataclass(frozen=True)
class Worktree:
    """One coi worktree of a workspace: its branch and its folder."""

    branch: str
    path: Path

    def to_dict(self) -> dict[str, str]:
        """JSON-ready, lowercase keys."""
        return {"branch": self.branch, "path": str(self.path)}


# -- pure ---------------------------------------------------------------------------------


def default_branch(slot: int) -> str:
    """The branch of a slot that names none: coi/<slot>."""
    if slot < 1:
        raise ValueError(f"slot must be 1 or more, got {slot}")
    return f"{PREFIX}{slot}"


def check_branch(name: str) -> str | None:
    """Why name is not a branch coi makes a worktree for (None: fine)."""
    parts = name.split("/")
    if (
        not _BRANCH.fullmatch(name)
        or ".." in name
        or any(not p or p.startswith(".") or p.endswith((".lock", ".")) for p in parts)
    ):
        return (
            f"branch {name!r}: use letters, digits, '.', '_', '-' and '/' "
            "(no '..', no part that starts with '.' or ends with '.lock')"
        )
    return None


def folder_name(branch: str) -> str:
    """The one-level folder name of a branch ('%' and '/' escaped, so it maps back)."""
    return branch.replace("%", "%25").replace("/", "%2F")


def branch_of_folder(name: str) -> str:
    """The branch a folder_name came from."""
    return name.replace("%2F", "/").replace("%25", "%")


def root(workspace: Path, home: Path | None = None) -> Path:
    """The folder that holds the worktrees of a workspace."""
    base = paths.coi_home() if home is None else home
    return base / "worktrees" / slots.workspace_id(workspace)


def folder(workspace: Path, branch: str, home: Path | None = None) -> Path:
    """Where the worktree of branch lives."""
    return root(workspace, home) / folder_name(branch)


# Inside the container these hold its own file systems (tmpfs, proc, the worktree itself):
# a git dir mounted there at its host path would be hidden or would hide them.
HIDDEN_INSIDE = ("/workspace", "/proc", "/sys", "/dev", "/run")


def unreachable(common: Path) -> str | None:
    """Why the shared git dir cannot be mounted inside at its own path (None: it can)."""
    for top in HIDDEN_INSIDE:
        if common == Path(top) or Path(top) in common.parents:
            return (
                f"the repository's git dir {common} lies under {top}, which the container "
                "has for itself: --worktree needs the repository elsewhere"
            )
    return None


def wanted_branch(flag: str | None, configured: bool, slot: int) -> str | None:
    """The branch a session asks for: --worktree BRANCH, --worktree or the config alone give
    the slot's default; None: no worktree."""
    if flag:
        return flag
    if flag == "" or configured:
        return default_branch(slot)
    return None


# -- git (as the workspace's owner) -------------------------------------------------------
#
# Every step below runs as the workspace's owner (coi/core/dropped.py: no groups, no
# capabilities), never as root, so the folders, refs and objects git makes are the owner's
# and a mistake reaches no further than the owner could. Before git writes into the shared
# git dir, each folder and file it will write through is checked for a link (one planted in
# .git would send the write anywhere the owner may write); the callers freeze the
# workspace's containers around the steps that write (coi/sessions/freeze.py).


def _owned(workspace: Path, fn: Callable[..., T], *args: Any, extra: Sequence[Path] = ()) -> T:
    """fn(workspace, *args) as the workspace's owner, the worktrees' folder reachable."""
    who = dropped.needed(workspace)
    base = root(workspace)
    if who is not None:
        paths.ensure(base)
        owner.hand_back(base.parent, [base.name], who, deep=False)
    places = [workspace, *([base] if base.is_dir() else []), *extra]
    return dropped.call(who, fn, places, workspace, *args)


def _git(workspace: Path, *args: str) -> bytes:
    return checkpoints.git(workspace, *args)


def common_dir(workspace: Path) -> Path:
    """The repository's shared git dir (objects, refs, worktrees), absolute."""
    return _owned(workspace, _common_dir)


def _common_dir(workspace: Path) -> Path:
    raw = _git(workspace, "rev-parse", "--path-format=absolute", "--git-common-dir")
    return Path(raw.decode().strip())


def ensure(workspace: Path, branch: str) -> Worktree:
    """The worktree of branch, created from HEAD (a new branch) or from the branch as it is;
    an existing one is reused. Raises UsageError for what the user can fix."""
    why = check_branch(branch)
    if why:
        raise UsageError(why)
    if not checkpoints.is_git(workspace):
        raise UsageError(f"--worktree needs a git repository: {workspace} is not the top of one")
    common = common_dir(workspace)
    why = unreachable(common)
    if why:
        raise UsageError(why)
    return _owned(workspace, _ensure, branch, folder(workspace, branch), common, extra=[common])


def _ensure(workspace: Path, branch: str, place: Path, common: Path) -> Worktree:
    if (place / ".git").is_file():
        _check_reused(place, branch)
        return Worktree(branch, place)
    place.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if _has_branch(workspace, branch):
        args = [str(place), branch]
    elif _has_commit(workspace):
        args = ["-b", branch, str(place), "HEAD"]
    else:
        raise UsageError(f"{workspace} has no commit yet: commit once, then use --worktree")
    refuse_links(common, written_by(branch, place.name))
    _git_user_error(workspace, "worktree", "add", "--lock", "--reason", LOCK_REASON, *args)
    return Worktree(branch, place)


def written_by(branch: str, admin: str) -> list[str]:
    """The paths of the shared git dir that making or removing branch's worktree writes
    (its ref, its reflog, the worktree's admin folder), each folder on the way included."""
    found: list[str] = ["packed-refs"]
    for top in (f"refs/heads/{branch}", f"logs/refs/heads/{branch}", f"worktrees/{admin}"):
        parts = top.split("/")
        found += ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return list(dict.fromkeys(found))


def refuse_links(common: Path, rels: Sequence[str]) -> None:
    """UsageError when one of rels under the git dir is a link (or lies beyond one)."""
    fd = os.open(common, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for rel in rels:
            try:
                info = safefs.lstat(fd, rel)
            except safefs.Escape:
                info = None
                bad = True
            else:
                bad = info is not None and stat.S_ISLNK(info.st_mode)
            if bad:
                raise UsageError(
                    f"{common / rel} is a symbolic link, which git would write through: "
                    "remove it (a session may have planted it), then try again"
                )
    finally:
        os.close(fd)


def _check_reused(place: Path, branch: str) -> None:
    try:
        on = _git(place, "symbolic-ref", "-q", "--short", "HEAD").decode().strip()
    except CoiError:
        on = ""
    if on != branch:
        raise UsageError(
            f"worktree {place} is on {on or 'a detached HEAD'}, not {branch}: "
            f"check out {branch} there, or `coi worktree discard {branch}`"
        )


def _has_commit(workspace: Path) -> bool:
    try:
        _git(workspace, "rev-parse", "-q", "--verify", "HEAD^{commit}")
    except CoiError:
        return False
    return True


def has_branch(workspace: Path, branch: str) -> bool:
    """True when the repository has the local branch."""
    return _owned(workspace, _has_branch, branch)


def _has_branch(workspace: Path, branch: str) -> bool:
    try:
        _git(workspace, "show-ref", "--verify", "-q", f"refs/heads/{branch}")
    except CoiError:
        return False
    return True


def _git_user_error(workspace: Path, *args: str) -> bytes:
    try:
        return _git(workspace, *args)
    except CommandFailed as exc:
        raise UsageError(f"git {args[0]} {args[1]}: {said(exc)}") from None


def said(exc: CommandFailed) -> str:
    """The line of git's output that says why it failed."""
    lines = [ln.strip() for ln in (exc.stderr or exc.stdout).splitlines() if ln.strip()]
    why = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    return (why or lines or ["no output"])[-1]


def all_of(workspace: Path) -> list[Worktree]:
    """The coi worktrees git knows for this workspace (those under its root)."""
    return _owned(workspace, _all_of, root(workspace))


def _all_of(workspace: Path, mine: Path) -> list[Worktree]:
    raw = _git(workspace, "worktree", "list", "--porcelain", "-z").decode()
    found, current = [], {}
    for field in [*raw.split("\0"), ""]:
        if field:
            key, _, value = field.partition(" ")
            current[key] = value
            continue
        where = Path(current.get("worktree", "/"))
        if where.parent == mine:
            found.append(Worktree(branch_of_folder(where.name), where))
        current = {}
    return found


def merge(workspace: Path, branch: str) -> str:
    """Merge branch into the workspace's current branch (a merge commit, hooks off, as the
    owner); on a conflict abort, leave the tree as it was and raise. The new HEAD."""
    return _owned(workspace, _merge, branch)


def _merge(workspace: Path, branch: str) -> str:
    if not _has_branch(workspace, branch):
        raise UsageError(f"no branch {branch} in {workspace}: see `coi worktree list`")
    if _dirty(workspace):
        raise UsageError(f"{workspace} has uncommitted changes to tracked files: commit or stash")
    _need_identity(workspace)
    argv = ["merge", "--no-ff", "--no-edit", "-m", f"Merge coi worktree {branch}", branch]
    try:
        _git(workspace, *argv)
    except CommandFailed as exc:
        conflicts = _conflicts(workspace)
        with contextlib.suppress(CommandFailed):
            _git(workspace, "merge", "--abort")
        if conflicts:
            raise CoiError(
                f"merging {branch} conflicts in {', '.join(conflicts[:5])}: nothing changed; "
                f"merge it yourself with `git merge {branch}`"
            ) from None
        raise CoiError(f"git merge {branch} failed: {said(exc)}; nothing changed") from None
    return _git(workspace, "rev-parse", "HEAD").decode().strip()


def _need_identity(workspace: Path) -> None:
    """A merge commit needs the owner's name and email: say how to set them when missing
    (git's own words, 'unable to auto-detect email address', name no fix)."""
    try:
        _git(workspace, "var", "GIT_COMMITTER_IDENT")
    except CommandFailed:
        raise UsageError(
            f"git has no name or email for {pwd_name(os.getuid())} to sign the merge commit: "
            'run `git config --global user.name "Your Name"` and '
            "`git config --global user.email you@example.com` as that user, then merge again"
        ) from None


def pwd_name(uid: int) -> str:
    """The user's login name, or uid N."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _dirty(workspace: Path) -> bool:
    raw = _git(workspace, "status", "--porcelain", "-z", "--untracked-files=no")
    return bool(raw.strip(b"\0"))


def _conflicts(workspace: Path) -> list[str]:
    try:
        raw = _git(workspace, "diff", "--name-only", "--diff-filter=U", "-z")
    except CommandFailed:
        return []
    return [os.fsdecode(p) for p in raw.split(b"\0") if p]


def discard(workspace: Path, tree: Worktree) -> None:
    """Remove the worktree (its folder and git dir) and its branch."""
    common = common_dir(workspace)
    _owned(workspace, _discard, tree, common, extra=[common])


def _discard(workspace: Path, tree: Worktree, common: Path) -> None:
    refuse_links(common, written_by(tree.branch, tree.path.name))
    if any(t.path == tree.path for t in _all_of(workspace, tree.path.parent)):
        with contextlib.suppress(CommandFailed):  # already unlocked
            _git(workspace, "worktree", "unlock", str(tree.path))
        if tree.path.exists():
            _git(workspace, "worktree", "remove", "--force", str(tree.path))
        else:  # its folder went by hand: git forgets it (unlocked, so prunable now)
            _git(workspace, "worktree", "prune")
    if _has_branch(workspace, tree.branch):
        _git(workspace, "branch", "-D", tree.branch)

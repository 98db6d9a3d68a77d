"""Submodules a session planted: when a session ends, the nested repositories that the
workspace's index names as submodules lose what would make the host's git run code.

Protected paths keep the workspace repository's own git dir (and `.git/modules/*`)
read-only, but `.git/index` must stay writable for commits inside. So the container
can `git init` a folder, put `core.fsmonitor = <payload>` in its config and `git add` it
as a submodule: the next `git status` on the host recurses into it and runs the payload.
coi renames such a config (and a nested `commondir`, `config.worktree` or hooks folder)
to `NAME.coi-quarantined-<time>` and says so; a config with only inert keys stays.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from coi.core.errors import CoiError
from coi.workspace import checkpoints

# Keys that never make git run a program (anything else in a planted config is refused:
# core.fsmonitor, core.hooksPath, core.sshCommand, *.textconv, filter.*, include.path...).
INERT = re.compile(
    r"core\.(repositoryformatversion|filemode|bare|logallrefupdates|symlinks|ignorecase"
    r"|precomposeunicode|worktree|autocrlf|eol|safecrlf)"
    r"|remote\.[^\n]+\.(url|pushurl|fetch|push|tagopt|prune|mirror)"
    r"|branch\.[^\n]+\.(remote|merge|rebase|pushremote)"
    r"|submodule\.[^\n]+\.(url|active|branch)"
    r"|user\.(name|email)|extensions\.objectformat|init\.defaultbranch|pull\.rebase",
    re.IGNORECASE,
)
REDIRECTS = ("commondir", "config.worktree")


def gitlinks(workspace: Path) -> Iterator[str]:
    """The paths the index records as submodules (mode 160000)."""
    raw = checkpoints.git(workspace, "ls-files", "--stage", "-z")
    for record in raw.split(b"\0"):
        head, _, path = record.partition(b"\t")
        if head.startswith(b"160000 "):
            yield os.fsdecode(path)


def git_dir(folder: Path) -> Path | None:
    """The git dir a submodule's folder uses: its `.git` folder, or where a `.git` file
    points; None when it has neither."""
    dotgit = folder / ".git"
    if dotgit.is_dir() and not dotgit.is_symlink():
        return dotgit
    if dotgit.is_file() and not dotgit.is_symlink():
        text = dotgit.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text.removeprefix("gitdir:").strip())
            return target if target.is_absolute() else (folder / target)
    return None


def exec_keys(config: Path, workspace: Path) -> list[str]:
    """The keys of a config file that are not known to be inert (includes not followed)."""
    raw = checkpoints.git(
        workspace, "config", "--no-includes", "--file", str(config), "--list", "--name-only", "-z"
    )
    keys = [os.fsdecode(k) for k in raw.split(b"\0") if k]
    return [k for k in keys if not INERT.fullmatch(k)]


def quarantine(path: Path, stamp: str) -> Path:
    """Rename path out of git's way; the new name."""
    moved = path.with_name(f"{path.name}.coi-quarantined-{stamp}")
    os.rename(path, moved)
    return moved


def neutralize(workspace: Path, warn: Callable[[str], None]) -> list[Path]:
    """Quarantine what planted submodules hold that would run code; what was moved."""
    try:
        if not checkpoints.is_git(workspace):
            return []
        paths = list(gitlinks(workspace))
    except CoiError:
        return []
    own = (workspace / ".git").resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved: list[Path] = []
    for rel in paths:
        found = git_dir(workspace / rel)
        if found is None:
            continue
        gitdir = found.resolve()
        if gitdir.is_relative_to(own) or not gitdir.is_relative_to(workspace.resolve()):
            continue  # the repository's own git dir (protected), or out of the container's reach
        moved += _neutralize_one(workspace, rel, gitdir, stamp, warn)
    return moved


def _neutralize_one(
    workspace: Path, rel: str, gitdir: Path, stamp: str, warn: Callable[[str], None]
) -> list[Path]:
    moved = []
    config = gitdir / "config"
    if config.is_symlink() or (config.is_file() and _risky(config, workspace)):
        moved.append(quarantine(config, stamp))
    for name in REDIRECTS:
        if (gitdir / name).exists() or (gitdir / name).is_symlink():
            moved.append(quarantine(gitdir / name, stamp))
    hooks = gitdir / "hooks"
    if hooks.is_symlink() or (hooks.is_dir() and _live_hooks(hooks)):
        moved.append(quarantine(hooks, stamp))
    for path in moved:
        warn(f"submodule {rel}: moved {path.name} aside, it could make the host's git run code")
    return moved


def _risky(config: Path, workspace: Path) -> bool:
    try:
        return bool(exec_keys(config, workspace))
    except CoiError:
        return True  # a config git cannot read is not one to leave in place


def _live_hooks(hooks: Path) -> bool:
    return any(not entry.name.endswith(".sample") for entry in hooks.iterdir())

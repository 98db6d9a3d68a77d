"""A slot's git worktree in its launch: the worktree mounted at /workspace, and the main
repository's git dir mounted at its own host path (where the worktree's `.git` file points),
so commits inside share its objects and refs while its hooks and config stay read-only.

The git dir's disk is a locked view (coi/boundary/protect_host.py: read-only binds the
container cannot undo; built in-process as root, else through coi's view helper) of the
git entries that run code on the host (hooks, config, info/attributes, commondir,
config.worktree), of the same in each worktree's own dir (and
its gitdir) and in each submodule's git dir under modules/ (the main tree's `git status`
runs a submodule's config); objects, refs, logs and the slot's worktree dir stay writable.
What the container makes anew there (a git dir of its own, say) is swept when the session
ends (coi/workspace/gitlinks.py).
Without root or the helper coi refuses the start (coi/launch/executor.protect_workspace);
with no protected path at all, hooks/ and config are plain read-only disks.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.boundary import protect, protect_host, protect_survey
from coi.core import labels
from coi.core.errors import UsageError

if TYPE_CHECKING:  # imported where a worktree is asked for: most sessions have none
    from coi.workspace import worktree

GIT_DEVICE = "worktree-git"
LABEL = labels.PREFIX
BRANCH_KEY = labels.WORKTREE_BRANCH
FOLDER_KEY = labels.WORKTREE
WORKSPACE_KEY = labels.WORKSPACE
# A worktree's own files that would redirect or extend the config of git run in it on the host.
PER_WORKTREE = ("commondir", "config.worktree", "gitdir")
_MAX_WORKTREES = 64


def for_slot(
    flag: str | None,
    workspace: Path,
    slot: int,
    name: str,
    listing: list[dict[str, Any]],
    reuse: bool,
) -> worktree.Worktree | None:
    """The worktree a slot's session uses (made when new), under the slot lock; None: none.

    flag is --worktree's value ("" for the slot's default branch, None when not asked);
    listing holds the live instances. A reused (persistent) container keeps the worktree
    it was made with.
    """
    records = {i["name"]: (i.get("config") or {}) for i in listing}
    kept = records.get(name, {}).get(BRANCH_KEY) if reuse else None
    if reuse and ((bool(flag) and flag != kept) or (flag is not None and not kept)):
        had = f"branch {kept}" if kept else "no worktree"
        raise UsageError(
            f"{name} is kept (persistent) with {had}: pass another --slot, or "
            f"`coi kill {name}` first"
        )
    if flag is None and not kept:
        return None
    from coi.workspace import worktree

    branch = kept or worktree.wanted_branch(flag, False, slot)
    if branch is None:
        return None
    for other, config in records.items():
        same = config.get(WORKSPACE_KEY) == str(workspace) and config.get(BRANCH_KEY) == branch
        if same and other != name:
            raise UsageError(f"branch {branch} is in use by {other}: pick another branch")
    return worktree.ensure(workspace, branch)


def apply(spec: Any, tree: worktree.Worktree | None) -> Any:
    """The launch spec with the worktree at /workspace (owned like the workspace) and the
    shared git dir; the labels still name the workspace, and say the branch."""
    if tree is None:
        return spec
    from coi.workspace import worktree

    labels = {
        WORKSPACE_KEY: str(spec.workspace),
        FOLDER_KEY: str(tree.path),
        BRANCH_KEY: tree.branch,
    }
    common = worktree.common_dir(spec.workspace)
    return dataclasses.replace(
        spec,
        workspace=tree.path,
        shared_git=common,
        extra_config={**spec.extra_config, **labels},
    )


def devices(name: str, common: Path | None, locked: bool) -> dict[str, dict[str, str]]:
    """The disks that give the container the shared git dir (none without a worktree)."""
    if common is None:
        return {}
    if locked:
        view = str(protect.view_path(view_name(name)))
        return {GIT_DEVICE: {"type": "disk", "source": view, "path": str(common),
                             "recursive": "true"}}  # fmt: skip
    found = {GIT_DEVICE: {"type": "disk", "source": str(common), "path": str(common)}}
    for entry in ("hooks", "config"):
        if (common / entry).exists():
            found[f"{GIT_DEVICE}-{entry}"] = {"type": "disk", "source": str(common / entry),
                "path": str(common / entry), "readonly": "true"}  # fmt: skip
    return found


def view_name(name: str) -> str:
    """The locked view of an instance's shared git dir (`.` is in no instance name)."""
    return f"{name}.git"


def listed(common: Path) -> tuple[str, ...]:
    """The git dir's entries kept read-only: the git entries, each worktree's own, and
    those of every submodule's git dir (nested ones included), which the main tree uses."""
    found = list(protect.GIT_ENTRIES)
    if protect_survey.kind_of(common, "worktrees") == protect.DIR:
        names = sorted(os.listdir(common / "worktrees"))[:_MAX_WORKTREES]
        for sub in names:
            if protect_survey.kind_of(common, f"worktrees/{sub}") == protect.DIR:
                found += [f"worktrees/{sub}/{e}" for e in (*protect.GIT_ENTRIES, *PER_WORKTREE)]
    for sub in protect_survey.git_dirs(common, "modules"):
        found += [f"{sub}/{e}" for e in protect.GIT_ENTRIES]
    return tuple(dict.fromkeys(found))


def stage(name: str, common: Path | None, locked: bool) -> None:
    """Build the locked view of the shared git dir before a start (as root, or through the
    view helper); not locked: coi builds no view (its caller refuses or wants none)."""
    if common is None or not locked:
        return
    protect_host.stage(view_name(name), common, listed(common))


def release(name: str) -> None:
    """Unmount the git view of a stopped or deleted instance; no view: no-op."""
    if protect_host.can_stage():
        protect_host.release(view_name(name))


def host_folder(device_name: str, device: Mapping[str, str]) -> Path | None:
    """The host folder behind the shared git disk (its view is not what to sweep)."""
    if device_name == GIT_DEVICE:
        return Path(device["path"])
    return None

"""The one launch path: every instance coi creates is made here.

coi/launch/spec.py decides the instance body (pure); `create` carries it out, then
before_start puts the network rules and the protected view in place, and `teardown`
undoes all of it. Security and Docker settings live in the base profile and in the
spec, so no caller can forget them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coi.boundary import protect
from coi.core import faults, labels, output, slots
from coi.core.errors import CoiError, IncusError, NotFound
from coi.core.labels import Mode
from coi.launch import profiles, worktrees
from coi.launch.spec import (
    WORKSPACE_PATH,
    LaunchSpec,
    instance_config,
    protected_view,
    root_owned_warning,
)

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI


def ensure_idmap(uid: int) -> None:
    """Make sure /etc/subuid and /etc/subgid allow mapping `uid` (raw.idmap needs it)."""
    from coi.boundary.idmap import add_subid_lines, subid_lines

    line = f"root:{uid}:1"
    if line in subid_lines():
        return
    if os.geteuid() != 0:
        raise CoiError(
            f"mapping workspace owner uid {uid} needs `{line}` in /etc/subuid and "
            "/etc/subgid: run `sudo coi setup` as that user"
        )
    add_subid_lines([line])


def prepare(incus: IncusAPI, pool: str, enforce: str) -> None:
    """Make the coi profiles current before the first launch of this process."""
    key = (id(incus), pool, enforce)
    if key not in _prepared:
        profiles.apply(incus, {"pool": pool, "network": enforce})
        _prepared.add(key)


_prepared: set[tuple[int, str, str]] = set()


def create(
    incus: IncusAPI,
    spec: LaunchSpec,
    *,
    start: bool = True,
    log: Callable[[str], None] | None = None,
) -> str:
    """Create (and start) the instance; on a failure halfway, delete what was made."""
    body = instance_config(spec)
    if "raw.idmap" in body["config"] and spec.workspace_uid is not None:
        ensure_idmap(spec.workspace_uid)
    elif spec.workspace is not None and spec.workspace_uid == 0:
        output.once(
            f"root-owned-{slots.workspace_id(spec.workspace)}",
            root_owned_warning(spec.workspace),
            level="warn",
        )
    faults.point("create")
    try:
        with _view_sources(spec) as standing:
            incus.create_instance(body)
            if standing:  # a stand-in goes when its block ends: the creation must be done
                incus.instance(spec.name)
    except IncusError as exc:
        if "Image not provided" in str(exc) or "not found" in str(exc).lower():
            raise NotFound(
                f"image {spec.image!r} not found: build it with `coi build` "
                "or pick one from `coi image list`"
            ) from exc
        raise
    if start:
        start_or_discard(incus, spec.name, spec)
    return spec.name


@contextlib.contextmanager
def _view_sources(spec: LaunchSpec) -> Iterator[bool]:
    """Incus takes a recursive disk only when its source exists: as root, the view's folder
    (its start fills it); without root, the view helper's stand-in while Incus creates
    (yields True: the creation must end inside the block)."""
    from coi.boundary import protect_host

    views = [(spec.name, spec.workspace)] if protected_view(spec) else []
    if views and spec.shared_git is not None:
        views.append((worktrees.view_name(spec.name), spec.shared_git))
    with contextlib.ExitStack() as stack:
        for view, folder in views:
            if os.geteuid() == 0:
                protect.view_path(view).mkdir(parents=True, exist_ok=True, mode=0o700)
            elif folder is not None:
                stack.enter_context(protect_host.stand_in(view, folder))
        yield bool(views) and os.geteuid() != 0


def before_start(incus: IncusAPI, spec: LaunchSpec) -> None:
    """Put the network rules in place before the first packet; raise (fail closed) if not."""
    from coi.network import enforce

    with _view_sources(spec):  # its NIC is attached by an update, which checks every disk
        enforce.before_start(incus, spec.name, spec.network_mode, allowlist_policy(spec))
    protect_workspace(spec)


def allowlist_policy(spec: LaunchSpec) -> dict[str, str]:
    """[network]'s allowlist settings for an allowlist instance launched without them
    (`coi container launch`); sessions put them in extra_config themselves."""
    from coi.network import policy

    if (
        spec.network_mode not in (Mode.ALLOWLIST, Mode.LEARN)
        or policy.ENTRIES_KEY in spec.extra_config
    ):
        return {}
    from coi.config import load

    section = load.load(spec.workspace or Path.cwd()).network
    return policy.policy_keys(
        section.allowed_domains, section.resolver, section.refresh_interval_minutes
    )


def protect_workspace(spec: LaunchSpec) -> None:
    """Build the workspace's locked view before a start (as root, or through coi's view
    helper); without either, refuse the start in one line rather than leave them writable."""
    from coi.boundary import protect_host

    if spec.workspace is None or not spec.protected_paths:
        return
    if not protected_view(spec):
        raise CoiError(
            "protected paths (.git/hooks, .vscode...) need coi's view helper to be enforced "
            "without root: run `sudo coi setup` once to install it"
        )
    protect_host.stage(spec.name, spec.workspace, spec.protected_paths)
    worktrees.stage(spec.name, spec.shared_git, locked=True)


def teardown(incus: IncusAPI, name: str, *, force: bool = True) -> None:
    """Delete an instance coi made and everything coi holds for it (network rules...)."""
    from coi.network import enforce

    try:  # one read serves both: the mode (which rules go) and the folders to sweep
        record = incus.instance(name)
    except NotFound:
        record = {}
    mode = (record.get("config") or {}).get(enforce.MODE_KEY)
    folders = folders_of(record)
    _discard(incus, name) if force else incus.delete_instance(name)
    enforce.forget(incus, name, mode)
    from coi.broker import process

    process.stop(name)  # the container is gone: its credential broker goes too
    sweep(folders)  # the container is gone: nothing can plant anything again meanwhile
    # Only once it is gone: unlinking a placeholder would unmount it in a live container.
    with contextlib.suppress(CoiError):
        if not incus.has_instance(name):
            release_workspace(name)


def release_workspace(name: str) -> None:
    """Unmount the locked view of a stopped or deleted instance and remove its placeholders."""
    from coi.boundary import protect_host

    if protect_host.can_stage():
        protect_host.release(name)
        worktrees.release(name)


def release_orphaned_views(incus: IncusAPI) -> list[str]:
    """Release the views of instances that are gone without coi's teardown (coi killed, or
    the instance deleted with incus itself): a view left mounted keeps the files it locks
    busy in the user's workspace. Returns the names released."""
    from coi.boundary import protect_host

    if not protect_host.can_stage():
        return []
    # Only views older than a launch takes: a launch makes the view before its instance.
    views = protect_host.staged(settled=True)
    if not views:
        return []
    living = set(incus.instance_names(all_projects=True))
    gone = sorted(views - living)
    for name in gone:
        release_workspace(name)
    return gone


@contextlib.contextmanager
def changing(incus: IncusAPI, name: str) -> Iterator[dict[str, Any]]:
    """The record of an instance coi is about to change (devices, config), read once. A
    stopped instance's disks name its locked views, which exist only while coi runs it, and
    Incus refuses every update until they do: meanwhile each gets an empty stand-in
    (protect_host.stand_in). A start is coi's own (`coi shell --persistent`), which builds
    the real views, so a change made now is kept, not replayed later."""
    from coi.boundary import protect_host

    record = incus.instance(name)
    with contextlib.ExitStack() as stack:
        for view, folder in views_of(record):
            stack.enter_context(protect_host.stand_in(view, folder))
        yield record


def views_of(record: dict[str, Any]) -> list[tuple[str, Path]]:
    """(view name, host folder it shows) of each locked view an instance's disks name."""
    config = record.get("config") or {}
    workspace = config.get(worktrees.FOLDER_KEY) or config.get(labels.WORKSPACE)
    found = []
    for dev, device in (record.get("devices") or {}).items():
        source = Path(str(device.get("source", "")))
        if device.get("type") != "disk" or source.parent != protect.VIEW_ROOT:
            continue
        folder = worktrees.host_folder(dev, device) or (Path(workspace) if workspace else None)
        if folder is not None:
            found.append((source.name, folder))
    return found


def host_folders(incus: IncusAPI, name: str) -> list[Path]:
    """The host folders mounted into an instance (its disks with a host path); the
    workspace is its own folder, not the locked view the disk mounts."""
    try:
        return folders_of(incus.instance(name))
    except NotFound:
        return []


def folders_of(record: dict[str, Any]) -> list[Path]:
    """host_folders of an instance record already read."""
    config = record.get("config") or {}
    workspace = config.get(worktrees.FOLDER_KEY) or config.get(labels.WORKSPACE)
    found = []
    for dev, device in (record.get("devices") or {}).items():
        source = str(device.get("source", ""))
        if device.get("type") != "disk" or not source.startswith("/"):
            continue
        if (shared := worktrees.host_folder(dev, device)) is not None:
            found.append(shared)
            continue
        found.append(
            Path(workspace if device.get("path") == WORKSPACE_PATH and workspace else source)
        )
    main = config.get(labels.WORKSPACE)
    if config.get(worktrees.FOLDER_KEY) and main and Path(main) not in found:
        found.append(Path(main))  # a worktree session's repository: swept with its git dir
    return found


def sweep(folders: list[Path]) -> None:
    """Undo what a container could leave in host folders to act on the host later: set-id
    bits (coi/boundary/setid.py) and submodules planted to run code (coi/workspace/gitlinks.py)."""
    from coi.workspace import gitlinks

    clear_setid(folders)
    gitlinks.sweep(folders, output.warn)  # together: a worktree's submodule may point into .git


def clear_setid(folders: list[Path]) -> None:
    """Clear, and warn about, set-id bits a container left in host folders (boundary/setid.py)."""
    from coi.boundary import setid

    setid.report(setid.clear(folders), output.warn)


START_TRIES = 3


def start_or_discard(incus: IncusAPI, name: str, spec: LaunchSpec | None = None) -> None:
    """Start a fresh instance; delete it when starting fails or is interrupted.

    Its static address is reserved under a lock of this COI_HOME; another user's coi (or
    a test with its own home) can reserve the same one at the same moment, and Incus then
    refuses the second start. That one gets a new address and starts again (bounded).
    """
    try:
        for attempt in range(START_TRIES):
            if spec is not None:
                before_start(incus, spec)
            faults.point("start")
            try:
                incus.set_state(name, "start")
                return
            except IncusError as exc:
                if spec is None or not address_taken(exc) or attempt == START_TRIES - 1:
                    raise
                output.detail(f"{name}: its address was taken meanwhile; choosing another")
    except BaseException:
        teardown(incus, name)
        raise


def address_taken(exc: CoiError) -> bool:
    """Incus refused a start because another NIC holds the same static address."""
    return "already defined on another NIC" in str(exc)


def _discard(incus: IncusAPI, name: str) -> None:
    with contextlib.suppress(CoiError):
        incus.delete_instance(name, force=True)


def create_in_slot(
    incus: IncusAPI,
    workspace: Path,
    make_spec: Callable[[str, int], LaunchSpec],
    *,
    limit: int,
    preferred: int = 0,
    name_prefix: str | None = None,
    start: bool = True,
    log: Callable[[str], None] | None = None,
) -> LaunchSpec:
    """Take the lowest free slot of the workspace and create its instance, under the lock.

    The per-workspace lock spans listing, allocation and creation, so parallel coi
    processes never pick the same slot.
    """
    from coi.core import paths, slots
    from coi.core.lock import file_lock

    pre = name_prefix if name_prefix is not None else slots.prefix()
    lock = paths.locks_dir() / f"workspace-{slots.workspace_id(workspace)}.lock"
    with file_lock(lock, what=f"the slot lock of {workspace}"):
        taken = slots.slots_in_use(incus.instance_names(), workspace, pre)
        slot = slots.allocate(taken, limit, preferred)
        if preferred and slot != preferred and log:
            log(f"slot {preferred} is busy: using slot {slot}")
        spec = make_spec(slots.container_name(workspace, slot, pre), slot)
        create(incus, spec, start=False)
    if start:
        start_or_discard(incus, spec.name, spec)
    return spec

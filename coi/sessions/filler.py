"""The warm pool's filler and drain: booted containers of a workspace made from the
session's own launch spec, ready for the next session to take (coi/sessions/pool.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from coi.config.endpoint import connect
from coi.core import output, paths, slots
from coi.core.errors import CoiError
from coi.core.lock import file_lock
from coi.launch import executor
from coi.launch.spec import POOL_LABEL, LaunchSpec, pool_key

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.incus.api import IncusAPI
from coi.sessions.model import Request, load_config
from coi.sessions.plan import _occupants, _spec, session_mounts
from coi.sessions.provision import (
    _SETUP_SH,
    NETWORK_WAIT_SH,
    _extra_cas,
    _setup_tar,
    said_no_network,
)
from coi.sessions.watch import is_watched

FILLER_ENV = "COI_FILLER"  # set in a filler started in the background (not COI_POOL_*: config)


def fill_pool(
    request: Request, size: int | None = None, *, log: Callable[[str], None] = output.info
) -> list[str]:
    """Bring the workspace's pool to `size` ready containers (default [pool] size): remove
    the unwanted ones (pool.unwanted), then make the missing ones one by one. One filler
    per workspace at a time: a background filler gives up when another runs, a foreground
    one waits for it. Returns the names made."""
    from coi.config import tools
    from coi.sessions import pool

    cfg = load_config(request, quiet=True)
    want = cfg.pool.size if size is None else size
    workspace = request.workspace
    tool = tools.resolve(cfg, request.tool)
    incus = connect(cfg)
    executor.prepare(incus, cfg.incus.storage_pool, cfg.incus.network)
    wsid, prefix = slots.workspace_id(workspace), slots.prefix()
    background = bool(os.environ.get(FILLER_ENV))
    lock = paths.locks_dir() / f"pool-{wsid}.lock"
    with file_lock(lock, timeout=0 if background else 600, what=f"the pool filler of {workspace}"):
        mounts, readonly = session_mounts(cfg, tool, request, lambda _: None)
        spec = _spec(cfg, workspace, "pooled", 1, tool.name, "", mounts, cfg.profile, readonly)
        cas = _extra_cas(cfg, lambda _: None)
        key = _pool_key(cfg, spec, cas)
        listing = incus.instances()
        mine = [m for m in pool.members(listing, prefix) if m.workspace_id == wsid]
        watched = {m.name for m in mine if is_watched(m.name)}
        stale = pool.unwanted(mine, key, watched)
        extra = pool.unwanted(mine, key, watched, want)
        for gone in extra:
            executor.teardown(incus, gone.name)
            why = f"{gone.state}, or made for another config" if gone in stale else "one too many"
            log(f"removed {gone.name} from the pool ({why})")
        kept = len(mine) - len(extra)
        made = []
        for _ in range(max(0, want - kept)):
            made.append(_fill_one(incus, cfg, spec, (key, cas), log))
            log(f"{made[-1]} is ready in the pool")
    return made


def _pool_key(cfg: Config, spec: LaunchSpec, cas: dict[str, bytes]) -> str:
    """The pool key of a session's spec (the filler's and the claim's, one function): the
    spec's, the CAs the filler puts in and the credentials mode, which is not the spec's."""
    from coi.sessions import pool

    return pool.key_with(pool_key(spec), cas, {"credentials": cfg.credentials.mode})


def _fill_one(
    incus: IncusAPI,
    cfg: Config,
    keyed_spec: LaunchSpec,
    keyed: tuple[str, dict[str, bytes]],
    log: Callable[[str], None],
) -> str:
    """Make one pooled container: create it in a free slot (under the slot lock), start it,
    pass its boot barrier, wait for its address, then label it ready with its key. It is
    made from the very spec its key was taken of, only its name and slot told."""
    from dataclasses import replace

    from coi.sessions import pool

    prefix, workspace = slots.prefix(), keyed_spec.workspace
    assert workspace is not None  # a pool is a workspace's
    lock = paths.locks_dir() / f"workspace-{slots.workspace_id(workspace)}.lock"
    with ExitStack() as watch:
        with file_lock(lock, what=f"the slot lock of {workspace}"):
            listing = incus.instances()
            taken = {o.slot for o in _occupants(listing, workspace, prefix)}
            slot = slots.allocate(taken, cfg.defaults.max_slots)
            name = slots.container_name(workspace, slot, prefix)
            # Watched while it is made: no other coi process reaps or takes it meanwhile.
            watch.enter_context(file_lock(paths.watch_lock(name), timeout=30))
            filling = {**keyed_spec.extra_config, POOL_LABEL: pool.FILLING}
            spec = replace(
                keyed_spec, name=name, slot=slot, tool=None, session=None, extra_config=filling
            )
            executor.create(incus, spec, start=False)
        try:
            executor.start_or_discard(incus, name, spec)
            key, cas = keyed
            with _setup_tar(None, None, cas) as tar:  # the static files, past the boot barrier
                script = _SETUP_SH + _SETTLED_SH + NETWORK_WAIT_SH
                setup = incus.execute(name, ["sh", "-c", script], stdin=tar, idempotent=True)
            if setup.exit_code != 0:
                raise CoiError(f"preparing {name} failed: {setup.stderr.strip()[-200:]}")
            said_no_network(setup.stdout, name, log)
            incus.update_instance(name, {"config": {POOL_LABEL: key}})
        except BaseException:
            executor.teardown(incus, name)
            raise
    return name


_SETTLED_SH = """
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    timeout 30 systemctl is-system-running --wait >/dev/null 2>&1 || true
fi
"""


def spawn_filler(request: Request) -> None:
    """Start a filler for the workspace's pool in the background (niced, detached, its
    words in the pool log); one already running makes it give up at once."""
    import subprocess

    argv = [sys.executable, "-m", "coi", "pool", "fill", "--workspace", str(request.workspace)]
    if request.profile:
        argv += ["--profile", request.profile]
    log = paths.logs_dir() / "pool.log"
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {**os.environ, FILLER_ENV: "1"}
    with open(log, "ab") as sink:
        subprocess.Popen(
            ["nice", "-n", "10", *argv],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            env=env,
            start_new_session=True,
            close_fds=True,
        )


def drain_pool(incus: IncusAPI, workspace: Path | None, log: Callable[[str], None]) -> list[str]:
    """Remove the pooled containers of a workspace (None: of every workspace), each after
    its workspace's filler is done (its lock); a container a session holds is left alone."""
    from coi.sessions import pool

    prefix = slots.prefix()
    listing = incus.instances()
    wanted = None if workspace is None else slots.workspace_id(workspace)
    workspaces = {m.workspace_id for m in pool.members(listing, prefix)} | {wanted}
    removed = []
    for wsid in sorted(w for w in workspaces if w is not None and wanted in (None, w)):
        with file_lock(
            paths.locks_dir() / f"pool-{wsid}.lock", timeout=600, what="the pool filler"
        ):
            # Read again: a filler that was running may have added some meanwhile.
            fresh = incus.instances()
            for member in pool.members(fresh, prefix):
                if member.workspace_id != wsid or is_watched(member.name):
                    continue
                executor.teardown(incus, member.name)
                removed.append(member.name)
                log(f"removed {member.name} from the pool")
    return removed

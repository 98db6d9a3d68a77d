"""A coi session in a container: open it (slot, launch or reuse, CAs, credentials,
restored state), then finish it (save, tear down unless persistent) exactly once.

`coi shell` and `coi run` share this; only what they do in between differs.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from coi.boundary import protect
from coi.config.endpoint import connect
from coi.core import faults, output, paths, slots
from coi.core.errors import CoiError, NotFound, UsageError
from coi.core.lock import LockBusy, file_lock
from coi.launch import executor as launch
from coi.launch import spec as launch_spec
from coi.sessions import store as sessions

if TYPE_CHECKING:
    from coi.config.load import Config
    from coi.config.mounts import Mount
    from coi.config.tools import Tool
    from coi.incus.api import IncusAPI

HOME = sessions.HOME
CODE_UID = 1000
WAIT_NETWORK = 20.0
SAVE_SCRIPT = f"""#!/bin/sh
# coi: keep the AI tool's state for the host before the container stops.
. /etc/coi/session.env 2>/dev/null || exit 0
mkdir -p /var/lib/coi
# at most one byte past the cap: the host refuses a larger state, and a sparse or huge
# file must not fill the storage pool on the way
most=$(( ${{COI_MAX_STATE:-{sessions.DEFAULT_LIMIT}}} + 1 )) new=/var/lib/coi/state.tar.new
tar -C {HOME} -cf - --ignore-failed-read "$COI_STATE_DIR" 2>/dev/null | head -c "$most" >"$new"
mv -f /var/lib/coi/state.tar.new {sessions.STOPPED_STATE}
sync
"""
STOPPING_MARK = "/run/coi-stopping"
WRAPPER = f"""#!/bin/sh
# coi: save the session, then {{verb}} for real.
touch {STOPPING_MARK}
/usr/local/lib/coi/save-state
exec /usr/sbin/{{verb}} "$@"
"""


@dataclass
class Session:
    """An open session: its container and everything needed to finish it."""

    incus: IncusAPI
    cfg: Config
    tool: Tool
    workspace: Path
    name: str
    slot: int
    session_id: str
    persistent: bool
    profile: str | None
    env: dict[str, str] = field(default_factory=dict)
    finished: bool = False
    credentials: dict[str, bytes] = field(default_factory=dict, repr=False)
    announce: bool = True  # say where the session was saved (coi run: only once, or --verbose)
    how: str = "new"  # new, warm (from the pool: booted, with its address) or reused


def as_code(argv: list[str]) -> list[str]:
    """argv run as `code` with its groups (docker among them): exec's --user sets none."""
    return ["runuser", "-u", "code", "--", *argv]


def code_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the `code` user's processes (nothing from the host)."""
    base = {
        "HOME": HOME,
        "USER": "code",
        "LOGNAME": "code",
        "SHELL": "/bin/bash",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "NODE_EXTRA_CA_CERTS": "/etc/ssl/certs/ca-certificates.crt",
    }
    return {**base, **(extra or {})}


def _occupants(
    instances: list[dict[str, Any]], workspace: Path, prefix: str
) -> list[slots.Occupant]:
    wanted = slots.workspace_id(workspace)
    found = []
    for inst in instances:
        parsed = slots.parse_name(inst["name"], prefix)
        if parsed and parsed.workspace_id == wanted:
            persistent = (inst.get("config") or {}).get("user.coi.persistent") == "true"
            found.append(slots.Occupant(parsed.slot, inst.get("status") != "Stopped", persistent))
    return found


@dataclass(frozen=True)
class Request:
    """What the command line asks of a session; None (or 0) where it asked nothing."""

    workspace: Path
    flags: dict[str, Any] = field(default_factory=dict)  # the config-bearing flags given
    profile: str | None = None
    tool: str | None = None
    resume: str | None = None  # "" means the newest session of this workspace and tool
    slot: int = 0
    storage: str | None = None
    mounts: tuple[str, ...] = ()
    worktree: str | None = None  # --worktree [BRANCH]: "" means the slot's own branch


def load_config(request: Request, profile: str | None = None, *, quiet: bool = False) -> Config:
    """The merged config for the request's workspace, profile and flags; warnings said."""
    from coi.config import load as config

    return config.load_said(
        request.workspace, profile or request.profile, request.flags, quiet=quiet
    )


def _resume_target(request: Request, workspace: Path, tool: str) -> Any:
    resume = request.resume
    if resume is None:
        return None
    if resume == "":
        found = sessions.latest_for(workspace, tool)
        if found is None:
            raise UsageError(f"no saved {tool} session for {workspace}: start one with coi shell")
        return found
    return sessions.find(resume, workspace, tool)


def open_session(
    request: Request,
    undo: list[Callable[[], None]],
    log: Callable[[str], None] = output.info,
    *,
    runs_tool: bool = True,
) -> Session:
    """Take a slot, launch or reuse its container and make it ready for the tool.

    The removal of a container is added to `undo` before it is made, so the caller's
    cleanup can remove it whatever step fails or is interrupted. runs_tool is False for a
    command that is not the tool (`coi run`): then only --tool brings its credentials.
    """
    from coi.config import load as config
    from coi.config import tools

    cfg = load_config(request, quiet=request.resume is not None)
    workspace = request.workspace
    tool = tools.resolve(cfg, request.tool)
    resumed = _resume_target(request, workspace, tool.name)
    if resumed is not None:  # a resumed session keeps the profile it was saved with
        cfg = load_config(request, config.resume_profile(request.profile, resumed[0].profile))
        tool = tools.resolve(cfg, request.tool or resumed[0].tool)
    incus = connect(cfg)
    session_id = resumed[0].session_id if resumed else sessions.new_id()
    preferred = request.slot or (resumed[0].slot if resumed else 0) or 0
    profile = cfg.profile
    worktree = _worktree_flag(request, cfg)
    # Before the claim: a copy checkpoint racing the claim's own staging of the workspace
    # (the locked view's placeholders) failed with ENOTEMPTY in a thread beside it.
    if worktree is None:  # a worktree session never mounts the main tree
        _checkpoint(cfg, workspace, session_id)
    mounts, readonly = session_mounts(cfg, tool, request, log)
    name, slot, how = _claim(
        incus,
        cfg,
        workspace,
        tool.name,
        session_id,
        preferred,
        mounts,
        profile,
        undo,
        log,
        readonly=readonly,
        worktree=worktree,
    )
    session = Session(
        incus, cfg, tool, workspace, name, slot, session_id, cfg.defaults.persistent, profile
    )
    session.announce, session.how = runs_tool, how
    session.credentials = _credentials(session, request.tool, runs_tool)
    _prepare(session, resumed[1] if resumed else None, log)
    if cfg.pool.size and not cfg.defaults.persistent and worktree is None:
        spawn_filler(request)  # the pool gets back what this session took
    return session


def _worktree_flag(request: Request, cfg: Config) -> str | None:
    """--worktree [BRANCH], or "" when [defaults] worktree asks for the slot's own branch."""
    flag = request.worktree
    return "" if flag is None and cfg.defaults.worktree else flag


def _credentials(session: Session, flag: str | None, runs_tool: bool) -> dict[str, bytes]:
    """The credential files that enter; in broker mode (coi/broker) the session's broker
    starts and the container gets a placeholder instead of the token."""
    from coi.broker import session as broker
    from coi.sessions import credentials

    cfg, tool, workspace = session.cfg, session.tool, session.workspace
    given = credentials.granted(
        cfg, tool, workspace, flag=flag, runs_tool=runs_tool, warn=output.warn
    )
    mode = broker.mode_for(cfg.credentials.mode, tool) if given else "none"
    name, session_id = session.name, session.session_id
    brokered = broker.attach(
        session.incus,
        cfg,
        tool,
        name,
        session_id,
        given=mode == "broker",
        fresh=session.how != "reused",
    )
    if mode == "none":
        return {}
    files = credentials.read(tool, Path.home(), workspace, cfg.credentials.claude_mcp_env)
    return broker.container_files(files, tool) if brokered else files


def _checkpoint(cfg: Config, workspace: Path, session_id: str) -> None:
    """Record the workspace before the agent touches it (`coi rollback` undoes a session);
    a checkpoint that cannot be made is said once and does not stop the session."""
    from coi.boundary import protect_host
    from coi.workspace import checkpoints

    if not cfg.checkpoints.auto:
        return
    try:
        section = cfg.checkpoints
        held = checkpoints.Held(*protect_host.held(workspace))  # other slots' views
        made = checkpoints.before_session(
            workspace, session_id, section.keep, section.max_bytes, held
        )
    except (CoiError, OSError) as exc:  # an undo that failed never stops the session
        output.once("checkpoint-failed", f"no checkpoint before this session: {exc}", level="warn")
        return
    output.detail(f"checkpoint {made.id} of {workspace}: `coi rollback` puts it back")


def _claim(
    incus: IncusAPI,
    cfg: Config,
    workspace: Path,
    tool: str,
    session_id: str,
    preferred: int,
    mounts: dict[str, tuple[Path, str]],
    profile: str | None,
    undo: list[Callable[[], None]],
    log: Callable[[str], None],
    readonly: frozenset[str] = frozenset(),
    worktree: str | None = None,
) -> tuple[str, int, str]:
    """Take a ready container of the warm pool, reuse an idle persistent container or
    create one in a free slot, under the lock; worktree: the branch asked for ("": the
    slot's own), the slot then works in its worktree. Returns (name, slot, how): how is
    warm (taken from the pool), reused (a persistent container started again) or new."""
    from coi.launch import worktrees
    from coi.network import enforce as network
    from coi.sessions import journal, pool

    prefix = slots.prefix()
    limit = cfg.defaults.max_slots
    # Containers that lost their rules get them back, or stop: no slot decision hangs on
    # it, so not under the slot lock that parallel sessions of this workspace wait for.
    network.heal(incus)
    journal.settle(incus)  # what killed finishers of `coi run` left, torn down
    lock = paths.locks_dir() / f"workspace-{slots.workspace_id(workspace)}.lock"
    with file_lock(lock, what=f"the slot lock of {workspace}"):
        # One listing serves both: reaping what was left stopped, then the free slots.
        listing = incus.get("instances", "listing instances", recursion=1)
        gone = set(reap(incus, cfg, log, listing))
        live = [i for i in listing if i["name"] not in gone]
        if not cfg.defaults.persistent and worktree is None:
            spec = _spec(cfg, workspace, "pooled", 1, tool, session_id, mounts, profile, readonly)
            key = _pool_key(cfg, spec, _extra_cas(cfg, log))
            warm = pool.pick(
                pool.members(live, prefix), slots.workspace_id(workspace), key, preferred
            )
            if warm is not None and hold(warm.name):  # False: another coi holds it
                pool.claim(incus, warm.name, session_id, tool)
                undo.append(lambda: launch.teardown(incus, warm.name))
                output.detail(f"took {warm.name} from the warm pool")
                return warm.name, warm.slot, "warm"
        occupants = _occupants(live, workspace, prefix)
        slot, reuse = slots.choose(occupants, limit, preferred, cfg.defaults.persistent)
        if preferred and slot != preferred:
            kept = slots.Occupant(preferred, False, True) in occupants  # stopped, persistent
            hint = f"; {slots.restart_hint(preferred, workspace)}" if kept else ""
            held = "holds a stopped persistent container" if kept else "is busy"
            log(f"slot {preferred} {held}: using slot {slot}{hint}")
        name = slots.container_name(workspace, slot, prefix)
        tree = _worktree_for(incus, worktree, workspace, slot, name, live, reuse)
        if reuse:
            log(f"reusing persistent container {name}")
            network.ensure_rules(incus, name)  # after a reboot the host holds none
            hold(name)
            spec = _spec(cfg, workspace, name, slot, tool, session_id, {}, None)
            launch.protect_workspace(worktrees.apply(spec, tree))
            incus.set_state(name, "start")
            return name, slot, "reused"
        spec = _spec(cfg, workspace, name, slot, tool, session_id, mounts, profile, readonly)
        spec = worktrees.apply(spec, tree)
        hold_new(name)
        undo.append(lambda: launch.teardown(incus, name))
        launch.prepare(incus, cfg.incus.storage_pool, cfg.incus.network)  # the profiles, once
        launch.create(incus, spec, start=False)
    launch.start_or_discard(incus, name, spec)
    return name, slot, "new"


def _worktree_for(incus: IncusAPI, flag: str | None, workspace: Path, slot: int, name: str,
                  live: list[dict[str, Any]], reuse: bool) -> Any:  # fmt: skip
    """The slot's worktree (coi/launch/worktrees.py); git writes into the shared git dir
    with the workspace's running containers frozen (coi/sessions/freeze.py)."""
    from coi.launch import worktrees
    from coi.sessions import freeze

    if flag is None and not reuse:
        return None
    with freeze.frozen(incus, workspace):
        return worktrees.for_slot(flag, workspace, slot, name, live, reuse)


def _spec(
    cfg: Config,
    workspace: Path,
    name: str,
    slot: int,
    tool: str,
    session_id: str,
    mounts: dict[str, tuple[Path, str]],
    profile: str | None,
    readonly: frozenset[str] = frozenset(),
) -> launch_spec.LaunchSpec:
    """The launch spec of a session's container, protected paths and allowlist included."""
    from coi.config.load import limits_config
    from coi.network import policy

    net = cfg.network
    allowlist = {}  # in the body, so in the pool key too (else before_start reads config)
    if net.mode in ("allowlist", "learn"):
        allowlist = policy.policy_keys(
            net.allowed_domains, net.resolver, net.refresh_interval_minutes
        )
    return launch_spec.LaunchSpec(
        name=name,
        image=cfg.defaults.image,
        workspace=workspace,
        workspace_uid=launch_spec.owner_uid(workspace),
        container_uid=cfg.incus.claude_uid,
        slot=slot,
        tool=tool,
        session=session_id,
        network_mode=cfg.network.mode,
        persistent=cfg.defaults.persistent,
        environment=dict(cfg.defaults.environment),
        limits=limits_config(cfg),
        disks=mounts,
        readonly=readonly,
        profile=profile,
        extra_config=allowlist,
        protected_paths=protect.paths(cfg.security.protected_paths, cfg.security.writable_paths),
    )


def storage_path(raw: str | None, cfg: Config) -> Path | None:
    """--storage: a bare name lives under [paths] storage_dir; a path is used as given."""
    if not raw:
        return None
    path = Path(raw).expanduser()
    if "/" not in raw and not raw.startswith("."):
        path = Path(cfg.paths.storage_dir) / raw
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def disks(
    cfg: Config, tool: Tool, storage: Path | None, log: Callable[[str], None]
) -> dict[str, tuple[Path, str]]:
    """Extra mounts: persistent storage, and the host's tool folder when config asks."""
    mounts: dict[str, tuple[Path, str]] = {}
    if storage is not None:
        mounts["storage"] = (storage, "/storage")
    if cfg.defaults.mount_claude_config and tool.state_dir not in ("", "."):
        host = Path.home() / tool.state_dir
        host.mkdir(parents=True, exist_ok=True, mode=0o700)
        log(f"mounting the host's {host} into the container (mount_claude_config), not a copy")
        mounts["tool-config"] = (host, f"{HOME}/{tool.state_dir}")
    return mounts


def session_mounts(
    cfg: Config, tool: Tool, request: Request, log: Callable[[str], None]
) -> tuple[dict[str, tuple[Path, str]], frozenset[str]]:
    """Every disk of a session but the workspace, and which of them are read-only."""
    mounts = disks(cfg, tool, storage_path(request.storage, cfg), log)
    extra = extra_mounts(cfg, list(request.mounts))
    mounts.update({f"mount-{i}": (m.source, m.target) for i, m in enumerate(extra)})
    return mounts, frozenset(f"mount-{i}" for i, m in enumerate(extra) if m.readonly)


def extra_mounts(cfg: Config, flags: list[str] | None) -> list[Mount]:
    """`[[mounts]]` of the trusted config and `--mount` flags, each checked (refusals are
    usage errors naming why)."""
    from coi.config import mounts

    home = Path.home()
    wanted = mounts.from_config(cfg.mounts, home)
    wanted += [mounts.parse_flag(text, Path.cwd()) for text in flags or []]
    return [mounts.check(m, home, [paths.coi_home()]) for m in wanted]


def _prepare(session: Session, resumed: Path | None, log: Callable[[str], None]) -> None:
    from coi.sessions import credentials

    incus, name = session.incus, session.name
    faults.point("prepare")
    faults.point("credentials")
    if session.how == "warm" and resumed is None and not session.credentials:
        # A pooled container has the static files, the CAs and its address: one write.
        incus.push_file(name, "/etc/coi/session.env", _session_env(session))
        faults.point("restore")
        return
    cas = _extra_cas(session.cfg, log)
    # A saved state holds what the tool kept, its login too: what this session is not
    # given is removed again after the restore.
    drop = credentials.withheld(session.tool, session.credentials) if resumed else []
    argv = ["sh", "-c", _SETUP_SH, "sh", *drop]
    with _setup_tar(session, resumed, cas) as tar:
        result = incus.execute(name, argv, stdin=tar, idempotent=True)
    if result.exit_code != 0:
        raise CoiError(f"preparing {name} failed: {result.stderr.strip()[-300:]}")
    faults.point("restore")
    if session.how != "warm":  # a pooled container got its address when it was filled
        _wait_network(incus, name, log)  # DHCP went on meanwhile; wait only for the rest


# One exec unpacks the session's files and trusts the extra CAs. Debian's
# update-ca-certificates takes seconds (it rebuilds every hash and the bundle), so the
# CAs are appended to the bundle the tools read, once; update-ca-certificates, when apt
# runs it later, finds the same files under /usr/local/share/ca-certificates.
_SETUP_SH = """set -e
tar -C / -i -xf - --no-same-permissions --no-overwrite-dir
for rel in "$@"; do rm -f -- "/home/code/$rel"; done
bundle=/etc/ssl/certs/ca-certificates.crt
for cert in /usr/local/share/ca-certificates/coi-session-*.crt; do
  [ -e "$cert" ] || continue
  key=$(sed -n 2p "$cert")
  grep -qF -- "$key" "$bundle" 2>/dev/null || cat "$cert" >> "$bundle"
done
"""
_SETUP_SH += launch_spec.BOOT_BARRIER_SH


def _extra_cas(cfg: Config, log: Callable[[str], None]) -> dict[str, bytes]:
    """The extra CA certificates a session trusts: the host's, or those config names."""
    from coi.images import certs

    files = certs.sources(cfg)
    if files:
        output.once(
            "session-cas", f"trusting extra CA certificates: {', '.join(str(f) for f in files)}"
        )
    return {f"coi-session-{i}-{f.stem}.crt": certs.read_pem(f) for i, f in enumerate(files)}


def _static_files() -> list[tuple[str, bytes, int]]:
    """The files every coi container gets whatever its session: path, bytes, mode."""
    wrappers = [
        (f"usr/local/sbin/{verb}", WRAPPER.format(verb=verb).encode(), 0o755)
        for verb in ("poweroff", "shutdown")
    ]
    return [("usr/local/lib/coi/save-state", SAVE_SCRIPT.encode(), 0o755), *wrappers]


def _session_env(session: Session) -> bytes:
    """/etc/coi/session.env, which save-state reads."""
    return (
        f"COI_STATE_DIR={session.tool.state_dir}\nCOI_SESSION={session.session_id}\n"
        f"COI_MAX_STATE={session.cfg.sessions.max_state_bytes}\n"
    ).encode()


@contextmanager
def _setup_tar(
    session: Session | None, resumed: Path | None, cas: dict[str, bytes]
) -> Iterator[BinaryIO]:
    """One tar stream: wrappers, the session env, CAs, restored state, credentials; in a
    temporary file (rewound), so that a large restored state is sent in chunks rather
    than held in memory. Without a session (a pooled container): the static files and
    an empty session env."""
    with (
        tempfile.TemporaryFile() as buffer,
        tarfile.open(fileobj=buffer, mode="w", format=sessions.TAR_FORMAT) as archive,
    ):
        for file_name, pem in cas.items():
            _add(archive, f"usr/local/share/ca-certificates/{file_name}", pem, 0o644)
        for path, data, mode in _static_files():
            _add(archive, path, data, mode)
        _add(archive, "etc/coi/session.env", _session_env(session) if session else b"", 0o644)
        if session is not None and resumed is None:
            _add_credentials(archive, session)
        archive.close()
        buffer.seek(0)
        if session is None or resumed is None:
            yield buffer
            return
        # The restored state follows as a second archive (the setup's tar reads past the
        # first one's end, -i), packed as it is sent; then the credentials, last: a saved
        # state never replaces the files this session was given.
        state_dir = session.tool.state_dir
        with sessions.state_stream(resumed, state_dir, "home/code/", CODE_UID) as state:
            yield sessions.chained(buffer, state, _credentials_tar(session))


def _credentials_tar(session: Session) -> BinaryIO | None:
    """The session's credential files as an archive of their own, in memory (a few KiB)."""
    if not session.credentials:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=sessions.TAR_FORMAT) as archive:
        _add_credentials(archive, session)
    buffer.seek(0)
    return buffer


def _add_credentials(archive: tarfile.TarFile, session: Session) -> None:
    for rel, data in session.credentials.items():
        _add(archive, f"home/code/{rel}", data, 0o600, CODE_UID)


def _add(archive: tarfile.TarFile, path: str, data: bytes, mode: int, uid: int = 0) -> None:
    for parent in reversed(Path(path).parents[:-1]):
        if parent.as_posix().startswith("home/code"):
            info = tarfile.TarInfo(parent.as_posix())
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o700, uid, uid
            archive.addfile(info)
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, uid, time.time()
    archive.addfile(info, io.BytesIO(data))


def settled_status(incus: IncusAPI, name: str, timeout: float = 60.0) -> str | None:
    """Running or Stopped once the instance is in neither transition (None: it is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = str(incus.state(name).get("status"))
        except NotFound:
            return None
        except CoiError:  # Incus answers oddly ("Invalid PID") while an instance stops
            status = "Stopping"
        if status in ("Running", "Stopped") or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


def stopping(incus: IncusAPI, name: str, timeout: float = 60.0) -> bool:
    """True when the container is powering off (then wait, bounded, until it has stopped)."""
    try:
        probe = incus.execute(name, ["test", "-e", STOPPING_MARK], idempotent=True)
        going = probe.exit_code == 0
    except CoiError:  # exec refused: the instance is already on its way down
        going = True
    deadline = time.monotonic() + timeout
    while going and time.monotonic() < deadline:
        try:
            if incus.state(name).get("status") == "Stopped":
                break
        except NotFound:
            break
        except CoiError:  # Incus answers oddly while an instance stops
            pass
        time.sleep(0.3)
    return going


def _wait_network(incus: IncusAPI, name: str, log: Callable[[str], None]) -> None:
    """Wait (bounded) until eth0 has an IPv4 address, so the tool can reach its API.

    A lease does not prove early boot is over (networking.service is not ordered after
    sysinit.target): the setup exec waits for that itself (launch_spec.BOOT_BARRIER_SH).
    """
    deadline = time.monotonic() + WAIT_NETWORK
    while time.monotonic() < deadline:
        nets = (incus.state(name).get("network") or {}).get("eth0", {})
        if any(a.get("family") == "inet" for a in nets.get("addresses", [])):
            return
        time.sleep(0.1)
    log(f"{name} has no IPv4 address after {WAIT_NETWORK:.0f} s: going on without network")


def finish(session: Session, *, log: Callable[[str], None] = output.info) -> None:
    """Save the session, then delete the container, or stop it when persistent, and clear
    set-id bits it left in host folders. Runs once."""
    if session.finished:
        return
    session.finished = True
    incus, name = session.incus, session.name
    status = settled_status(incus, name)
    if status is None:
        return
    running = status == "Running"
    meta = metadata(session)
    try:
        limit, state_dir = session.cfg.sessions.max_state_bytes, session.tool.state_dir
        save_state(incus, name, meta, state_dir, limit, running, log=log, announce=session.announce)
    finally:
        if not session.persistent:
            launch.teardown(incus, name)  # stops the session's broker too
        else:
            from coi.broker import process as broker

            broker.stop(name)
            if running:
                incus.set_state(name, "stop", timeout=30)
                log(f"{name} stopped and kept (persistent): the next session reuses it")
            launch.sweep(launch.host_folders(incus, name))
            if settled_status(incus, name) == "Stopped":  # never under a running container
                launch.release_workspace(name)  # its placeholders leave the workspace meanwhile


def save_state(
    incus: IncusAPI,
    name: str,
    meta: sessions.Metadata,
    state_dir: str,
    limit: int,
    running: bool,
    *,
    log: Callable[[str], None] = output.info,
    announce: bool = True,
) -> None:
    """Save the tool's state folder of a session (a tool without one, the plain shell,
    has nothing to save) and say where."""
    if not state_dir:
        return
    saved = sessions.save(incus, name, meta, state_dir, running=running, limit=limit)
    if saved:
        said = f"session {meta.session_id} saved to {saved}"
        if announce:
            log(said)
        else:  # coi run: where sessions go is said the first time
            output.once("session-saved", said, fact=str(saved.parent))


def metadata(session: Session) -> sessions.Metadata:
    """The metadata a save of this session records."""
    return sessions.Metadata(
        session_id=session.session_id,
        container_name=session.name,
        slot=session.slot,
        workspace=str(session.workspace),
        tool=session.tool.name,
        persistent=session.persistent,
        profile=session.profile,
        saved_at=sessions.now(),
    )


_HELD: dict[str, ExitStack] = {}
_HELD_FD: dict[str, int] = {}


def hold(name: str, wait: float = 0.1) -> bool:
    """Mark a container as watched by this process until it exits, so no other coi
    process reaps it (taken before the container exists, so it is never unwatched).
    False when another coi process (an earlier attach, say) already watches it."""
    if name not in _HELD:
        stack = ExitStack()
        lock = paths.watch_lock(name)
        try:
            fd = stack.enter_context(file_lock(lock, timeout=wait, what=f"the watch of {name}"))
        except LockBusy:
            return False
        _HELD[name], _HELD_FD[name] = stack, fd
    return True


def hold_new(name: str) -> None:
    """hold() the name of a container about to be made. Its watch may still be held by
    the finisher of the slot's previous container, which deletes it, then exits: wait for
    that (bounded). Unwatched, the new container could be reaped as a stopped one by
    another coi before it starts."""
    if not hold(name, wait=30):
        raise CoiError(f"{name} is still held by another coi process: try again")


@contextmanager
def watching(name: str, incus: IncusAPI | None = None, mode: str | None = None) -> Iterator[None]:
    """Hold the container's watch; meanwhile an allowlist container's names are resolved
    again on schedule (mode, when known, spares reading the container's record)."""
    import threading

    hold(name)
    stop = threading.Event()
    if incus is not None and mode in (None, "allowlist"):
        from coi.network import enforce as network

        threading.Thread(target=network.watch, args=(incus, name, stop), daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def is_watched(name: str) -> bool:
    """True when a live coi process holds the watch lock of this container."""
    try:
        with file_lock(paths.watch_lock(name), timeout=0):
            return False
    except LockBusy:
        return True


def reap(
    incus: IncusAPI,
    cfg: Config,
    log: Callable[[str], None] = output.info,
    instances: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Save and remove stopped ephemeral coi containers that nobody watches (from the
    given listing, or a fresh one)."""
    if instances is None:
        instances = incus.get("instances", "listing instances", recursion=1)
    reaped = []
    for inst in instances:
        config = inst.get("config") or {}
        if (
            inst.get("status") != "Stopped"
            or "user.coi.session" not in config
            or config.get("user.coi.persistent") == "true"
            or is_watched(inst["name"])
        ):
            continue
        try:
            _reap_one(incus, cfg, inst["name"], config, log)
            reaped.append(inst["name"])
        except CoiError as exc:
            output.warn(f"could not clean up {inst['name']}: {exc}")
    return reaped


def _reap_one(
    incus: IncusAPI, cfg: Config, name: str, config: dict[str, str], log: Callable[[str], None]
) -> None:
    from coi.config import tools

    try:
        tool: Tool | None = tools.resolve(cfg, config.get("user.coi.tool"))
    except UsageError:
        tool = None
    slot = config.get("user.coi.slot", "")
    meta = sessions.Metadata(
        session_id=config["user.coi.session"],
        container_name=name,
        slot=int(slot) if slot.isdigit() else None,
        workspace=config.get("user.coi.workspace", ""),
        tool=config.get("user.coi.tool", ""),
        persistent=False,
        profile=config.get("user.coi.profile"),
        saved_at=sessions.now(),
    )
    with ExitStack() as stack:
        stack.callback(launch.teardown, incus, name)
        if tool is not None:
            limit = cfg.sessions.max_state_bytes
            sessions.save(incus, name, meta, tool.state_dir, running=False, limit=limit)
    log(f"saved and removed {name}, which was stopped while detached")


def close(session: Session | None, undo: list[Callable[[], None]], *, detach: bool = False) -> None:
    """The one cleanup of a session command: finish the session (with detach, in a
    detached finisher, so that the caller returns at once), or undo what was made."""
    from coi.core import signals

    failing = sys.exc_info()[0] is not None  # close runs in a `finally`: is one unwinding?
    with signals.shielded():
        if session is not None:
            # An interrupted or failed run is finished here, before coi exits.
            if not (detach and not failing and hand_off(session)):
                finish(session)
            return
        for step in undo:
            step()


# -- finishing after the exit code (coi run) -------------------------------------------------
# What must happen before the user has the terminal back happens here: the state is saved,
# the container is frozen (nothing in it runs again: the stop that follows kills it frozen)
# and the host folders are swept for good. Only the stop and the delete, most of the time
# of a finish, are left to a detached finisher. Its journal entry is written (and synced)
# before it starts, and it inherits the container's watch lock: a live finisher is seen as
# a watcher, a killed one (or a stopped machine) leaves an entry whose lock is free, which
# the next coi command (`settle`) carries out.


def hand_off(session: Session) -> bool:
    """Finish an ephemeral session up to its teardown and leave that to a detached
    process; False when this session is not one to hand off (then finish it here)."""
    from coi.sessions import journal

    incus, name = session.incus, session.name
    fd = _HELD_FD.get(name)
    wanted = detaches(os.environ.get(FINISH_ENV, ""), sys.stdout.isatty())
    if session.persistent or session.finished or fd is None or not wanted:
        return False
    if settled_status(incus, name) != "Running":
        return False
    session.finished = True
    limit = session.cfg.sessions.max_state_bytes
    entry = journal.Entry(
        name=name,
        project=incus.project,
        endpoint={k: getattr(incus.endpoint, k) for k in journal.ENDPOINT_FIELDS},
        group=session.cfg.incus.group,
    )
    try:
        meta, state_dir = metadata(session), session.tool.state_dir
        save_state(incus, name, meta, state_dir, limit, True, announce=session.announce)
    except BaseException:
        launch.teardown(incus, name)  # a failed save is said with the container gone
        raise
    try:
        incus.set_state(name, "freeze")
        launch.sweep(launch.host_folders(incus, name))  # final: nothing runs in it now
        journal.spawn(journal.write(entry), fd)
    except (CoiError, OSError) as exc:
        output.detail(f"finishing {name} here ({exc})")
        launch.teardown(incus, name)
    return True


FINISH_ENV = "COI_FINISH"


def detaches(choice: str, terminal: bool) -> bool:
    """Whether `coi run` leaves its container's stop and delete to a finisher: COI_FINISH
    `detach` or `inline`, else only when its output goes to a terminal. Whoever reads
    it through a pipe (a script, a test) keeps the old contract: when coi exits, the
    container is gone."""
    return choice == "detach" or (choice != "inline" and terminal)


# -- the warm pool (coi/sessions/pool.py) ----------------------------------------------------


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
    launch.prepare(incus, cfg.incus.storage_pool, cfg.incus.network)
    wsid, prefix = slots.workspace_id(workspace), slots.prefix()
    background = bool(os.environ.get(FILLER_ENV))
    lock = paths.locks_dir() / f"pool-{wsid}.lock"
    with file_lock(lock, timeout=0 if background else 600, what=f"the pool filler of {workspace}"):
        mounts, readonly = session_mounts(cfg, tool, request, lambda _: None)
        spec = _spec(cfg, workspace, "pooled", 1, tool.name, "", mounts, cfg.profile, readonly)
        cas = _extra_cas(cfg, lambda _: None)
        key = _pool_key(cfg, spec, cas)
        listing = incus.get("instances", "listing instances", recursion=1)
        mine = [m for m in pool.members(listing, prefix) if m.workspace_id == wsid]
        watched = {m.name for m in mine if is_watched(m.name)}
        stale = pool.unwanted(mine, key, watched)
        extra = pool.unwanted(mine, key, watched, want)
        for gone in extra:
            launch.teardown(incus, gone.name)
            why = f"{gone.state}, or made for another config" if gone in stale else "one too many"
            log(f"removed {gone.name} from the pool ({why})")
        kept = len(mine) - len(extra)
        made = []
        for _ in range(max(0, want - kept)):
            made.append(_fill_one(incus, cfg, spec, (key, cas), log))
            log(f"{made[-1]} is ready in the pool")
    return made


def _pool_key(cfg: Config, spec: launch_spec.LaunchSpec, cas: dict[str, bytes]) -> str:
    """The pool key of a session's spec (the filler's and the claim's, one function): the
    spec's, the CAs the filler puts in and the credentials mode, which is not the spec's."""
    from coi.sessions import pool

    return pool.key_with(launch_spec.pool_key(spec), cas, {"credentials": cfg.credentials.mode})


def _fill_one(
    incus: IncusAPI,
    cfg: Config,
    keyed_spec: launch_spec.LaunchSpec,
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
            listing = incus.get("instances", "listing instances", recursion=1)
            taken = {o.slot for o in _occupants(listing, workspace, prefix)}
            slot = slots.allocate(taken, cfg.defaults.max_slots)
            name = slots.container_name(workspace, slot, prefix)
            # Watched while it is made: no other coi process reaps or takes it meanwhile.
            watch.enter_context(file_lock(paths.watch_lock(name), timeout=30))
            filling = {**keyed_spec.extra_config, launch_spec.POOL_LABEL: pool.FILLING}
            spec = replace(
                keyed_spec, name=name, slot=slot, tool=None, session=None, extra_config=filling
            )
            launch.create(incus, spec, start=False)
        try:
            launch.start_or_discard(incus, name, spec)
            key, cas = keyed
            with _setup_tar(None, None, cas) as tar:  # the static files, past the boot barrier
                script = _SETUP_SH + _SETTLED_SH
                setup = incus.execute(name, ["sh", "-c", script], stdin=tar, idempotent=True)
            if setup.exit_code != 0:
                raise CoiError(f"preparing {name} failed: {setup.stderr.strip()[-200:]}")
            _wait_network(incus, name, log)
            incus.update_instance(name, {"config": {launch_spec.POOL_LABEL: key}})
        except BaseException:
            launch.teardown(incus, name)
            raise
    return name


# A pooled container waits until its boot is over, not only early boot: freezing one whose
# services are still starting (the save and freeze before `coi run`'s exit code) took a
# second, against tens of milliseconds once it had settled (measured). Bounded: 30 s.
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
    listing = incus.get("instances", "listing instances", recursion=1)
    wanted = None if workspace is None else slots.workspace_id(workspace)
    workspaces = {m.workspace_id for m in pool.members(listing, prefix)} | {wanted}
    removed = []
    for wsid in sorted(w for w in workspaces if w is not None and wanted in (None, w)):
        with file_lock(
            paths.locks_dir() / f"pool-{wsid}.lock", timeout=600, what="the pool filler"
        ):
            # Read again: a filler that was running may have added some meanwhile.
            fresh = incus.get("instances", "listing instances", recursion=1)
            for member in pool.members(fresh, prefix):
                if member.workspace_id != wsid or is_watched(member.name):
                    continue
                launch.teardown(incus, member.name)
                removed.append(member.name)
                log(f"removed {member.name} from the pool")
    return removed

"""`coi setup`: take a host from nothing to a running Incus with coi's own resources.

Survey the host, plan the steps (pure), then carry them out (starting and stopping the
Incus daemon is coi/host/daemon.py's job). Every step is idempotent, so a second run plans
nothing. coi only creates resources of its own (a pool and a bridge named in `[incus]`,
profiles beginning with `coi`) and never touches the user's defaults."""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from coi.boundary.idmap import add_subid_lines, has_root_range, subid_lines
from coi.core import labels, output, proc
from coi.core.errors import CoiError
from coi.host import daemon, lxchooks
from coi.host.steps import Step

# dnsmasq-base serves DHCP and DNS on Incus bridges; incus-base only recommends it.
PACKAGES = ("incus-base", "incus-client", "dnsmasq-base", "btrfs-progs", "debootstrap", "nftables")
BACKPORTS_FILE = Path("/etc/apt/sources.list.d/coi-bookworm-backports.sources")
BACKPORTS = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
POOL_SIZE = "15GiB"
SUBID_RANGE = "root:1000000:1000000000"
RESOURCE_VERSION = "1"


@dataclass(frozen=True)
class HostFacts:
    """What the survey found before Incus is reachable."""

    os_id: str
    os_version: str
    missing_packages: tuple[str, ...]
    systemd: bool
    daemon_ready: bool
    is_root: bool
    has_subid_range: bool = True
    lxc_current: bool = True  # coi's lxc template folder in place and in the daemon's use


@dataclass(frozen=True)
class IncusFacts:
    """What the survey found inside a running Incus."""

    pool_driver: str | None
    network_exists: bool
    used_subnets: tuple[str, ...]
    btrfs_available: bool
    subid_lines: tuple[str, ...]
    needed_subid_lines: tuple[str, ...]
    sudo_user: str | None
    sudo_user_in_group: bool


# -- pure planning --------------------------------------------------------------------


def plan_host(facts: HostFacts, group: str = "incus-admin") -> list[Step]:
    """Install and start Incus when needed."""
    steps = []
    if facts.missing_packages:
        if facts.os_id not in ("debian", "ubuntu"):
            raise CoiError(
                f"coi setup installs packages on Debian and Ubuntu only, this is {facts.os_id}: "
                f"install {', '.join(facts.missing_packages)} yourself and run it again"
            )
        if facts.os_id == "debian" and facts.os_version == "12":
            steps.append(Step("backports", f"add bookworm-backports as {BACKPORTS_FILE}"))
        steps.append(
            Step(
                "install",
                f"install {' '.join(facts.missing_packages)}",
                {
                    "packages": list(facts.missing_packages),
                    "backports": facts.os_id == "debian" and facts.os_version == "12",
                },
            )
        )
    restart_for = []
    if not facts.lxc_current:
        what = f"keep lxcfs's half-second post-stop sleep to reboots ({lxchooks.OURS})"
        steps.append(Step("lxc-template", what))
        restart_for.append("its containers stop without that sleep")
    if not facts.has_subid_range:
        # Incus reads root's range when it starts: without one it has no idmap at all.
        steps.append(Step("subid-range", f"add {SUBID_RANGE} to /etc/subuid and /etc/subgid"))
        restart_for.append("it sees the idmap range")
    if restart_for and facts.daemon_ready:
        steps.append(
            Step(
                "restart",
                f"restart the Incus daemon so {' and '.join(restart_for)}",
                {"systemd": facts.systemd, "group": group},
            )
        )
    if not facts.daemon_ready:
        how = (
            "systemd"
            if facts.systemd
            else f"{daemon.INCUSD}, detached, logging to {daemon.DAEMON_LOG}"
        )
        steps.append(
            Step(
                "start",
                f"start the Incus daemon ({how})",
                {"systemd": facts.systemd, "group": group},
            )
        )
    return steps


CANDIDATE_SUBNETS = tuple(f"10.{a}.{b}.0/24" for a in (171, 172, 173, 181, 191) for b in range(4))


def pick_subnet(used: Iterable[str], candidates: Sequence[str] = CANDIDATE_SUBNETS) -> str:
    """The first candidate /24 that overlaps none of the used networks."""
    taken = [ipaddress.ip_network(u, strict=False) for u in used]
    for text in candidates:
        net = ipaddress.ip_network(text)
        if not any(net.overlaps(t) for t in taken if t.version == 4):
            return text
    raise CoiError("no free private /24 for coi's bridge: set [incus] network to an existing one")


def plan_incus(facts: IncusFacts, pool: str, network: str) -> list[Step]:
    """coi's pool, bridge, subuid/subgid lines and group membership, when missing."""
    steps = []
    if facts.pool_driver is None:
        driver = "btrfs" if facts.btrfs_available else "dir"
        detail = f"create storage pool {pool} ({driver}"
        detail += f" on a {POOL_SIZE} loop file)" if driver == "btrfs" else ")"
        steps.append(Step("pool", detail, {"name": pool, "driver": driver}))
    if not facts.network_exists:
        subnet = pick_subnet(facts.used_subnets)
        gateway = str(next(ipaddress.ip_network(subnet).hosts()))
        steps.append(
            Step(
                "network",
                f"create bridge {network} on {subnet}",
                {"name": network, "address": f"{gateway}/24"},
            )
        )
    missing = [line for line in facts.needed_subid_lines if line not in facts.subid_lines]
    if missing:
        steps.append(
            Step(
                "subid",
                f"add {', '.join(missing)} to /etc/subuid and /etc/subgid",
                {"lines": missing},
            )
        )
    if facts.sudo_user and not facts.sudo_user_in_group:
        steps.append(
            Step(
                "group",
                f"add {facts.sudo_user} to the Incus admin group",
                {"user": facts.sudo_user},
            )
        )
    return steps


# -- survey ---------------------------------------------------------------------------


def os_release(path: Path = Path("/etc/os-release")) -> tuple[str, str]:
    """(ID, VERSION_ID) of the host."""
    fields = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            fields[key] = value.strip().strip('"')
    return fields.get("ID", "unknown"), fields.get("VERSION_ID", "")


def survey_host() -> HostFacts:
    """Facts that need no Incus connection."""
    os_id, version = os_release()
    missing = tuple(p for p in PACKAGES if not _installed(p))
    systemd = Path("/run/systemd/system").is_dir()
    ready = shutil.which("incus") is not None and proc.ok(
        ["incus", "admin", "waitready", "--timeout=1"], timeout=10
    )
    root = os.geteuid() == 0
    lxc_current = True  # a daemon systemd starts is the admin's; a non-root survey cannot tell
    if root and not systemd and lxchooks.sleeps(lxchooks.host_files()):
        running = daemon.daemon_pids() if ready else []
        lxc_current = lxchooks.current() and (not ready or lxchooks.daemon_uses_ours(running))
    return HostFacts(
        os_id, version, missing, systemd, ready, root, has_root_range(subid_lines()), lxc_current
    )


def _installed(package: str) -> bool:
    done = proc.run(["dpkg-query", "-W", "-f=${Status}", package], check=False)
    return done.returncode == 0 and is_installed_status(done.stdout)


def is_installed_status(status: str) -> bool:
    """dpkg's Status field says installed; a removed or purged package's says
    "deinstall ok config-files" or "unknown ok not-installed"."""
    return status.split()[-1:] == ["installed"]


def needed_subid_lines(sudo_uid: int | None, container_uid: int) -> tuple[str, ...]:
    """The invoking user's uid for raw.idmap, which maps every workspace owner but root
    (root's range is a host step, before start)."""
    lines: list[str] = []
    if sudo_uid is not None and sudo_uid != 0:
        lines.append(f"root:{sudo_uid}:1")
    return tuple(lines)


def survey_incus(incus: Any, pool: str, network: str, group: str, container_uid: int) -> IncusFacts:
    """Facts from a running Incus and the host files idmapping needs."""
    pool_info = incus.storage_pool(pool)
    used = [
        r.split()[0]
        for r in proc.run(["ip", "-4", "route", "show"]).stdout.splitlines()
        if r and r.split()[0] != "default"
    ]
    networks = incus.networks()
    for net in networks:
        addr = (net.get("config") or {}).get("ipv4.address", "")
        if addr and addr != "none":
            used.append(addr)
    sudo_user = os.environ.get("SUDO_USER") if os.environ.get("SUDO_USER") != "root" else None
    sudo_uid = int(os.environ["SUDO_UID"]) if sudo_user and os.environ.get("SUDO_UID") else None
    return IncusFacts(
        pool_driver=pool_info.get("driver") if pool_info else None,
        network_exists=any(net.get("name") == network for net in networks),
        used_subnets=tuple(used),
        btrfs_available=shutil.which("mkfs.btrfs") is not None,
        subid_lines=subid_lines(),
        needed_subid_lines=needed_subid_lines(sudo_uid, container_uid),
        sudo_user=sudo_user,
        sudo_user_in_group=bool(sudo_user) and _in_group(str(sudo_user), group),
    )


def _in_group(user: str, group: str) -> bool:
    try:
        members = grp.getgrnam(group).gr_mem
        return user in members or pwd.getpwnam(user).pw_gid == grp.getgrnam(group).gr_gid
    except KeyError:
        return False


# -- execution ------------------------------------------------------------------------


def _apt(args: list[str], log: Callable[[str], None]) -> None:
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    proc.run(["apt-get", *args], env=env, timeout=900)


def do_backports(step: Step, log: Callable[[str], None]) -> None:
    BACKPORTS_FILE.write_text(BACKPORTS)


def do_install(step: Step, log: Callable[[str], None]) -> None:
    _apt(["update", "-qq"], log)
    target = ["-t", "bookworm-backports"] if step.params["backports"] else []
    _apt(
        ["install", "-y", "-qq", "--no-install-recommends", *target, *step.params["packages"]], log
    )


def do_subid_range(step: Step, log: Callable[[str], None]) -> None:
    if not has_root_range(subid_lines()):  # the package's postinst may have added one
        add_subid_lines([SUBID_RANGE])


def do_pool(incus: Any, step: Step) -> None:
    config = {"size": POOL_SIZE} if step.params["driver"] == "btrfs" else {}
    body = {
        "name": step.params["name"],
        "driver": step.params["driver"],
        "description": "coi: copy-on-write pool for coi containers",
        "config": config,
    }
    incus.create_storage_pool(body)
    if step.params["driver"] == "dir":
        output.warn(
            "no btrfs here: the `dir` pool copies the whole rootfs on every launch "
            "(3-5 s each); install btrfs-progs and re-create the pool to clone instead"
        )


def do_network(incus: Any, step: Step) -> None:
    config = {
        "ipv4.address": step.params["address"],
        "ipv4.nat": "true",
        "ipv6.address": "none",
        labels.VERSION: RESOURCE_VERSION,
    }
    body = {
        "name": step.params["name"],
        "type": "bridge",
        "config": config,
        "description": "coi: bridge for coi containers",
    }
    incus.create_network(body)


def do_group(step: Step, group: str) -> None:
    proc.run(["usermod", "-aG", group, step.params["user"]])
    output.info(f"  {step.params['user']} must log in again for the group to take effect")


@dataclass
class SetupOptions:
    """What `coi setup` was asked to do."""

    pool: str = "coi"
    network: str = "coibr0"
    group: str = "incus-admin"
    project: str = "default"
    container_uid: int = 1000
    base: str = "debian/12"
    dry_run: bool = False
    log: Callable[[str], None] = output.info


def setup(opts: SetupOptions) -> list[Step]:
    """Bring the host to a ready state; returns the steps taken (or planned on a dry run)."""
    host = survey_host()
    steps = plan_host(host, opts.group)
    if (steps and not host.is_root) and not opts.dry_run:
        raise CoiError("coi setup must install or start Incus: run it as root (sudo coi setup)")
    _run(steps, opts, lambda s: HOST_STEPS[s.kind](s, opts.log))
    if opts.dry_run and steps:
        opts.log("then: create coi's pool, bridge and profiles where missing")
        return steps
    from coi.incus.adapter import connect
    from coi.launch import profiles

    incus = connect(project=opts.project, group=opts.group, retries=10)
    more = plan_incus(
        survey_incus(incus, opts.pool, opts.network, opts.group, opts.container_uid),
        opts.pool,
        opts.network,
    )
    if more and not host.is_root and not opts.dry_run:
        raise CoiError("coi setup must change host files: run it as root (sudo coi setup)")
    _run(more, opts, lambda s: _incus_step(incus, s, opts))
    steps += more
    steps += _network_helper(opts, host)
    values = {"pool": opts.pool, "network": opts.network}
    for spec in profiles.load_all():
        action = profiles.decide(spec, incus.profile(spec.name))
        if action in (profiles.Action.CREATE, profiles.Action.UPGRADE):
            step = Step("profile", f"{action.value} profile {spec.name} (v{spec.version})")
            _run([step], opts, partial(_apply_profile, incus, values, spec))
            steps.append(step)
        elif action is profiles.Action.NEWER:
            output.warn(f"profile {spec.name} is newer than {spec.source}: left as it is")
    base = None if opts.dry_run else _ensure_base(incus, opts)
    return steps + ([base] if base else [])


def _network_helper(opts: SetupOptions, host: HostFacts) -> list[Step]:
    """sudo and coi's network helper, so non-root users can launch restricted containers."""
    from coi.host import netrules

    steps = netrules.plan(opts.group)
    if steps and not host.is_root and not opts.dry_run:
        raise CoiError(
            "coi setup must install coi's network helper: run it as root (sudo coi setup)"
        )
    _run(steps, opts, netrules.execute)
    return steps


def _apply_profile(incus: Any, values: dict[str, str], spec: Any, step: Step) -> None:
    from coi.launch import profiles

    profiles.apply(incus, values, [spec])


def _ensure_base(incus: Any, opts: SetupOptions) -> Step | None:
    """Build the base image the first time (or when its inputs changed)."""
    from coi.images.base import RemoteBase, base_alias, ensure_base, parse_base, resolve

    base = parse_base(opts.base)
    if isinstance(base, RemoteBase):
        return None
    alias = base_alias(resolve(base))
    before = incus.image_alias(alias)
    ensure_base(incus, opts.base, log=opts.log)
    after = incus.image_alias(alias)
    if before and after and before.get("target") == after.get("target"):
        return None
    return Step("base", f"build base image {alias}")


def _run(steps: Sequence[Step], opts: SetupOptions, execute: Callable[[Step], None]) -> None:
    for step in steps:
        opts.log(f"- {step.detail}" + (" (dry run)" if opts.dry_run else ""))
        if not opts.dry_run:
            started = time.monotonic()
            execute(step)
            opts.log(f"  done in {time.monotonic() - started:.1f} s")


def _incus_step(incus: Any, step: Step, opts: SetupOptions) -> None:
    if step.kind == "pool":
        do_pool(incus, step)
    elif step.kind == "network":
        do_network(incus, step)
    elif step.kind == "subid":
        add_subid_lines(step.params["lines"])
    elif step.kind == "group":
        do_group(step, opts.group)


HOST_STEPS: dict[str, Callable[[Step, Callable[[str], None]], None]] = {
    "backports": do_backports,
    "install": do_install,
    "subid-range": do_subid_range,
    "lxc-template": lambda _step, _log: lxchooks.install(),
    "restart": daemon.do_restart,
    "start": daemon.do_start,
}

"""The base step of the image pipeline: a Debian rootfs from debootstrap, imported into Incus.

No image server is reachable on the machines we target, so the base is built locally from
Debian's archive and cached under an alias by a hash of everything that went into it. A
remote `images:`-style reference replaces the local build for users who have a server.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from coi.core import output, paths, proc
from coi.core.errors import CoiError, NotFound, UsageError
from coi.core.lock import file_lock
from coi.core.paths import locks_dir
from coi.incus.api import IncusAPI

Log = Callable[[str], None]

SUITES = {"12": "bookworm", "13": "trixie"}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://security.debian.org/debian-security"
INPUTS_PROPERTY = "coi.inputs"
# Bump when the build changes in a way the spec, script and metadata do not show.
FORMAT = 1
DEBOOTSTRAP_TIMEOUT = 15 * 60.0
WORK_ROOT = Path("/var/tmp")
TAIL_LINES = 12
ALLOWED_FORMS = "debian/12, debian/13 or REMOTE:NAME (e.g. images:debian/12)"

# fmt: off
# ifupdown + isc-dhcp-client: a minbase with only systemd-networkd got no lease here.
DEFAULT_PACKAGES = (
    "systemd-sysv", "dbus", "ifupdown", "isc-dhcp-client", "iproute2", "sudo", "ca-certificates",
)
# dpkg architecture -> the name Incus uses in metadata.yaml.
INCUS_ARCHES = {
    "amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l", "armel": "armv6l", "i386": "i686",
    "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64el": "mips64",
    "loong64": "loongarch64",
}
# fmt: on

# Run inside the new rootfs with chroot; COI_* come from the spec. Its text is hashed.
CUSTOMISE_SCRIPT = r"""
set -eu
# Incus gives the container one NIC, eth0; dhclient gets its address from the bridge.
cat > /etc/network/interfaces <<'EOF'
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp

source /etc/network/interfaces.d/*
EOF
# debootstrap copies the build host's name and resolver: the image templates write the
# container's name at create, and dhclient writes its resolver.
echo debian > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n' > /etc/hosts
rm -f /etc/resolv.conf /etc/apt/sources.list
stanza() { printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n%s\n\n' "$1" "$2" \
    'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg'; }
{ stanza "$COI_MIRROR" "$COI_SUITE $COI_SUITE-updates"
  [ -z "$COI_SECURITY_MIRROR" ] || stanza "$COI_SECURITY_MIRROR" "$COI_SUITE-security"
} > /etc/apt/sources.list.d/debian.sources
# Loading kernel modules cannot work in an unprivileged container; on Debian 13 the failed
# unit leaves systemd `degraded` (12 skips it by a condition; both measured).
ln -sf /dev/null /etc/systemd/system/systemd-modules-load.service
# Every container gets its own machine-id on first boot.
rm -f /etc/machine-id /var/lib/dbus/machine-id
: > /etc/machine-id
ln -s /etc/machine-id /var/lib/dbus/machine-id
# Package lists and downloads are stale by the time anyone uses the image.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old \
    /var/lib/dpkg/*-old /var/log/bootstrap.log /tmp/* /var/tmp/*
find /var/log -type f -exec truncate -s 0 {} +
"""

HOSTNAME_TPL = "{{ instance.name }}\n"
HOSTS_TPL = """\
127.0.0.1\tlocalhost
127.0.1.1\t{{ instance.name }}
::1\tlocalhost ip6-localhost ip6-loopback
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""
TEMPLATES = {"hostname.tpl": HOSTNAME_TPL, "hosts.tpl": HOSTS_TPL}


@dataclass(frozen=True)
class BaseSpec:
    """What a locally built Debian base is made of; equal specs give equal images."""

    release: str
    mirror: str = DEFAULT_MIRROR
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    arch: str = ""  # dpkg architecture; "" means the host's, filled in by `resolve`
    security_mirror: str = DEFAULT_SECURITY_MIRROR  # "" leaves the security suite out

    @property
    def suite(self) -> str:
        """The Debian codename of the release."""
        return SUITES[self.release]


@dataclass(frozen=True)
class RemoteBase:
    """A base image taken from an image server the user configured, e.g. images:debian/12."""

    remote: str
    name: str

    @property
    def source(self) -> str:
        """The reference as Incus writes it: REMOTE:NAME."""
        return f"{self.remote}:{self.name}"


_REMOTE = re.compile(r"(?P<remote>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<name>[A-Za-z0-9][\w.:/-]*)")


def parse_base(ref: str) -> BaseSpec | RemoteBase:
    """Turn `debian/12`, `debian/13` or `REMOTE:NAME` into a spec; else a usage error."""
    text = ref.strip()
    if text.startswith("debian/"):
        release = text.removeprefix("debian/")
        if release in SUITES:
            return BaseSpec(release=release)
        raise UsageError(
            f"unsupported Debian release {release!r} in base {ref!r}: use {ALLOWED_FORMS}"
        )
    match = _REMOTE.fullmatch(text)
    if match:
        return RemoteBase(match["remote"], match["name"])
    raise UsageError(f"invalid base image {ref!r}: use {ALLOWED_FORMS}")


def base_alias(spec: BaseSpec) -> str:
    """The alias a local base lives under: coi-base-debian-<release>."""
    return f"coi-base-debian-{spec.release}"


def incus_arch(dpkg_arch: str) -> str:
    """The Incus architecture name for a dpkg architecture."""
    try:
        return INCUS_ARCHES[dpkg_arch]
    except KeyError:
        raise CoiError(f"architecture {dpkg_arch!r} is not supported by the base image") from None


@cache
def host_arch() -> str:
    """The host's dpkg architecture (dpkg --print-architecture, else from uname)."""
    if shutil.which("dpkg"):
        return proc.run(["dpkg", "--print-architecture"], timeout=10).stdout.strip()
    machine = platform.machine()
    for dpkg_arch, name in INCUS_ARCHES.items():
        if name == machine:
            return dpkg_arch
    raise CoiError(f"cannot tell the Debian architecture of this {machine} host")


def resolve(spec: BaseSpec) -> BaseSpec:
    """The spec with the host's architecture filled in when none was given."""
    return spec if spec.arch else replace(spec, arch=host_arch())


def image_properties(spec: BaseSpec) -> dict[str, str]:
    """The properties written into metadata.yaml and onto the imported image."""
    return {
        "os": "Debian",
        "release": spec.suite,
        "version": spec.release,
        "architecture": spec.arch,
        "variant": "coi-base",
        "description": f"Debian {spec.release} ({spec.suite}) {spec.arch}, coi base",
    }


def metadata(spec: BaseSpec, created: int) -> dict[str, Any]:
    """The metadata.yaml content, with /etc/hostname and /etc/hosts templates like Incus images."""
    return {
        "architecture": incus_arch(spec.arch),
        "creation_date": created,
        "properties": image_properties(spec),
        "templates": {
            "/etc/hostname": _template("hostname.tpl"),
            "/etc/hosts": _template("hosts.tpl"),
        },
    }


def _template(name: str) -> dict[str, Any]:
    """One metadata.yaml template entry, rendered when an instance is created or copied."""
    return {"when": ["create", "copy"], "create_only": False, "template": name, "properties": {}}


def inputs_hash(spec: BaseSpec) -> str:
    """sha256 over the spec, the customisation script and the metadata template."""
    inputs = {
        "format": FORMAT,
        "spec": asdict(spec),
        "script": CUSTOMISE_SCRIPT,
        "metadata": metadata(spec, 0) if spec.arch in INCUS_ARCHES else None,
        "templates": TEMPLATES,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


# -- Incus side -----------------------------------------------------------------------


def ensure_base(incus: IncusAPI, ref: str, *, log: Log = print, force: bool = False) -> str:
    """Return an image source for ref, building and importing a local base if needed."""
    base = parse_base(ref)
    if isinstance(base, RemoteBase):
        return base.source
    spec = resolve(base)
    alias, digest = base_alias(spec), inputs_hash(spec)
    if not force and _cached(incus, alias, digest):
        return alias
    _require_root()
    lock = locks_dir() / f"image-{alias}.lock"
    with file_lock(lock, timeout=DEBOOTSTRAP_TIMEOUT + 300, what=f"the build of {alias}"):
        # Another coi process may have built it while we waited for the lock.
        if not force and _cached(incus, alias, digest):
            return alias
        fingerprint = build_base(incus, spec, digest, log)
        _move_alias(incus, alias, fingerprint, image_properties(spec)["description"])
    log(f"base image {alias} is {fingerprint[:12]}")
    return alias


def _cached(incus: IncusAPI, alias: str, digest: str) -> bool:
    """True when alias exists and points at an image built from these inputs."""
    record = incus.image_alias(alias)
    if record is None:
        return False
    try:
        image = incus.image(record["target"])
    except NotFound:
        return False
    return bool((image.get("properties") or {}).get(INPUTS_PROPERTY) == digest)


def _require_root() -> None:
    """debootstrap chroots and creates device nodes: only root can."""
    if os.geteuid() != 0:
        raise CoiError(
            "building the base image runs debootstrap, which needs root: "
            "run `sudo coi setup` (or `sudo coi build`)"
        )


def build_base(incus: IncusAPI, spec: BaseSpec, digest: str, log: Log = print) -> str:
    """Debootstrap, customise, pack and import one base; returns the new fingerprint."""
    with _workdir(log) as work:
        rootfs = work / "rootfs"
        started = time.monotonic()
        debootstrap(spec, rootfs, log)
        log(f"debootstrap done in {time.monotonic() - started:.0f} s; customising")
        customise(spec, rootfs)
        meta_tar, root_tar = pack(spec, rootfs, work)
        log(f"importing {root_tar.stat().st_size / 2**20:.0f} MiB rootfs into Incus")
        properties = {**image_properties(spec), INPUTS_PROPERTY: digest}
        return incus.import_image(meta_tar, root_tar, properties)


def _move_alias(incus: IncusAPI, alias: str, fingerprint: str, description: str) -> None:
    """Point alias at the new image; drop the old image when nothing else names it."""
    old = incus.image_alias(alias)
    try:
        incus.set_alias(alias, fingerprint, description)
    except CoiError:
        incus.delete_image(fingerprint)  # an image no alias names would only leak
        raise
    old_fp = old.get("target") if old else None
    if not old_fp or old_fp == fingerprint:
        return
    try:
        if not incus.image(old_fp).get("aliases"):
            incus.delete_image(old_fp)
    except NotFound:
        pass


# -- host side --------------------------------------------------------------------------


def debootstrap_argv(spec: BaseSpec, target: Path) -> list[str]:
    """The debootstrap command line for spec."""
    return [
        "debootstrap", "--variant=minbase", f"--arch={spec.arch}",
        f"--include={','.join(spec.packages)}", spec.suite, str(target), spec.mirror,
    ]  # fmt: skip


def debootstrap(spec: BaseSpec, target: Path, log: Log) -> None:
    """Run debootstrap into target, streaming its output; CoiError with the tail on failure."""
    if not shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
        raise CoiError("debootstrap is not installed: run `sudo coi setup`")
    # Its hundreds of lines go to a log file; a terminal sees one line that keeps changing.
    record = paths.ensure(paths.logs_dir()) / f"debootstrap-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log(f"debootstrap {spec.suite}: its output goes to {record}")
    try:
        with open(record, "w", encoding="utf-8") as sink, output.status_line() as show:

            def line(text: str) -> None:
                sink.write(text + "\n")
                show(f"debootstrap: {text}")

            stream(debootstrap_argv(spec, target), line, DEBOOTSTRAP_TIMEOUT)
    except CoiError as exc:
        # debootstrap's own log names the step that failed; it is about to be deleted.
        detail = proc.log_tail(target / "debootstrap" / "debootstrap.log", 5)
        raise CoiError(
            f"{exc}{'; log: ' + detail if detail else ''} (all of it: {record})"
        ) from exc


def stream(argv: list[str], log: Log, timeout: float) -> None:
    """Run argv, passing each output line to log as it comes; kill it after timeout."""
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    expired = threading.Event()
    # Own session: a Ctrl+C reaches us, and we stop the whole tree (dpkg, chroot) ourselves.
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=env, text=True, encoding="utf-8", errors="replace", start_new_session=True,
    ) as child:  # fmt: skip

        def expire() -> None:
            expired.set()
            _stop(child)

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            assert child.stdout is not None
            for line in child.stdout:
                tail.append(line.rstrip())
                log(tail[-1])
            code = child.wait()
        except BaseException:
            _stop(child)
            raise
        finally:
            timer.cancel()
    last = " | ".join(line for line in list(tail)[-5:] if line) or "no output"
    if expired.is_set():
        raise CoiError(f"`{argv[0]}` did not finish within {timeout:.0f} s: {last}")
    if code != 0:
        raise CoiError(f"`{argv[0]}` exited {code}: {last}")


def _stop(child: subprocess.Popen[str]) -> None:
    """Terminate child's process group, then kill it if it lingers."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def customise(spec: BaseSpec, rootfs: Path) -> None:
    """Run the customisation script inside rootfs (network, hostname, units, cleanup)."""
    env = {
        "COI_MIRROR": spec.mirror,
        "COI_SUITE": spec.suite,
        "COI_SECURITY_MIRROR": spec.security_mirror,
        "LC_ALL": "C",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    proc.run(["chroot", str(rootfs), "/bin/sh", "-c", CUSTOMISE_SCRIPT], env=env, timeout=300)


def pack(spec: BaseSpec, rootfs: Path, work: Path) -> tuple[Path, Path]:
    """Write metadata.tar and rootfs.tar (numeric owners, xattrs) into work."""
    meta_dir = work / "meta"
    (meta_dir / "templates").mkdir(parents=True)
    body = metadata(spec, int(time.time()))
    (meta_dir / "metadata.yaml").write_text(yaml.safe_dump(body, sort_keys=True))
    for name, text in TEMPLATES.items():
        (meta_dir / "templates" / name).write_text(text)
    meta_tar, root_tar = work / "metadata.tar", work / "rootfs.tar"
    owners = ["--numeric-owner", "--owner=0", "--group=0"]
    proc.run(["tar", *owners, "-C", str(meta_dir), "-cf", str(meta_tar), "."], timeout=60)
    # Uncompressed: on a local socket gzip costs more time than it saves (measured).
    xattrs = ["--xattrs", "--xattrs-include=*"]
    proc.run(
        ["tar", "--numeric-owner", *xattrs, "-C", str(rootfs), "-cf", str(root_tar), "."],
        timeout=600,
    )
    return meta_tar, root_tar


@contextmanager
def _workdir(log: Log) -> Iterator[Path]:
    """A private temp dir under /var/tmp, removed on every path (mounts undone first)."""
    path = Path(tempfile.mkdtemp(prefix="coi-base-", dir=WORK_ROOT))
    try:
        yield path
    finally:
        left = _unmount_below(path)
        try:
            if left:  # rmtree would descend into the host's /proc, /sys or /dev
                raise OSError(f"still mounted: {', '.join(left)}")
            shutil.rmtree(path)
        except OSError as exc:
            log(f"coi: warning: could not remove {path}: {exc}")


def mounts_below(root: Path, mountinfo: str) -> list[str]:
    """Mount points under root in a /proc/self/mountinfo text, deepest first."""
    from coi.core.mountinfo import below

    return below(root, mountinfo)


def _unmount_below(root: Path) -> list[str]:
    """Undo mounts a killed debootstrap left (proc, sys, dev binds); return any that stay."""
    real = Path(os.path.realpath(root))
    for point in mounts_below(real, _mountinfo()):
        proc.run(["umount", "--lazy", point], check=False, timeout=30)
    return mounts_below(real, _mountinfo())


def _mountinfo() -> str:
    """This process's mount table."""
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ""

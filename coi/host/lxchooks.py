"""The lxc config every Incus container includes, without lxcfs's stop-time sleep.

Incus has liblxc include `common.conf.d/` of its template folder (/usr/share/lxc/config,
or INCUS_LXC_TEMPLATE_CONFIG). Debian 12's lxcfs puts a post-stop hook there that sleeps
half a second on every stop, meant for a reboot (lxcfs must let go of the old init before
the new one asks); measured here, 0.53 s of an `incus stop --force` of 0.8 s. coi keeps a
copy of that folder of its own, the same files but with the hook run only when the
container reboots, and starts the daemon it manages with INCUS_LXC_TEMPLATE_CONFIG
pointing at it. A daemon systemd starts is left as it is (`coi doctor` says so).
"""

from __future__ import annotations

import os
from pathlib import Path

from coi.core import safefs

ENV = "INCUS_LXC_TEMPLATE_CONFIG"
HOST_DIR = Path("/usr/share/lxc/config")
OURS = Path("/usr/local/share/coi/lxc")
LXCFS_HOOK = "/usr/share/lxcfs/lxc.reboot.hook"
REBOOT_ONLY = "reboot-only.hook"

WRAPPER = f"""#!/bin/sh
# coi: lxcfs's post-stop hook ({LXCFS_HOOK}) is only of use when a container reboots.
[ "${{LXC_TARGET:-}}" = reboot ] || exit 0
exec {LXCFS_HOOK} "$@"
"""


def rewrite(text: str, wrapper: str) -> str:
    """A common.conf.d file with each post-stop hook that is lxcfs's reboot hook replaced
    by wrapper (pure); every other line as it was."""
    lines = []
    for line in text.splitlines(keepends=True):
        key, sep, value = line.partition("=")
        if sep and key.strip() == "lxc.hook.post-stop" and value.strip() == LXCFS_HOOK:
            end = "\n" if line.endswith("\n") else ""
            line = f"lxc.hook.post-stop = {wrapper}{end}"
        lines.append(line)
    return "".join(lines)


def sleeps(files: dict[str, str]) -> bool:
    """Whether these common.conf.d files run lxcfs's reboot hook on every stop (pure)."""
    return any(rewrite(text, "x") != text for text in files.values())


def host_files(base: Path = HOST_DIR) -> dict[str, str]:
    """The host's common.conf.d files by name (empty when it has none)."""
    folder = base / "common.conf.d"
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {}
    found = {}
    for name in names:
        path = folder / name
        if name.endswith(".conf") and path.is_file():
            found[name] = path.read_text(errors="replace")
    return found


def wanted(host: dict[str, str], ours: Path = OURS) -> dict[str, tuple[str, int]]:
    """What our template folder should hold for these host files: relative path -> (text,
    mode) (pure)."""
    wrapper = ours / REBOOT_ONLY
    files = {
        f"common.conf.d/{name}": (rewrite(text, str(wrapper)), 0o644) for name, text in host.items()
    }
    files[REBOOT_ONLY] = (WRAPPER, 0o755)
    return files


def current(base: Path = HOST_DIR, ours: Path = OURS) -> bool:
    """Whether our template folder holds what it should (root-owned, nothing else in
    common.conf.d); a host without lxcfs's sleep needs none and is current."""
    host = host_files(base)
    if not sleeps(host):
        return True
    for rel, (text, mode) in wanted(host, ours).items():
        path = ours / rel
        try:
            info = path.lstat()
            if info.st_uid != 0 or info.st_mode & 0o7777 != mode:
                return False
            if path.read_text() != text:
                return False
        except OSError:
            return False
    try:
        extra = set(os.listdir(ours / "common.conf.d")) - set(host)
    except OSError:
        return False
    return not extra


def install(base: Path = HOST_DIR, ours: Path = OURS) -> None:
    """Write our template folder (as root), each file replaced whole."""
    host = host_files(base)
    files = wanted(host, ours)
    (ours / "common.conf.d").mkdir(parents=True, exist_ok=True, mode=0o755)
    for name in os.listdir(ours / "common.conf.d"):
        if name not in host:
            (ours / "common.conf.d" / name).unlink()
    with safefs.folder(ours) as fd:
        for rel, (text, mode) in files.items():
            safefs.replace_file(fd, rel, text.encode(), mode)


def daemon_env(ours: Path = OURS) -> dict[str, str]:
    """The environment the daemon coi starts gets: ours, when the host needs it."""
    env = dict(os.environ)
    if sleeps(host_files()) and (ours / REBOOT_ONLY).is_file():
        env[ENV] = str(ours)
    return env


def daemon_uses_ours(pids: list[int], ours: Path = OURS, proc: Path = Path("/proc")) -> bool:
    """Whether each running daemon process has our template folder (as root)."""
    want = f"{ENV}={ours}".encode()
    for pid in pids:
        try:
            if want not in (proc / str(pid) / "environ").read_bytes().split(b"\0"):
                return False
        except OSError:
            return False
    return bool(pids)

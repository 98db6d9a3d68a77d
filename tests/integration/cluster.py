"""A real Incus cluster on this host, beside the main daemon and without touching it.

Each member is its own `incusd` with its own INCUS_DIR (a folder under /tmp), started
inside a network and mount namespace of its own (as lxc/incus's test/includes/clustering.sh
does): its bridge, its dnsmasq and its nftables table `incus` live in that namespace, so
the host's coibr0, pool `coi` and nft tables are never seen. Members meet on a hub bridge
this module creates in the host namespace (198.18.N.0/24, the benchmarking range), where
the host reaches their HTTPS API. Each member has an empty /etc/resolv.conf in its mount
namespace: neither the daemons nor their containers resolve any outside name.

Storage is a btrfs pool on a loop file per member (clones, as on the host); the network is
a managed bridge per member with the same subnet on each (a member's namespace is its own
world). Images are exported from the main daemon (read only) and imported once into the
cluster. Teardown is bounded and complete: instances deleted, daemons shut down, every
process left in a member's network namespace (dnsmasq outlives `incus admin shutdown`)
killed by pid, the hub bridge deleted, the folder removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

INCUSD = "/usr/libexec/incus/incusd"
POOL, NETWORK, SUBNET = "data", "coiclbr", "10.199.0.1/24"
API_PORT = 8443


class ClusterError(RuntimeError):
    """The cluster could not be made; the message says which step and why."""


def _run(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    stdin: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            list(args),
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{' '.join(args[:4])}: no answer within {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        raise ClusterError(f"{' '.join(args[:4])}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _kill_and_wait(pids: Sequence[int], deadline: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break
            time.sleep(0.05)


@dataclass
class Member:
    """One incusd in its own namespaces."""

    name: str
    root: Path
    address: str
    ns_pid: int = 0
    daemon_pid: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def incus_dir(self) -> Path:
        return self.root / "var"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "INCUS_DIR": str(self.incus_dir)}

    @property
    def url(self) -> str:
        return f"https://{self.address}:{API_PORT}"

    def incus(
        self, *args: str, timeout: float = 60, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The incus client against this member's unix socket."""
        return _run(["incus", *args], env=self.env, timeout=timeout, stdin=stdin, check=check)

    def in_ns(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A command run in this member's network and mount namespace."""
        return _run(["nsenter", "-n", "-m", "-t", str(self.ns_pid), *args], timeout=timeout)


class Cluster:
    """N members joined into one cluster; use as a context manager (teardown in finally)."""

    def __init__(self, size: int = 2, images: Sequence[str] = ("coi-base-debian-12",)) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one member")
        self.tag = secrets.token_hex(2)
        self.base = Path(tempfile.mkdtemp(prefix=f"coicl-{self.tag}-", dir="/tmp"))
        self.base.chmod(0o711)
        self.hub = f"coiclh{self.tag}"
        # The third octet from the tag; two fixtures at once pick another if it is in use.
        self.octet = int(self.tag, 16) % 250 + 1
        self.images = tuple(images)
        self.members = [
            Member(f"m{i}", self.base / f"m{i}", f"198.18.{self.octet}.{10 + i}")
            for i in range(1, size + 1)
        ]
        self.timings: dict[str, float] = {}
        self._children: list[subprocess.Popen[bytes]] = []

    # -- context manager --------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def leader(self) -> Member:
        return self.members[0]

    @property
    def gateway(self) -> str:
        """The hub bridge's address on the host: members and their containers can reach it."""
        return f"198.18.{self.octet}.1"

    @property
    def cluster_cert(self) -> Path:
        """The certificate every member presents on its API (pin it as the server's)."""
        return self.leader.incus_dir / "cluster.crt"

    # -- start ------------------------------------------------------------------------

    def start(self) -> None:
        if os.geteuid() != 0:
            raise ClusterError("a cluster fixture needs root (namespaces, bridges, loop devices)")
        if _run(["ip", "-4", "addr", "show", "to", f"198.18.{self.octet}.0/24"]).stdout.strip():
            raise ClusterError(f"198.18.{self.octet}.0/24 is already in use on this host")
        _run(["ip", "link", "add", self.hub, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.hub])
        _run(["ip", "link", "set", self.hub, "up"])
        for index, member in enumerate(self.members, start=1):
            self._namespace(member, index)
            self._spawn(member)
        began = time.monotonic()
        self._bootstrap(self.leader)
        self.timings["bootstrap_s"] = time.monotonic() - began
        for member in self.members[1:]:
            began = time.monotonic()
            self._join(member)
            member.timings["join_s"] = time.monotonic() - began
        began = time.monotonic()
        for alias in self.images:
            self._import(alias)
        self.timings["images_s"] = time.monotonic() - began

    def _namespace(self, member: Member, index: int) -> None:
        member.root.mkdir(mode=0o711)
        member.incus_dir.mkdir(mode=0o711)
        (member.root / "resolv.conf").write_text("")
        pid_file = member.root / "ns.pid"
        # unshare execs the shell in place: its pid is the namespaces' holder. /sys is
        # mounted again so that it shows this network namespace's interfaces.
        script = (
            "set -e; mount --make-rprivate /; mount --move /sys /mnt; umount -l /proc; "
            "mount -t sysfs sysfs /sys; mount --move /mnt/fs/cgroup /sys/fs/cgroup; "
            "mount -t proc proc /proc; umount -l /mnt; "
            f"mount --bind {member.root}/resolv.conf /etc/resolv.conf; "
            f"echo $$ > {pid_file}; exec sleep infinity"
        )
        holder = subprocess.Popen(
            ["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", script],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        member.ns_pid = holder.pid
        self._children.append(holder)
        for _ in range(100):
            if pid_file.exists() and pid_file.read_text().strip():
                break
            if holder.poll() is not None:
                raise ClusterError(
                    f"{member.name}: the namespace holder exited ({holder.returncode})"
                )
            time.sleep(0.05)
        else:
            raise ClusterError(f"{member.name}: the namespace holder did not start within 5 s")
        outside, inside = f"coiclv{self.tag}{index}", f"coiclp{self.tag}{index}"
        _run(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside])
        _run(["ip", "link", "set", inside, "netns", str(member.ns_pid)])
        _run(["ip", "link", "set", outside, "master", self.hub, "up"])
        member.in_ns(
            "sh",
            "-ec",
            f"ip link set lo up; ip link set {inside} name eth0; ip link set eth0 up; "
            f"ip addr add {member.address}/24 dev eth0; ip route add default via {self.gateway}",
        )

    def _spawn(self, member: Member) -> None:
        began = time.monotonic()
        log = (member.root / "incusd.out").open("wb")
        with log:
            daemon = subprocess.Popen(
                ["nsenter", "-n", "-m", "-t", str(member.ns_pid), INCUSD, "--group", "incus-admin"],
                env={**member.env, "INCUS_DIR": str(member.incus_dir)},
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        member.daemon_pid = daemon.pid  # nsenter execs incusd in place
        self._children.append(daemon)
        (member.root / "incusd.pid").write_text(f"{daemon.pid}\n")
        member.incus("admin", "waitready", "--timeout=60", timeout=70)
        member.timings["start_s"] = time.monotonic() - began

    def _preseed(self, member: Member, document: dict[str, object]) -> None:
        # JSON is YAML: the preseed needs no YAML writer.
        member.incus("admin", "init", "--preseed", stdin=json.dumps(document), timeout=120)

    def _bootstrap(self, member: Member) -> None:
        self._preseed(
            member,
            {
                "config": {
                    "core.https_address": f"{member.address}:{API_PORT}",
                    "images.auto_update_interval": "0",
                },
                "storage_pools": [{"name": POOL, "driver": "btrfs", "config": {"size": "6GiB"}}],
                "networks": [
                    {
                        "name": NETWORK,
                        "type": "bridge",
                        "config": {
                            "ipv4.address": SUBNET,
                            "ipv4.nat": "true",
                            "ipv6.address": "none",
                        },
                    }
                ],
                "profiles": [
                    {
                        "name": "default",
                        "devices": {
                            "root": {"type": "disk", "path": "/", "pool": POOL},
                            "eth0": {"type": "nic", "name": "eth0", "network": NETWORK},
                        },
                    }
                ],
                "cluster": {"server_name": member.name, "enabled": True},
            },
        )

    def _join(self, member: Member) -> None:
        token = self.leader.incus("cluster", "add", member.name, "--quiet").stdout.strip()
        self._preseed(
            member,
            {
                "cluster": {
                    "enabled": True,
                    "server_name": member.name,
                    "server_address": f"{member.address}:{API_PORT}",
                    "cluster_address": f"{self.leader.address}:{API_PORT}",
                    "cluster_certificate": self.cluster_cert.read_text(),
                    "cluster_token": token,
                    "member_config": [
                        {"entity": "storage-pool", "name": POOL, "key": "size", "value": "6GiB"}
                    ],
                }
            },
        )

    def _import(self, alias: str) -> None:
        """Export an image from the main daemon's default project and import it here."""
        target = self.base / f"image-{alias}"
        # The main daemon: read only (an export), through its own socket.
        host_env = {k: v for k, v in os.environ.items() if k not in ("INCUS_DIR", "INCUS_PROJECT")}
        _run(
            ["incus", "image", "export", f"local:{alias}", str(target), "--project", "default"],
            env=host_env,
            timeout=300,
        )
        parts = sorted(str(p) for p in self.base.glob(f"image-{alias}*"))
        self.leader.incus("image", "import", *parts, "--alias", alias, timeout=300)
        for part in parts:
            Path(part).unlink()

    # -- use --------------------------------------------------------------------------

    def trust(self, cert: Path, name: str = "coi-test") -> None:
        """Trust a client certificate on the cluster (every member shares the trust store)."""
        self.leader.incus("config", "trust", "add-certificate", str(cert), "--name", name)

    def token(self, name: str = "coi-test") -> str:
        """A one-time trust token for a new client."""
        return self.leader.incus("config", "trust", "add", name, "--quiet").stdout.strip()

    def locations(self) -> dict[str, str]:
        """Instance name -> the member that runs it, across all projects."""
        listing = json.loads(
            self.leader.incus("list", "--all-projects", "--format", "json").stdout or "[]"
        )
        return {item["name"]: item["location"] for item in listing}

    # -- stop -------------------------------------------------------------------------

    def stop(self) -> None:
        """Everything this cluster made, gone; bounded (about a minute at worst)."""
        deadline = time.monotonic() + 90
        live = [m for m in self.members if m.daemon_pid and _alive(m.daemon_pid)]
        if live:
            with contextlib.suppress(ClusterError, OSError):
                for project, instance in self._instances(live[0]):
                    live[0].incus(
                        "delete", "--force", instance, "--project", project, timeout=60, check=False
                    )
        for member in live:
            with contextlib.suppress(ClusterError, OSError):
                member.incus("admin", "shutdown", timeout=30, check=False)
        for member in self.members:
            self._kill_namespace(member, deadline)
        with contextlib.suppress(ClusterError):
            if Path(f"/sys/class/net/{self.hub}").exists():
                _run(["ip", "link", "del", self.hub], check=False)
        for child in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
        shutil.rmtree(self.base, ignore_errors=True)

    def _instances(self, member: Member) -> list[tuple[str, str]]:
        listing = json.loads(
            member.incus("list", "--all-projects", "--format", "json", timeout=30).stdout or "[]"
        )
        return [(item["project"], item["name"]) for item in listing]

    def _kill_namespace(self, member: Member, deadline: float) -> None:
        """The daemon, then every process still in its network namespace, by pid."""
        if member.daemon_pid:
            _kill_and_wait([member.daemon_pid], deadline)
        if not member.ns_pid:
            return
        namespace = _netns(member.ns_pid)
        left = []
        if namespace is not None:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and _netns(int(entry.name)) == namespace:
                    left.append(int(entry.name))
        _kill_and_wait(sorted(set(left) | {member.ns_pid}), deadline)


@contextlib.contextmanager
def cluster(size: int = 2, images: Sequence[str] = ("coi-base-debian-12",)) -> Iterator[Cluster]:
    """A started cluster, stopped completely when the block ends."""
    with Cluster(size, images) as made:
        yield made

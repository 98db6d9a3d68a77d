"""A small network lab for isolation tests: every host a probe may reach is made here.

- a "public" bridge on a free /26 of 198.51.100.0/24 (TEST-NET-2), checked with
  `ip route get` to lead to that bridge only, with one server container holding four
  addresses and a dnsmasq whose host-record names the allowlist tests resolve;
- a "private" bridge on a free 10.x.y.0/24 with one server container;
- servers answer `hello from <address>` on TCP 8080 and 9090 (perl, in the base image).

Nothing is sent anywhere else; every probe has a timeout.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shlex
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from coi.core.errors import CoiError
from coi.incus.adapter import Incus, connect
from coi.launch.spec import LaunchSpec, instance_config

PORTS = (8080, 9090)
SERVER = (
    "use IO::Socket::INET; my $p = shift; "
    "my $s = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => $p, Listen => 16, "
    "ReuseAddr => 1) or die; "
    "while (my $c = $s->accept) { print $c 'hello from ' . $c->sockhost . qq(\\n); close $c }"
)
DNS_PROBE = (
    "use IO::Socket::INET; my ($srv, $name) = @ARGV; "
    "my $s = IO::Socket::INET->new(PeerAddr => $srv, PeerPort => 53, Proto => 'udp') or exit 2; "
    "my $q = pack('nnnnnn', 4242, 256, 1, 0, 0, 0) "
    ". join('', map { chr(length) . $_ } split /\\./, $name) . chr(0) . pack('nn', 1, 1); "
    "$s->send($q); my $r = ''; "
    "eval { local $SIG{ALRM} = sub { die }; alarm 2; $s->recv($r, 512); alarm 0 }; "
    "exit(length($r) > 12 ? 0 : 1)"
)


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host routes, and every Incus bridge subnet."""
    out = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    nets = [
        ipaddress.IPv4Network(line.split()[0], strict=False)
        for line in out.splitlines()
        if line and line.split()[0] != "default"
    ]
    for net in connect().get("networks", recursion=1):
        addr = (net.get("config") or {}).get("ipv4.address", "")
        if addr and addr != "none":
            nets.append(ipaddress.IPv4Interface(addr).network)
    return nets


def free_subnet(candidates: list[str]) -> ipaddress.IPv4Network:
    """A candidate overlapping nothing the host routes."""
    used = used_networks()
    for text in candidates:
        net = ipaddress.IPv4Network(text)
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free test subnet")


def routed_to(address: str) -> str:
    """The interface `ip route get` sends address through."""
    out = subprocess.run(["ip", "-j", "route", "get", address], capture_output=True, text=True)
    return str(json.loads(out.stdout)[0].get("dev", ""))


def wait_address(incus: Incus, name: str, timeout: float = 40) -> str:
    """The instance's eth0 IPv4 address, once it has one (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        net = (incus.state(name).get("network") or {}).get("eth0") or {}
        for addr in net.get("addresses", []):
            if addr.get("family") == "inet":
                return str(addr["address"])
        time.sleep(0.3)
    raise TimeoutError(f"{name} got no IPv4 address within {timeout} s")


def sh(incus: Incus, name: str, script: str) -> tuple[int, str]:
    """Run a shell script inside as root: (exit code, stdout + stderr)."""
    for attempt in range(3):
        try:
            result = incus.execute(name, ["bash", "-c", script])
            return result.exit_code, result.stdout + result.stderr
        except Exception as exc:  # Incus sometimes loses an exec under load: try again
            transient = "PID of executing child" in str(exc) or "WebSocket" in str(exc)
            if not transient or attempt == 2:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def start_servers(incus: Incus, name: str) -> None:
    """Detached TCP servers on every port (they outlive the exec)."""
    for port in PORTS:
        code, out = sh(
            incus,
            name,
            f"setsid perl -e {shlex.quote(SERVER)} {port} </dev/null >/dev/null 2>&1 &",
        )
        assert code == 0, out
    for port in PORTS:
        up = (
            f"for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/{port}) && exit 0; sleep 0.1; done"
        )
        assert sh(incus, name, up + "; exit 1")[0] == 0, f"server on {name}:{port} did not start"


def tcp(incus: Incus, name: str, address: str, port: int = 8080, source: str = "") -> str:
    """What a TCP probe from inside got: the server's greeting, or '' (3 s at most)."""
    if source:
        script = (
            "use IO::Socket::INET; my $c = IO::Socket::INET->new(PeerAddr => $ARGV[0], "
            "PeerPort => $ARGV[1], LocalAddr => $ARGV[2], Timeout => 3) or exit 1; "
            "print scalar <$c>"
        )
        cmd = f"timeout 4 perl -e {shlex.quote(script)} {address} {port} {source}"
    else:
        inner = f'exec 3<>/dev/tcp/{address}/{port}; read -t 2 line <&3; echo "$line"'
        cmd = f"timeout 3 bash -c {shlex.quote(inner)}"
    _, out = sh(incus, name, cmd + " 2>/dev/null")
    return out.strip() if out.strip().startswith("hello from") else ""


def dns(incus: Incus, name: str, resolver: str, query: str) -> bool:
    """True when a raw UDP DNS query to resolver got an answer (2 s at most)."""
    code, _ = sh(incus, name, f"timeout 4 perl -e {shlex.quote(DNS_PROBE)} {resolver} {query}")
    return code == 0


def _net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


@dataclass
class Lab:
    """The lab's bridges, servers and names."""

    admin: Incus
    incus: Incus
    tag: str
    pub_bridge: str = ""
    pub_net: ipaddress.IPv4Network = field(default_factory=lambda: _net("198.51.100.0/26"))
    prv_bridge: str = ""
    prv_net: ipaddress.IPv4Network = field(default_factory=lambda: _net("10.0.0.0/24"))
    public: str = ""
    private: str = ""
    instances: list[str] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)

    def pub(self, index: int) -> str:
        return str(self.pub_net.network_address + index)

    @property
    def pub_gateway(self) -> str:
        return self.pub(1)

    @property
    def private_address(self) -> str:
        return str(self.prv_net.network_address + 10)

    def records(self, names: dict[str, str]) -> None:
        """Serve these name -> address records from the public bridge's dnsmasq."""
        raw = "".join(f"host-record={n},{a}\n" for n, a in names.items())
        _patch_bridge(self.admin, self.pub_bridge, {"raw.dnsmasq": raw})
        deadline = time.monotonic() + 20
        from coi.network.dns import ResolveError, resolve

        while time.monotonic() < deadline:  # dnsmasq restarts: wait until it answers
            with contextlib.suppress(ResolveError):
                if all(resolve(n, self.pub_gateway, 1) == [a] for n, a in names.items()):
                    return
            time.sleep(0.3)
        raise TimeoutError("the public bridge's dnsmasq did not serve the records")


def _patch_bridge(admin: Incus, name: str, config: dict[str, str]) -> None:
    """PATCH a bridge's config, again when Incus trips over a veth going away.

    Incus 6.0 lists the bridge's ports and inspects each with `ip link show` while it
    applies the change; a container of an earlier test that stops in between makes that
    inspection fail ("Failed to delete bridge children interfaces ... does not exist")
    though nothing is wrong. Bounded: five tries a second apart.
    """
    from coi.core.errors import IncusError

    for attempt in range(5):
        try:
            admin.call("PATCH", f"networks/{name}", {"config": config})
            return
        except IncusError as err:
            if "does not exist" not in str(err) or attempt == 4:
                raise
            time.sleep(1)


def _bridge(admin: Incus, name: str, gateway: str, prefix: int) -> None:
    body = {
        "name": name,
        "type": "bridge",
        "description": "coi network isolation tests (throwaway)",
        "config": {
            "ipv4.address": f"{gateway}/{prefix}",
            "ipv4.nat": "false",
            "ipv6.address": "none",
        },
    }
    for attempt in range(3):  # Incus can trip over a veth that vanishes meanwhile
        try:
            admin.call("POST", "networks", body, f"creating test bridge {name}")
            return
        except CoiError:
            with contextlib.suppress(CoiError):
                admin.call("DELETE", f"networks/{name}")
            if attempt == 2:
                raise
            time.sleep(1)


def _server(lab: Lab, name: str, image: str, bridge: str, address: str, extra: list[str]) -> None:
    nic = {"type": "nic", "name": "eth0", "network": bridge, "ipv4.address": address}
    spec = LaunchSpec(name=name, image=image, network_mode="open")
    body = instance_config(spec)
    body["devices"]["eth0"] = nic
    lab.incus.create_instance(body)
    lab.instances.append(name)
    lab.incus.set_state(name, "start")
    wait_address(lab.incus, name)
    for addr in extra:
        # replace, not add: sh() tries again after a lost exec, which may have run
        code, out = sh(lab.incus, name, f"ip addr replace {addr}/{lab.pub_net.prefixlen} dev eth0")
        assert code == 0, out
    start_servers(lab.incus, name)


@contextlib.contextmanager
def make_lab(incus: Incus, image: str) -> Iterator[Lab]:
    """Build the lab; remove every part of it afterwards, whatever happened."""
    admin = connect()
    tag = uuid.uuid4().hex[:4]
    lab = Lab(admin, incus, tag)
    try:
        blocks = [f"198.51.100.{64 * i}/26" for i in random.sample(range(4), 4)]
        lab.pub_net = free_subnet(blocks)
        lab.prv_net = free_subnet([f"10.{a}.{b}.0/24" for a, b in _randoms()])
        lab.pub_bridge, lab.prv_bridge = f"coitn{tag}p", f"coitn{tag}v"
        _bridge(admin, lab.pub_bridge, lab.pub_gateway, lab.pub_net.prefixlen)
        lab.bridges.append(lab.pub_bridge)
        _bridge(admin, lab.prv_bridge, str(lab.prv_net.network_address + 1), 24)
        lab.bridges.append(lab.prv_bridge)
        for index in (10, 11, 12, 13):  # the range leads to our bridge and nowhere else
            assert routed_to(lab.pub(index)) == lab.pub_bridge
        assert routed_to(lab.private_address) == lab.prv_bridge
        lab.public, lab.private = f"tn-pub-{tag}", f"tn-prv-{tag}"
        _server(
            lab, lab.public, image, lab.pub_bridge, lab.pub(10), [lab.pub(i) for i in (11, 12, 13)]
        )
        _server(lab, lab.private, image, lab.prv_bridge, lab.private_address, [])
        yield lab
    finally:
        for name in lab.instances:
            with contextlib.suppress(CoiError):
                incus.delete_instance(name, force=True)
        for bridge in lab.bridges:
            with contextlib.suppress(CoiError):
                admin.call("DELETE", f"networks/{bridge}", what=f"deleting {bridge}")


def _randoms() -> list[tuple[int, int]]:
    rng = random.Random()
    return [(rng.randrange(200, 250), rng.randrange(0, 256)) for _ in range(20)]


@contextlib.contextmanager
def host_service(address: str) -> Iterator[int]:
    """A TCP service of the host bound to address (a bridge's own); yields its port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, 0))
    server.listen(8)
    server.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"hello from host\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


def coi_rules(project: str) -> list[str]:
    """Comments of every coi rule of this project now in the host's ruleset."""
    out = subprocess.run(
        ["nft", "-j", "list", "ruleset"], capture_output=True, text=True, check=True
    )
    found = []
    for item in json.loads(out.stdout).get("nftables", []):
        rule = item.get("rule")
        if rule and str(rule.get("comment", "")).startswith(f"coi:{project}/"):
            found.append(str(rule["comment"]))
    return found


# Sends one UDP datagram as a whole Ethernet frame through an AF_PACKET socket, so its
# source address, tags and destination MAC are whatever the caller says (the container's
# own stack would refuse a source it does not hold). With WAIT it first binds a UDP socket
# on SRC, sends from that port and prints the length of the answer (0: none within 2 s).
RAW_UDP = r"""
use strict; use Socket qw(:all);
my ($if, $dmac, $src, $dst, $dport, $tags, $hex, $wait) = @ARGV;
my $payload = pack('H*', $hex);
my ($rx, $sport) = (undef, 40068);
if ($wait) {
  socket($rx, PF_INET, SOCK_DGRAM, 0) or die "udp: $!";
  bind($rx, pack_sockaddr_in(0, inet_aton($src))) or die "bind: $!";
  ($sport) = unpack_sockaddr_in(getsockname($rx));
}
my $udp = pack('nnnn', $sport, $dport, 8 + length $payload, 0) . $payload;
my $ip = pack('CCnnnCCna4a4', 0x45, 0, 20 + length $udp, 0x4242, 0, 64, 17, 0,
  inet_aton($src), inet_aton($dst));
my $sum = 0; $sum += $_ for unpack('n10', $ip);
$sum = ($sum & 0xffff) + ($sum >> 16) while $sum >> 16;
substr($ip, 10, 2) = pack('n', ~$sum & 0xffff);
sub slurp { open(my $f, '<', $_[0]) or die "$_[0]: $!"; my $x = <$f>; chomp $x; $x }
my $mac = sub { (my $m = $_[0]) =~ s/://g; pack('H12', $m) };
my $eth = $mac->($dmac) . $mac->(slurp("/sys/class/net/$if/address"));
$eth .= pack('nn', 0x8100, $_) for grep { length } split /,/, $tags;
$eth .= pack('n', 0x0800);
socket(my $s, 17, SOCK_RAW, 0) or die "packet socket: $!";
my $ll = pack('SniSCCa8', 17, 0x0800, slurp("/sys/class/net/$if/ifindex"), 0, 0, 6, $mac->($dmac));
send($s, $eth . $ip . $udp, 0, $ll) or die "send: $!";
if ($wait) {
  my $r = '';
  eval { local $SIG{ALRM} = sub { die "timeout\n" }; alarm 2; recv($rx, $r, 512, 0); alarm 0 };
  print length($r), "\n";
}
"""
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


@dataclass(frozen=True)
class RawUdp:
    """One hand-made UDP datagram: Ethernet destination, IPv4 source and destination, and
    the 802.1Q tags (their VLAN ids) in front of the IPv4 header."""

    mac: str
    saddr: str
    daddr: str
    tags: tuple[int, ...] = ()


def send_raw_udp(
    incus: Incus, name: str, frame: RawUdp, dport: int, payload: bytes, wait: bool = False
) -> int:
    """Send frame from the container's eth0 as root; with wait, the answer's length."""
    args = [
        "eth0",
        frame.mac,
        frame.saddr,
        frame.daddr,
        str(dport),
        ",".join(str(t) for t in frame.tags),
        payload.hex(),
        "1" if wait else "0",
    ]
    script = f"timeout 5 perl -e {shlex.quote(RAW_UDP)} " + " ".join(shlex.quote(a) for a in args)
    code, out = sh(incus, name, script)
    assert code == 0, out
    return int(out.strip().splitlines()[-1]) if wait else 0


def dns_query(name: str) -> bytes:
    """A DNS question for name's A record."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!6H", 4242, 256, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!2H", 1, 1)


@contextlib.contextmanager
def udp_listener(device: str) -> Iterator[tuple[int, list[bytes]]]:
    """A host UDP service on every address of device (broadcasts included), on a free
    port; yields the port and the datagrams it has received so far."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    sock.bind(("0.0.0.0", 0))
    sock.settimeout(0.2)
    got: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                got.append(sock.recv(2048))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], got
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def veth(incus: Incus, name: str) -> str:
    """The host-side veth of the instance's eth0."""
    return str(incus.instance(name)["config"]["volatile.eth0.host_name"])


@contextlib.contextmanager
def without_incus_port_filters(veths: list[str]) -> Iterator[list[str]]:
    """Delete Incus's own per-NIC filter chains (in its `bridge incus` table) of these veths,
    and only those; put each back afterwards while its veth is still there. Yields the names
    of the chains it deleted."""
    saved: dict[str, tuple[str, str]] = {}  # chain: (its veth, its listing)
    listing = subprocess.run(
        ["nft", "-j", "list", "table", "bridge", "incus"], capture_output=True, text=True
    )
    for item in json.loads(listing.stdout or "{}").get("nftables", []):
        rule = item.get("rule") or {}
        matches = [e.get("match", {}) for e in rule.get("expr", [])]
        ports = {m.get("right") for m in matches if m.get("left") == {"meta": {"key": "iifname"}}}
        port = next(iter(ports & set(veths)), None)
        if port and rule["chain"] not in saved:
            text = _nft("list", "chain", "bridge", "incus", rule["chain"]).stdout
            saved[rule["chain"]] = (port, text)
    try:
        for chain in saved:
            assert _nft("delete", "chain", "bridge", "incus", chain).returncode == 0
        yield sorted(saved)
    finally:
        for chain, (port, text) in saved.items():
            gone = _nft("list", "chain", "bridge", "incus", chain).returncode != 0
            if gone and os.path.exists(f"/sys/class/net/{port}"):
                subprocess.run(["nft", "-f", "-"], input=text, text=True, check=False, timeout=30)


def _nft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", *args], capture_output=True, text=True, timeout=30)

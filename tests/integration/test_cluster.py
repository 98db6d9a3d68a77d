"""A two-member Incus cluster made by the tests themselves (tests/integration/cluster.py).

The cluster lives in namespaces of its own; these tests talk to its members' sockets, to
their HTTPS API on the hub bridge the fixture made, and to containers on it, nothing else.
Figures (start, join, launch per member) go to the test report through record_property
and to stdout (pytest -s shows them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coi.config import remotes
from coi.incus.adapter import Endpoint, Incus
from tests.integration.cluster import Cluster, ClusterError

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("mkfs.btrfs") is None,
    reason="the cluster fixture needs root, unshare and btrfs-progs",
)

IMAGE = "coi-base-debian-12"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        made = Cluster(size=2, images=(IMAGE,))
    except ClusterError as exc:  # pragma: no cover - says why on a machine that cannot
        pytest.skip(str(exc))
    with made:
        for member in made.members:
            print(f"cluster {member.name}: {member.timings}")
        print(f"cluster: {made.timings}")
        yield made


def make_client_cert(folder: Path) -> tuple[Path, Path]:
    return remotes.new_pair(folder / "client.crt", folder / "client.key", "coi-cluster-test", 1)


def test_members_are_online(
    cluster: Cluster, record_property: Callable[[str, object], None]
) -> None:
    listing = json.loads(cluster.leader.incus("cluster", "list", "--format", "json").stdout)
    assert sorted(m["server_name"] for m in listing) == ["m1", "m2"]
    assert {m["status"] for m in listing} == {"Online"}
    for member in cluster.members:
        for key, value in member.timings.items():
            record_property(f"{member.name}_{key}", round(value, 2))
    for key, value in cluster.timings.items():
        record_property(key, round(value, 2))


def test_a_container_runs_on_each_member(
    cluster: Cluster, record_property: Callable[[str, object], None]
) -> None:
    names = {m.name: f"coiclt-{cluster.tag}-{m.name}" for m in cluster.members}
    try:
        for member, name in names.items():
            began = time.monotonic()
            cluster.leader.incus("launch", IMAGE, name, "--target", member, timeout=180)
            took = time.monotonic() - began
            record_property(f"launch_{member}_s", round(took, 2))
            print(f"launch on {member}: {took:.2f} s")
        assert cluster.locations() == {name: member for member, name in names.items()}
        for name in names.values():
            done = cluster.leader.incus("exec", name, "--", "cat", "/etc/hostname", timeout=60)
            assert done.stdout.strip() == name
    finally:
        for name in names.values():
            cluster.leader.incus("delete", "--force", name, check=False, timeout=60)


def test_https_client_on_each_member_with_pinned_cluster_certificate(
    cluster: Cluster, tmp_path: Path
) -> None:
    cert, key = make_client_cert(tmp_path)
    cluster.trust(cert, name=f"coi-test-{tmp_path.name[-8:]}")
    for member in cluster.members:
        remote = Incus(Endpoint(member.url, str(cert), str(key), str(cluster.cluster_cert)))
        assert remote.server()["auth"] == "trusted"
        assert remote.server()["environment"]["server_name"] == member.name
    (tmp_path / "stranger").mkdir()
    stranger, stranger_key = make_client_cert(tmp_path / "stranger")
    untrusted = Incus(
        Endpoint(cluster.leader.url, str(stranger), str(stranger_key), str(cluster.cluster_cert))
    )
    assert untrusted.server()["auth"] == "untrusted"


def test_teardown_leaves_nothing_behind() -> None:
    """A one-member cluster, stopped: no process, loop device, link or folder of it stays."""
    made = Cluster(size=1, images=())
    with made:
        pids = [made.leader.daemon_pid, made.leader.ns_pid]
        base, hub = made.base, made.hub
        assert made.leader.incus("storage", "list", "--format", "csv").stdout.startswith("data,")
    assert not base.exists()
    assert not Path(f"/sys/class/net/{hub}").exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    assert str(base) not in loops
    holders = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(base) in _cmdline(p)]
    assert holders == []


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_coi_remote_add_by_token_then_by_certificate(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`coi remote add` against a real cluster: a token pins and trusts; a second user the
    admin trusts by certificate needs --accept-certificate; both reach every member."""
    import sys

    from coi.config import remotes
    from coi.config.endpoint import endpoint
    from tests.unit.test_remote import section

    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "alice")}
    coi = [sys.executable, "-m", "coi"]
    token = cluster.token(f"alice-{cluster.tag}")
    added = subprocess.run(
        [*coi, "remote", "add", "team", cluster.members[1].url, "--token", token],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    assert "trusted by token" in added.stderr
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "alice"))
    where, _ = endpoint(section("team"))
    assert Incus(where).server()["auth"] == "trusted"
    for member in cluster.members:  # the pinned cluster certificate serves every member
        other = remotes.Remote("m", member.url, "default", Path(str(where.server_cert)))
        pinned = Endpoint(other.url, where.client_cert, where.client_key, str(other.server_cert))
        assert Incus(pinned).server()["environment"]["server_name"] == member.name

    bob = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "bob")}
    refused = subprocess.run(
        [*coi, "remote", "add", "team", cluster.leader.url],
        env=bob,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "--accept-certificate" in refused.stderr
    untrusted = subprocess.run(
        [*coi, "remote", "add", "team", cluster.leader.url, "--accept-certificate"],
        env=bob,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert untrusted.returncode == 1 and "add-certificate" in untrusted.stderr
    cluster.trust(tmp_path / "bob" / "coi" / "remotes" / "client.crt", name=f"bob-{cluster.tag}")
    done = subprocess.run(
        [*coi, "remote", "add", "team", cluster.leader.url, "--accept-certificate"],
        env=bob,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "trusted by certificate" in done.stderr


@pytest.fixture
def remote_incus(cluster: Cluster, tmp_path: Path) -> Incus:
    """The cluster over HTTPS with a trusted client certificate, as coi reaches a remote."""
    (tmp_path / "client").mkdir()
    cert, key = make_client_cert(tmp_path / "client")
    cluster.trust(cert, name=f"coi-run-{tmp_path.name[-10:]}")
    return Incus(Endpoint(cluster.leader.url, str(cert), str(key), str(cluster.cluster_cert)))


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def test_remote_sessions_land_on_both_members_and_come_back_as_branches(
    cluster: Cluster, remote_incus: Incus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coi.remote import session

    monkeypatch.setenv("COI_HOME", str(tmp_path / "coi-home"))
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("one\n")
    (repo / ".gitignore").write_text("build/\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD").strip()
    (repo / "a.txt").write_text("one\nuncommitted\n")
    (repo / "untracked.txt").write_text("untracked\n")
    (repo / "build").mkdir()
    (repo / "build" / "big.o").write_bytes(b"\0" * 1000)
    status = _git(repo, "status", "--porcelain")

    prefix = f"coiclt{cluster.tag}-"
    placed = []
    try:
        for slot in (1, 2):
            placed.append(
                session.start(remote_incus, repo, slot, image=IMAGE, pool="data", prefix=prefix)
            )
        # Incus's scheduler puts the second where fewer instances run: the other member.
        assert sorted(p.location for p in placed) == ["m1", "m2"]
        first = placed[0]
        member = session.on_member(remote_incus, first.location)
        seen = member.execute(first.name, ["sh", "-c", "ls -a /workspace | sort"])
        assert seen.stdout.split() == sorted([".", "..", ".gitignore", "a.txt", "untracked.txt"])
        agent = "echo agent > new.txt && echo more >> a.txt && mkdir -p d && ln -s ../a.txt d/l"
        assert member.execute(first.name, ["sh", "-c", agent], user=1000, group=1000,
                                    cwd="/workspace").exit_code == 0  # fmt: skip
        synced = session.sync(remote_incus, first.name)
        assert synced.branch == "coi/remote/1"
        assert _git(repo, "rev-parse", "coi/remote/1^").strip() == head
        assert _git(repo, "show", "coi/remote/1:new.txt") == "agent\n"
        assert _git(repo, "show", "coi/remote/1:a.txt") == "one\nuncommitted\nmore\n"
        assert _git(repo, "show", "coi/remote/1:untracked.txt") == "untracked\n"
        # tarsafe brings back files and folders only: a link the agent made stays there.
        assert "d/l" not in _git(repo, "ls-tree", "-r", "--name-only", "coi/remote/1")
        assert "build/big.o" not in _git(repo, "ls-tree", "-r", "--name-only", "coi/remote/1")
        # The user's work tree, index and HEAD are as they were.
        assert _git(repo, "status", "--porcelain") == status
        assert _git(repo, "rev-parse", "HEAD").strip() == head
    finally:
        for item in placed:
            session.stop(remote_incus, item.name, "data", item.location)
    assert not [n for n in remote_incus.instance_names() if n.startswith(prefix)]
    volumes = remote_incus.get("storage-pools/data/volumes/custom")
    assert not [v for v in volumes if prefix in v]


def test_remote_run_of_a_plain_folder_comes_back_as_files(
    cluster: Cluster, remote_incus: Incus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coi.remote import session

    monkeypatch.setenv("COI_HOME", str(tmp_path / "coi-home"))
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "notes.txt").write_text("host\n")
    out: list[bytes] = []
    done = session.run(
        remote_incus,
        folder,
        ["sh", "-c", "cat notes.txt; echo agent > made.txt; exit 3"],
        image=IMAGE,
        pool="data",
        prefix=f"coiclt{cluster.tag}-",
        on_stdout=out.append,
    )
    assert (done.exit_code, b"".join(out)) == (3, b"host\n")
    assert done.fetched.folder is not None
    assert (done.fetched.folder / "made.txt").read_text() == "agent\n"
    assert (folder / "made.txt").exists() is False  # the workspace itself is untouched


# -- coi run --remote, restricted mode on a member ----------------------------------------


@pytest.fixture
def team(cluster: Cluster, tmp_path: Path) -> dict[str, str]:
    """The environment of a user who did `coi remote add team URL --token T`."""
    import sys

    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "COI_HOME": str(tmp_path / "coi-home"),
        "COI_CONTAINER_PREFIX": f"coiclr{cluster.tag}-",
    }
    token = cluster.token(f"team-{tmp_path.name[-10:]}")
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "coi",
            "remote",
            "add",
            "team",
            cluster.leader.url,
            "--token",
            token,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    return env


def _coi(env: dict[str, str], cwd: Path, *args: str, timeout: float = 240) -> subprocess.Popen[str]:
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "coi", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _done(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


REMOTE = ("--remote", "team", "--image", IMAGE)


def _appeared(cluster: Cluster, prefix: str, count: int = 1) -> str:
    """The newest of this test's containers once count of them are running (bounded)."""
    for _ in range(600):
        listing = json.loads(cluster.leader.incus("list", "--format", "json").stdout or "[]")
        mine = [i for i in listing if i["name"].startswith(prefix) and i["status"] == "Running"]
        if len(mine) >= count:
            return str(sorted(mine, key=lambda i: i["created_at"])[-1]["name"])
        time.sleep(0.2)
    raise AssertionError(f"{count} containers named {prefix}* did not run within 120 s")


def test_coi_run_remote_places_on_both_members_and_resumes(
    cluster: Cluster, team: dict[str, str], tmp_path: Path
) -> None:
    """Two `coi run --remote` at once land on m1 and m2 (Incus's scheduler: the second
    goes where fewer instances run); each exit code comes back, each agent's files come
    back as coi/remote/<slot>; `--resume` brings the tool's saved state to the cluster."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD").strip()
    flags = (*REMOTE, "--network", "open")
    # The first run waits for /tmp/go, so that the second is created while it runs.
    wait = "echo early > early.txt; "
    wait += "i=0; while [ ! -e /tmp/go ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done; "
    agent = "echo from-$0 > made.txt; mkdir -p ~/.claude; echo remembered > ~/.claude/mem; exit $1"
    prefix = team["COI_CONTAINER_PREFIX"]
    first = _coi(
        team, repo, "run", *flags, "--slot", "1", "--", "sh", "-c", wait + agent, "s1", "5"
    )
    name = _appeared(cluster, prefix)
    second = _coi(team, repo, "run", *flags, "--slot", "2", "--", "sh", "-c", agent, "s2", "6")
    runs = [first, second]
    _appeared(cluster, prefix, count=2)
    # `coi sync NAME` while the first runs: what its agent wrote so far comes back.
    for _ in range(300):
        ready = ["exec", name, "--", "test", "-e", "/workspace/early.txt"]
        if cluster.leader.incus(*ready, check=False).returncode == 0:
            break
        time.sleep(0.2)
    code, _, err = _done(_coi(team, repo, "sync", name, "--remote", "team"))
    assert code == 0 and "coi/remote/1" in err, err
    assert _git(repo, "show", "coi/remote/1:early.txt") == "early\n"
    cluster.leader.incus("exec", name, "--", "touch", "/tmp/go")
    results = [_done(p) for p in runs]
    members: set[str] = set()
    for slot, (code, _, err) in zip((1, 2), results, strict=True):
        assert code == slot + 4, err
        assert _git(repo, "show", f"coi/remote/{slot}:made.txt") == f"from-s{slot}\n"
        assert _git(repo, "rev-parse", f"coi/remote/{slot}^").strip() == head
        members.update(m for m in ("m1", "m2") if f"on member {m}" in err)
    print(f"placement of two concurrent runs: {sorted(members)}")
    assert members == {"m1", "m2"}
    assert _git(repo, "status", "--porcelain") == ""

    code, out, err = _done(
        _coi(team, repo, "run", *flags, "--resume", "--", "sh", "-c", "cat ~/.claude/mem")
    )
    assert (code, out) == (0, "remembered\n"), err  # the tool's saved state is back
    assert not [n for n in cluster.locations() if n.startswith(team["COI_CONTAINER_PREFIX"])]


SERVE = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16); print('ready', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello\\n'); c.close()\n"
)


@dataclass
class Hosts:
    """Test hosts: public and private servers in a namespace on the hub, and a service on
    each member's bridge address (its own service)."""

    public: str
    private: str
    members: dict[str, str]
    procs: list[subprocess.Popen[str]]


def _serve(prefix: list[str], address: str, port: int) -> subprocess.Popen[str]:
    import sys

    proc = subprocess.Popen(
        [*prefix, sys.executable, "-c", SERVE, address, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def hosts(cluster: Cluster) -> Iterator[Hosts]:
    tag, ns = cluster.tag, f"coiclsrv{cluster.tag}"
    hub_addr = f"198.18.{cluster.octet}.200"
    # 203.0.113.0/24 (TEST-NET-3) plays the public internet, as the local network tests do.
    public, private = f"203.0.113.{cluster.octet}", f"192.168.{cluster.octet}.7"
    outside, inside = f"coiclsv{tag}", f"coiclsp{tag}"
    made = Hosts(public, private, {}, [])
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for step in (
            ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
            ["ip", "link", "set", inside, "netns", ns],
            ["ip", "link", "set", outside, "master", cluster.hub, "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "link", "set", inside, "up"],
            ["ip", "-n", ns, "addr", "add", f"{hub_addr}/24", "dev", inside],
            ["ip", "-n", ns, "addr", "add", f"{public}/32", "dev", "lo"],
            ["ip", "-n", ns, "addr", "add", f"{private}/32", "dev", "lo"],
        ):
            subprocess.run(step, check=True, capture_output=True)
        for address in (public, private):
            made.procs.append(_serve(["ip", "netns", "exec", ns], address, 8080))
        for member in cluster.members:
            for address in (public, private):
                member.in_ns("ip", "route", "replace", f"{address}/32", "via", hub_addr)
            bridge = "10.199.0.1"  # SUBNET of tests/integration/cluster.py
            made.procs.append(_serve(["nsenter", "-n", "-t", str(member.ns_pid)], bridge, 8081))
            made.members[member.name] = member.address
        yield made
    finally:
        for proc in made.procs:
            proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        for member in cluster.members:
            for address in (public, private):
                with contextlib.suppress(ClusterError):
                    member.in_ns("ip", "route", "del", f"{address}/32")
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["ip", "link", "del", outside], check=False, capture_output=True)


def _probe_script(hosts: Hosts) -> str:
    targets = {
        "public": (hosts.public, 8080),
        "private": (hosts.private, 8080),
        "bridge-service": ("10.199.0.1", 8081),
        "dns": ("10.199.0.1", 53),
        **{f"api-{m}": (a, 8443) for m, a in hosts.members.items()},
    }
    return "; ".join(
        f"timeout 3 bash -c 'echo > /dev/tcp/{ip}/{port}' 2>/dev/null; echo {label}=$?"
        for label, (ip, port) in targets.items()
    )


def _probed(out: str) -> dict[str, bool]:
    return {
        k: v == "0" for k, v in (line.split("=", 1) for line in out.splitlines() if "=" in line)
    }


def test_restricted_remote_session_is_enforced_by_the_member(
    cluster: Cluster, team: dict[str, str], hosts: Hosts, tmp_path: Path
) -> None:
    """--network restricted on the cluster: the member's ACL lets the session reach the
    public test host and DNS, not the private one, the member's bridge service or the
    members' API; open mode reaches them all (the test hosts are real); no ACL is left."""
    folder = tmp_path / "plain"
    folder.mkdir()
    script = _probe_script(hosts)
    code, out, err = _done(_coi(team, folder, "run", *REMOTE, "--network", "open", "--",
                                "bash", "-c", script))  # fmt: skip
    assert code == 0, err
    assert set(_probed(out).values()) == {True}, out
    code, out, err = _done(_coi(team, folder, "run", *REMOTE, "--network", "restricted", "--",
                                "bash", "-c", script))  # fmt: skip
    assert code == 0, err
    reached = _probed(out)
    assert reached.pop("public") and reached.pop("dns"), out
    assert set(reached.values()) == {False}, out
    acls = json.loads(cluster.leader.incus("network", "acl", "list", "--format", "json").stdout)
    assert [a["name"] for a in acls] == []
    assert "security.acls" not in cluster.leader.incus("network", "show", "coiclbr").stdout


def test_a_member_that_cannot_enforce_refuses_a_restricted_start(
    cluster: Cluster, remote_incus: Incus, tmp_path: Path
) -> None:
    """A session whose NIC is on a macvlan network (Incus refuses ACLs there): a
    restricted start is refused in one line before the container runs; nothing is left."""
    from coi.remote import guard, session

    net = prof = f"coiclmv{cluster.tag}"
    leader = cluster.leader
    try:
        for member in cluster.members:
            leader.incus("network", "create", net, "--type=macvlan", "parent=eth0",
                         "--target", member.name)  # fmt: skip
        leader.incus("network", "create", net, "--type=macvlan")
        refused = leader.incus("network", "set", net, "security.acls=x", check=False)
        assert refused.returncode != 0  # the network type itself takes no ACL
        leader.incus("profile", "create", prof)
        leader.incus("profile", "device", "add", prof, "root", "disk", "path=/", "pool=data")
        leader.incus("profile", "device", "add", prof, "eth0", "nic", f"network={net}",
                     "name=eth0")  # fmt: skip
        folder = tmp_path / "plain"
        folder.mkdir()
        prefix = f"coiclf{cluster.tag}-"
        with pytest.raises(guard.CannotEnforce) as caught:
            session.start(remote_incus, folder, 1, image=IMAGE, pool=None, prefix=prefix,
                          network="restricted", profiles=[prof])  # fmt: skip
        message = str(caught.value)
        assert "\n" not in message and "macvlan" in message and "refused" in message
        assert not [n for n in remote_incus.instance_names() if n.startswith(prefix)]
    finally:
        leader.incus("profile", "delete", prof, check=False)
        leader.incus("network", "delete", net, check=False)


def test_a_remote_run_ended_by_sigterm_leaves_nothing_on_the_cluster(
    cluster: Cluster, team: dict[str, str], tmp_path: Path
) -> None:
    import signal

    folder = tmp_path / "plain"
    folder.mkdir()
    prefix = team["COI_CONTAINER_PREFIX"]
    proc = _coi(
        team,
        folder,
        "run",
        *REMOTE,
        "--network",
        "restricted",
        "--",
        "sh",
        "-c",
        "touch /tmp/started; exec sleep 120",
    )
    name = _appeared(cluster, prefix)
    for _ in range(300):  # until the command runs
        started = ["exec", name, "--", "test", "-e", "/tmp/started"]
        if cluster.leader.incus(*started, check=False).returncode == 0:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the remote command did not start within 60 s")
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, _, err = _done(proc, timeout=120)
    print(f"SIGTERM to exit: {time.monotonic() - began:.1f} s")
    assert code != 0, err
    assert not [n for n in cluster.locations() if n.startswith(prefix)]
    volumes = cluster.leader.incus("storage", "volume", "list", "data", "--format", "csv").stdout
    assert prefix not in volumes
    acls = json.loads(cluster.leader.incus("network", "acl", "list", "--format", "json").stdout)
    assert acls == []

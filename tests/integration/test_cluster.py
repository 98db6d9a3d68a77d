"""A two-member Incus cluster made by the tests themselves (tests/integration/cluster.py).

The cluster lives in namespaces of its own; these tests talk to its members' sockets, to
their HTTPS API on the hub bridge the fixture made, and to containers on it, nothing else.
Figures (start, join, launch per member) go to the test report through record_property
and to stdout (pytest -s shows them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
    cert, key = folder / "client.crt", folder / "client.key"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:secp384r1",
            ),
            *("-nodes", "-days", "1", "-subj", "/CN=coi-cluster-test"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


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
    wait = "i=0; while [ ! -e /tmp/go ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done; "
    agent = "echo from-$0 > made.txt; mkdir -p ~/.claude; echo remembered > ~/.claude/mem; exit $1"
    prefix = team["COI_CONTAINER_PREFIX"]
    first = _coi(
        team, repo, "run", *flags, "--slot", "1", "--", "sh", "-c", wait + agent, "s1", "5"
    )
    name = _appeared(cluster, prefix)
    second = _coi(team, repo, "run", *flags, "--slot", "2", "--", "sh", "-c", agent, "s2", "6")
    runs = [first, second]
    _appeared(cluster, prefix, count=2)
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

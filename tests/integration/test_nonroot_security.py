"""The security attacks of the root suite, played again as the README's user: an ordinary
member of incus-admin (COI_NONROOT_USER, uid 1234) running coi from a venv on
/usr/bin/python3, on workspaces of their own under their home. Each test plays the same
attack as its root twin, through coi's own commands as that user; the test process stays
root only to prepare and to inspect.

- set-id (twin: test_security_setid.py): root and `code` inside try every set-id route;
  no host file in the workspace carries a set-id bit or belongs to root.
- checkpoints and rollback (twin: test_security_workspace.py): an inotify racer inside
  answers each unlink of the user's rollback with a link to a file outside the workspace,
  or swaps a folder for a link to a folder outside; the victim (root's, and the user's
  own, which a non-root coi could write) is untouched and the rollback is done; a
  `.git/refs/coi` planted as a link gets nothing written through it, nor does a
  worktree's reflog planted as one (the session is refused in one line).
- network (twin: test_network.py, test_security_network.py, .ci/smoke-nonroot): a
  restricted session of the user's reaches nothing on the host's bridge address but DNS
  (a TCP service the test starts there stays out of reach; an open session, the control,
  reaches it), its rules are in while it runs and gone after it; the egress log
  (twin: test_egress.py) records the blocked probe, every file of it the user's.
- broker (twin: test_security_broker.py): the broker of the user's claude session listens
  on a socket in a folder of theirs, 0700; the user reaches it, the second user does not.
"""

from __future__ import annotations

import os
import pwd
import re
import select
import shlex
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakeupstream import Upstream
from tests.integration.helpers import coi_as, coi_as_popen
from tests.integration.netfixtures import DNS_PROBE, coi_rules, host_service
from tests.integration.racer import RACER, Racer
from tests.integration.racer import racers as racers  # the fixture, shared
from tests.integration.test_nonroot import IMAGE, OTHER, USER, _as_user_mkdir, _ready
from tests.integration.test_nonroot import place as place  # the fixture, shared
from tests.integration.test_security_setid import CODE_ATTACK, ROOT_ATTACK, ROOT_LABELS, _quote
from tests.integration.test_security_workspace import git, picture

pytestmark = [pytest.mark.nonroot, pytest.mark.skipif(bool(_ready()), reason=_ready() or "-")]


def _host_view(workspace: Path) -> dict[str, os.stat_result]:
    found = {}
    for folder, dirs, files in os.walk(workspace):
        for entry in dirs + files:
            path = Path(folder) / entry
            found[str(path.relative_to(workspace))] = path.lstat()
    return found


def test_a_non_root_session_leaves_no_setid_and_no_root_file_in_the_workspace(
    place: dict[str, object],
) -> None:
    top, env = Path(str(place["top"])), dict(place["env"])  # type: ignore[call-overload]
    ws = top / "ws"
    _as_user_mkdir(ws)
    script = f"sudo sh -c {_quote(ROOT_ATTACK)}\n{CODE_ATTACK}"
    done = coi_as(
        USER, "run", "--workspace", str(ws), "--network", "open", "--", "sh", "-c", script,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    view = _host_view(ws)
    assert {"rs", "gs", "mine", "sub/deeper/rs"} <= set(view), sorted(view)
    for rel, st in view.items():
        assert st.st_uid != 0 and st.st_gid != 0, f"{rel} is owned by host root"
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), f"{rel}: {oct(st.st_mode)}"
    assert view["mine"].st_uid == pwd.getpwnam(USER).pw_uid  # `code` writes as the owner
    assert view["rs"].st_uid >= 100000  # container root writes as an unprivileged id
    said = done.stdout.split()
    assert [f"refused:{label}" for label in ROOT_LABELS] == [
        w for w in said if w.split(":")[0] in ("made", "refused") and "code" not in w
    ], done.stdout
    assert {"refused:code-suid", "refused:code-sgid", "sudo-works"} <= set(said), done.stdout
    assert "cleared the set-id bits" not in done.stderr
    assert "not enforced" not in done.stderr, done.stderr


def _give(path: Path, user: str = USER) -> None:
    """A tree to user, as a checkout of theirs is theirs."""
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for item in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(item, entry.pw_uid, entry.pw_gid)


def _victim(top: Path, owner: str) -> Path:
    """A folder outside the workspace (beside it, in the user's reach), one file per name
    the attacks use; owner "root" (mode 0755) or the user (what a non-root coi could
    write, were it to follow a link)."""
    folder = top / f"victim-{owner}"
    folder.mkdir()
    for name in ["passwd", *(f"n{i}" for i in range(5))]:
        (folder / name).write_text(f"{owner}'s {name}\n")
    folder.chmod(0o755)
    if owner != "root":
        _give(folder)
    return folder


def _racer(env: dict[str, str], ws: Path, *racer: str) -> Racer:
    """A `coi run` of USER's whose container answers coi's unlinks in a folder."""
    argv = ["run", "--workspace", str(ws), "--", "perl", "-e", RACER, *racer]
    return Racer(coi_as_popen(USER, *argv, env=env))


@pytest.mark.parametrize("owner", ["root", USER])
def test_a_non_root_copy_rollback_never_writes_through_a_link_the_agent_races_in(
    place: dict[str, object], racers: list[Racer], owner: str
) -> None:
    top, env = Path(str(place["top"])), dict(place["env"])  # type: ignore[call-overload]
    victim = _victim(top, owner)
    ws = top / "plain"
    ws.mkdir()
    names = [f"f{i}" for i in range(5)]
    for name in names:
        (ws / name).write_text("original\n")
    _give(ws)
    made = coi_as(USER, "checkpoint", "base", "--workspace", str(ws), env=env)
    assert made.returncode == 0, made.stderr
    for name in names:
        (ws / name).write_text("changed by the agent\n")
    before = picture(victim)
    racer = _racer(env, ws, "/workspace", "link-files", str(victim / "passwd"), str(len(names)))
    racers.append(racer)
    assert racer.ready(), racer.end()
    rolled = coi_as(USER, "rollback", "base", "--workspace", str(ws), env=env)
    # the racer answers each of the rollback's unlinks; its "done" (not "timeout") shows
    # it was racing through the whole rollback
    said = racer.end()
    assert "done" in said and "timeout" not in said, said
    assert picture(victim) == before, "coi wrote the agent's bytes into a file outside"
    assert rolled.returncode == 0, rolled.stderr + said
    for name in names:
        assert not (ws / name).is_symlink() and (ws / name).read_text() == "original\n"
        assert (ws / name).stat().st_uid == pwd.getpwnam(USER).pw_uid


@pytest.mark.parametrize("owner", ["root", USER])
def test_a_non_root_git_rollback_never_deletes_through_a_folder_swapped_for_a_link(
    place: dict[str, object], racers: list[Racer], owner: str
) -> None:
    top, env = Path(str(place["top"])), dict(place["env"])  # type: ignore[call-overload]
    victim = _victim(top, owner)
    ws = top / "repo"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "keep").write_text("tracked\n")
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "commit", "-qm", "base")
    _give(ws)
    made = coi_as(USER, "checkpoint", "base", "--workspace", str(ws), env=env)
    assert made.returncode == 0, made.stderr
    for i in range(5):
        (ws / "sub" / f"n{i}").write_text("new\n")
    _give(ws)
    before = picture(victim)
    racer = _racer(env, ws, "/workspace/sub", "swap-dir", str(victim), "1")
    racers.append(racer)
    assert racer.ready(), racer.end()
    rolled = coi_as(USER, "rollback", "base", "--workspace", str(ws), env=env)
    said = racer.end()
    assert picture(victim) == before, "coi deleted files of a folder outside"
    assert rolled.returncode == 0, rolled.stderr + said
    moved = ws / "sub.moved" if (ws / "sub").is_symlink() else ws / "sub"
    assert sorted(os.listdir(moved)) == ["keep"]  # the rollback itself was done


def test_non_root_checkpoints_never_write_through_refs_the_agent_linked(
    place: dict[str, object],
) -> None:
    top, env = Path(str(place["top"])), dict(place["env"])  # type: ignore[call-overload]
    # the twin counts the sessions' automatic checkpoints: turn them on for this user
    Path(env["COI_CONFIG"]).write_text(
        Path(env["COI_CONFIG"]).read_text().replace("auto = false", "auto = true")
    )
    victim = _victim(top, USER)  # the user's own folder: writable by a non-root coi
    empty = victim / "refs"
    empty.mkdir()
    _give(empty)
    ws = top / "repo"
    ws.mkdir()
    (ws / "README").write_text("x\n")
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "commit", "-qm", "base")
    _give(ws)
    link = f"rm -rf .git/refs/coi && ln -s {empty} .git/refs/coi"
    plant = coi_as(USER, "run", "--workspace", str(ws), "--", "sh", "-c", link, env=env)
    assert plant.returncode == 0, plant.stderr
    assert (ws / ".git" / "refs" / "coi").is_symlink()
    again = coi_as(USER, "run", "--workspace", str(ws), "--", "true", env=env)
    assert again.returncode == 0, again.stderr
    made = coi_as(USER, "checkpoint", "by-hand", "--workspace", str(ws), env=env)
    assert made.returncode == 0, made.stderr
    assert os.listdir(empty) == [], "git created refs in a folder outside the workspace"
    listed = coi_as(USER, "checkpoint", "list", "--workspace", str(ws), "--format", "json", env=env)
    assert listed.stdout.count('"id"') >= 3, listed.stdout + listed.stderr


def _gateway() -> str:
    """coibr0's own address: DHCP, DNS and the host service live there."""
    done = subprocess.run(
        ["incus", "network", "get", "coibr0", "ipv4.address"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout.strip().split("/")[0]


def _probe(gateway: str, port: int) -> str:
    """What a session prints: `tcp:yes|no` for the host service, `dns:yes|no` for the
    bridge's resolver; then it waits (bounded) for the test's word to end."""
    tcp = f'exec 3<>/dev/tcp/{gateway}/{port}; read -t 2 line <&3; echo "$line"'
    return (
        f"if timeout 3 bash -c {shlex.quote(tcp)} 2>/dev/null | grep -q 'hello from host'; "
        "then echo tcp:yes; else echo tcp:no; fi; "
        f"if timeout 4 perl -e {shlex.quote(DNS_PROBE)} {gateway} $(hostname).incus; "
        "then echo dns:yes; else echo dns:no; fi; "
        "echo probed; for i in $(seq 120); do [ -e /workspace/end ] && exit 0; sleep 0.5; done"
    )


def _ours(project: str, prefix: str) -> list[str]:
    return [r for r in coi_rules(project) if r.startswith(f"coi:{project}/{prefix}")]


def _session(env: dict[str, str], ws: Path, mode: str, script: str) -> tuple[str, list[str]]:
    """A session of USER's in mode running script; its output, and coi's rules for the
    test's prefix while it ran (read once it has probed)."""
    proc = coi_as_popen(
        USER, "run", "--workspace", str(ws), "--network", mode, "--", "bash", "-c", script,
        env=env,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    out, rules = b"", []
    deadline = time.monotonic() + 180
    try:
        while b"probed\n" not in out and time.monotonic() < deadline and proc.poll() is None:
            got, _, _ = select.select([proc.stdout], [], [], 0.5)
            if got:
                out += os.read(proc.stdout.fileno(), 4096)
        rules = _ours(env["COI_INCUS_PROJECT"], env["COI_CONTAINER_PREFIX"])
        (ws / "end").touch()
        rest, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        (ws / "end").unlink(missing_ok=True)
    assert proc.returncode == 0, (out + rest).decode() + err.decode()
    return (out + rest).decode(), rules


def test_a_non_root_restricted_session_reaches_only_dns_on_the_host_and_leaves_no_rules(
    place: dict[str, object],
) -> None:
    top, env = Path(str(place["top"])), dict(place["env"])  # type: ignore[call-overload]
    ws = top / "ws"
    _as_user_mkdir(ws)
    gateway = _gateway()
    project, prefix = env["COI_INCUS_PROJECT"], env["COI_CONTAINER_PREFIX"]
    with host_service(gateway) as port:
        control, _ = _session(env, ws, "open", _probe(gateway, port))
        assert "tcp:yes" in control.split(), control  # the service serves an open session
        said, rules = _session(env, ws, "restricted", _probe(gateway, port))
    words = said.split()
    assert "tcp:no" in words and "dns:yes" in words, said
    assert rules, "the restricted session ran without coi's rules"
    # `coi run` returns once the container is frozen; its detached finisher stops and
    # deletes it, rules included: wait for that (bounded), then nothing of it is left
    for _ in range(120):
        if not _ours(project, prefix):
            break
        time.sleep(0.5)
    assert _ours(project, prefix) == [], "rules left after the session"
    # the egress log: the collector ran as the user and logged the blocked probe
    logs = Path(env["COI_HOME"]) / "logs"
    nets = [p for p in logs.iterdir() if p.name.startswith(f"net-{prefix}")]
    assert nets, sorted(p.name for p in logs.iterdir())
    uid = pwd.getpwnam(USER).pw_uid
    for path in logs.rglob("*"):
        assert path.lstat().st_uid == uid, f"{path} is not the user's"
    lines = [line for p in nets for line in p.read_text().splitlines()]
    assert any(gateway in line and str(port) in line for line in lines), lines[-20:]


CONNECT = (
    "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')"
)


def test_a_non_root_sessions_broker_is_unreachable_to_another_user(
    place: dict[str, object], upstream: Upstream
) -> None:
    top, env = Path(str(place["top"])), dict(place["env"])  # type: ignore[call-overload]
    ws = top / "ws"
    _as_user_mkdir(ws)
    ca = top / "ca.pem"  # the test CA, where the user can read it
    shutil.copyfile(upstream.ca, ca)
    _give(ca)
    Path(env["COI_CONFIG"]).write_text(
        f'[defaults]\nimage = "{IMAGE}"\n[checkpoints]\nauto = false\n'
        f'[tools.claude]\nbinary = "claude"\nupstreams = ["{upstream.url}"]\n'
        f'[credentials]\napi_key_env = "BROKER_TEST_KEY"\nca_file = "{ca}"\n'
    )
    env["BROKER_TEST_KEY"] = "sk-real-nonroot"
    started = coi_as(USER, "shell", "--background", "--tool", "claude", env=env, cwd=ws)
    assert started.returncode == 0, started.stderr
    name = re.search(r"^(\S+) keeps running", started.stderr, re.MULTILINE)
    assert name, started.stderr
    try:
        sock = Path(env["COI_HOME"]) / "run" / f"b-{name[1]}.sock"
        assert sock.exists(), sorted(os.listdir(sock.parent))
        assert sock.parent.stat().st_uid == pwd.getpwnam(USER).pw_uid
        assert sock.parent.stat().st_mode & 0o077 == 0
        own = coi_as(USER, "-c", CONNECT, str(sock), command=("python3",))
        assert "connected" in own.stdout, own.stdout + own.stderr  # the control
        other = coi_as(OTHER, "-c", CONNECT, str(sock), command=("python3",))
        assert "connected" not in other.stdout, other.stdout
        assert "PermissionError" in other.stderr, other.stderr
        assert upstream.seen.requests == []
        killed = coi_as(USER, "kill", name[1], env=env)
        assert killed.returncode == 0, killed.stderr
        for _ in range(60):  # the broker leaves with its session (bounded wait)
            if not sock.exists():
                break
            time.sleep(0.5)
        assert not sock.exists(), "the broker outlived its session"
    finally:
        coi_as(USER, "kill", name[1], env=env)


def test_a_non_root_worktree_never_appends_through_a_reflog_the_agent_linked(
    place: dict[str, object],
) -> None:
    top, env = Path(str(place["top"])), dict(place["env"])  # type: ignore[call-overload]
    victim = _victim(top, USER)  # the user's own file: a non-root git could append to it
    before = picture(victim)
    ws = top / "repo"
    ws.mkdir()
    (ws / "README").write_text("x\n")
    git(ws, "init", "-q")
    git(ws, "add", ".")
    git(ws, "commit", "-qm", "base")
    _give(ws)
    log = ".git/logs/refs/heads/coi"
    link = f"mkdir -p {log} && ln -s {victim / 'passwd'} {log}/1"
    plant = coi_as(USER, "run", "--workspace", str(ws), "--", "sh", "-c", link, env=env)
    assert plant.returncode == 0, plant.stderr
    run = coi_as(USER, "run", "--workspace", str(ws), "--worktree", "--", "true", env=env)
    assert picture(victim) == before, "git appended to a file outside through the reflog link"
    assert run.returncode == 2 and "symbolic link" in run.stderr, run.stderr
    assert run.stderr.strip().count("\n") == 0, run.stderr

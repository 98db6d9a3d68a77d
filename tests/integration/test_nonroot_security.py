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
  `.git/refs/coi` planted as a link gets nothing written through it.
"""

from __future__ import annotations

import os
import pwd
import select
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import coi_as, coi_as_popen
from tests.integration.test_nonroot import USER, _as_user_mkdir, _ready
from tests.integration.test_nonroot import place as place  # the fixture, shared
from tests.integration.test_security_setid import CODE_ATTACK, ROOT_ATTACK, ROOT_LABELS, _quote
from tests.integration.test_security_workspace import RACER, git, picture

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


class _Racer:
    """A `coi run` of USER's whose container answers coi's unlinks in a folder."""

    def __init__(self, env: dict[str, str], ws: Path, *racer: str) -> None:
        argv = ["run", "--workspace", str(ws), "--", "perl", "-e", RACER, *racer]
        self.proc = coi_as_popen(USER, *argv, env=env)
        self.out = b""

    def ready(self, timeout: float = 180) -> bool:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"ready\n" not in self.out and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.out += self.proc.stdout.read()
                break
            got, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if got:
                self.out += os.read(self.proc.stdout.fileno(), 4096)
        return b"ready\n" in self.out

    def end(self) -> str:
        out, err = self.proc.communicate(timeout=240)
        return (self.out + out).decode() + err.decode()


@pytest.fixture
def racers() -> Iterator[list[_Racer]]:
    found: list[_Racer] = []
    yield found
    for racer in found:
        if racer.proc.poll() is None:
            racer.proc.kill()
            racer.proc.wait(timeout=60)


@pytest.mark.parametrize("owner", ["root", USER])
def test_a_non_root_copy_rollback_never_writes_through_a_link_the_agent_races_in(
    place: dict[str, object], racers: list[_Racer], owner: str
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
    racer = _Racer(env, ws, "/workspace", "link-files", str(victim / "passwd"), str(len(names)))
    racers.append(racer)
    assert racer.ready(), racer.end()
    rolled = coi_as(USER, "rollback", "base", "--workspace", str(ws), env=env)
    # the racer counts the links it made; unlinks of our own let it finish now, and its
    # "done" (not "timeout") shows it was racing through the whole rollback
    for i in range(len(names)):
        if racer.proc.poll() is not None:
            break
        end = ws / f"zz-end-{i}"
        end.write_text("")
        end.unlink()
        time.sleep(0.2)  # a pace for the racer, not a measurement
    said = racer.end()
    assert "done" in said and "timeout" not in said, said
    assert picture(victim) == before, "coi wrote the agent's bytes into a file outside"
    assert rolled.returncode == 0, rolled.stderr + said
    for name in names:
        assert not (ws / name).is_symlink() and (ws / name).read_text() == "original\n"
        assert (ws / name).stat().st_uid == pwd.getpwnam(USER).pw_uid


@pytest.mark.parametrize("owner", ["root", USER])
def test_a_non_root_git_rollback_never_deletes_through_a_folder_swapped_for_a_link(
    place: dict[str, object], racers: list[_Racer], owner: str
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
    racer = _Racer(env, ws, "/workspace/sub", "swap-dir", str(victim), "1")
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

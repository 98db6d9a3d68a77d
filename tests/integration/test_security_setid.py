"""Issue 10, item 1, played as the attacker through `coi run`: no host-root file and no
set-id file reaches the workspace on the host, for workspace owners 1000, 1234 and 0;
Docker inside still runs a container.

The attack runs as root inside (`sudo`) and as `code`; each attempt prints whether the
kernel refused it, then the host checks every file's owner and mode.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from coi.incus.adapter import Incus
from coi.launch import executor
from tests.integration.helpers import coi, own_prefix, user_config_path

IMAGE = os.environ.get("COI_TEST_IMAGE", "coi")  # python3 and docker.io, as sessions have

ROOT_ATTACK = r"""
try() {
    label=$1; shift
    if "$@" 2>/dev/null; then echo "made:$label"; else echo "refused:$label"; fi
}
cp /bin/dash rs && chown 0:0 rs && try chmod4755 chmod 4755 rs
cp /bin/dash gs && try chmod2755 chmod 2755 gs
try cp-p cp -p /usr/bin/sudo sudo-copy
try install install -m 4755 /bin/dash installed
try open-creat python3 -c 'import os; os.close(os.open("opened", os.O_CREAT | os.O_WRONLY, 0o4755))'
try mknod python3 -c 'import os; os.mknod("made", 0o100000 | 0o4755)'
try mknod-fifo mknod -m 4755 fifo p
touch raw && try fchmodat2 python3 -c '
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
sys.exit(libc.syscall(452, -100, b"raw", 0o4755, 0) != 0)'
mkdir -p sub/deeper && cp /bin/dash sub/deeper/rs && chown 0:0 sub/deeper/rs
try deep chmod 4755 sub/deeper/rs
"""
CODE_ATTACK = r"""
cp /bin/dash mine
if chmod u+s mine 2>/dev/null; then echo made:code-suid; else echo refused:code-suid; fi
if chmod g+s mine 2>/dev/null; then echo made:code-sgid; else echo refused:code-sgid; fi
sudo -n true && echo sudo-works
"""
ROOT_LABELS = [
    *("chmod4755", "chmod2755", "cp-p", "install", "open-creat"),
    *("mknod", "mknod-fifo", "fchmodat2", "deep"),
]


@pytest.fixture
def env(incus: Incus, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A user config naming the image and the plain shell tool; a prefix of our own."""
    if incus.image_alias(IMAGE) is None:
        pytest.skip(f"no {IMAGE!r} image: build it with `coi build` or set COI_TEST_IMAGE")
    if os.geteuid() != 0:
        pytest.skip("workspaces owned by other uids need root to chown")
    config = user_config_path()
    config.write_text(f'[defaults]\nimage = "{IMAGE}"\n[tool]\nname = "shell"\n')
    prefix = own_prefix(monkeypatch, "x")
    return {"COI_CONTAINER_PREFIX": prefix}


def _workspace(tmp_path: Path, owner: int) -> Path:
    workspace = tmp_path / f"ws-{owner}"
    workspace.mkdir()
    os.chown(workspace, owner, owner)
    # root's folder is writable by all, so the attacker has something to write into
    workspace.chmod(0o777 if owner == 0 else 0o755)
    return workspace


def _host_view(workspace: Path) -> dict[str, os.stat_result]:
    """Every entry under the workspace (the folder itself left out), never following links."""
    found = {}
    for folder, dirs, files in os.walk(workspace):
        for entry in dirs + files:
            path = Path(folder) / entry
            found[str(path.relative_to(workspace))] = path.lstat()
    return found


@pytest.mark.parametrize("owner", [1000, 1234, 0])
def test_no_host_root_and_no_setid_file_after_the_attack(
    env: dict[str, str], tmp_path: Path, owner: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = _workspace(tmp_path, owner)
    monkeypatch.chdir(workspace)
    script = f"sudo sh -c {_quote(ROOT_ATTACK)}\n{CODE_ATTACK}"
    done = coi("run", "--network", "open", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stdout + done.stderr
    view = _host_view(workspace)
    assert {"rs", "gs", "mine", "sub/deeper/rs"} <= set(view), sorted(view)
    for rel, st in view.items():
        assert st.st_uid != 0 and st.st_gid != 0, f"{rel} is owned by host root"
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), f"{rel}: {oct(st.st_mode)}"
    if owner:
        assert view["mine"].st_uid == owner  # `code` writes as the workspace owner
    assert view["rs"].st_uid >= 100000  # container root writes as an unprivileged id
    said = done.stdout.split()
    # every attempt was refused inside (not merely cleared afterwards), and sudo still works
    assert [f"refused:{label}" for label in ROOT_LABELS] == [
        w for w in said if w.split(":")[0] in ("made", "refused") and "code" not in w
    ], done.stdout
    assert {"refused:code-suid", "refused:code-sgid", "sudo-works"} <= set(said), done.stdout
    assert "cleared the set-id bits" not in done.stderr  # nothing was left to clear
    if owner == 0:
        assert "owned by root" in done.stderr and done.stderr.count("chown") == 1


def test_a_setid_file_left_in_the_workspace_is_cleared_and_reported(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: whatever got there (an older container, another route), the end of
    the session clears it and names it."""
    workspace = _workspace(tmp_path, 1000)
    left = workspace / "nested" / "rs"
    left.parent.mkdir()
    left.write_bytes(Path("/bin/dash").read_bytes())
    os.chown(left, 1000, 1000)
    left.chmod(0o6755)
    monkeypatch.chdir(workspace)
    done = coi("run", "--network", "open", "--", "true")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(left.stat().st_mode) == 0o755
    assert f"cleared the set-id bits of {left} (mode was 6755)" in done.stderr


OVERLAY = r"""
mkdir -p /workspace/up /workspace/work /mnt/o
mount -t overlay overlay -o lowerdir=/usr/bin,upperdir=/workspace/up,workdir=/workspace/work \
    /mnt/o || { echo no-overlay; exit 0; }
touch /mnt/o/sudo && stat -c copied-up:%a /workspace/up/sudo
umount /mnt/o
"""


def test_an_overlay_copy_up_is_cleared_when_a_persistent_session_stops(
    env: dict[str, str], incus: Incus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route seccomp cannot see: overlayfs copies a set-uid file up with the kernel's
    own calls. It lives until the session ends; then coi clears it and says so (here on
    the persistent path, where the container is stopped and kept)."""
    workspace = _workspace(tmp_path, 1000)
    monkeypatch.chdir(workspace)
    before = set(incus.instance_names())
    try:
        done = coi("run", "--persistent", "--network", "open", "--", "sudo", "sh", "-c", OVERLAY)
    finally:
        for name in set(incus.instance_names()) - before:
            executor.teardown(incus, name)
    assert done.returncode == 0, done.stdout + done.stderr
    if "no-overlay" in done.stdout:
        pytest.skip("overlayfs cannot be mounted inside a container on this kernel")
    assert "copied-up:4755" in done.stdout  # the bit was there while the session ran
    copied = workspace / "up" / "sudo"
    assert stat.S_IMODE(copied.stat().st_mode) == 0o755 and copied.stat().st_uid != 0
    assert f"cleared the set-id bits of {copied} (mode was 4755)" in done.stderr


DOCKER = r"""
set -e
rm -rf /tmp/r && mkdir -p /tmp/r
for f in /bin/dash $(ldd /bin/dash | grep -o '/[^ ]*'); do cp --parents -L "$f" /tmp/r; done
tar -C /tmp/r -c . | docker import - coitest-dash:1 >/dev/null
docker run --rm coitest-dash:1 /bin/dash -c 'echo hello-from-docker'
mkdir -p /tmp/s/bin && cp /tmp/r/bin/dash /tmp/s/bin/dash
tar -C /tmp/s -c --mode=4755 bin | docker import - coitest-setid:1 2>&1 || echo setid-layer-refused
"""


def test_docker_inside_still_runs_a_container(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker runs under the set-id policy; a layer with a set-uid file is refused."""
    monkeypatch.chdir(_workspace(tmp_path, 1000))
    done = coi("run", "--network", "open", "--", "sh", "-c", DOCKER)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hello-from-docker" in done.stdout
    assert "setid-layer-refused" in done.stdout and "operation not permitted" in done.stdout


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"

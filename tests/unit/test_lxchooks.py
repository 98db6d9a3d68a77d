"""coi's lxc template folder (coi/host/lxchooks.py): lxcfs's post-stop sleep kept to
reboots, every other line of the host's files as it was."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.host import lxchooks
from coi.host.check import OK, WARN

DEBIAN = (
    "lxc.hook.mount = /usr/share/lxcfs/lxc.mount.hook\n"
    "lxc.hook.post-stop = /usr/share/lxcfs/lxc.reboot.hook\n"
)
OTHER_LINES = st.lists(
    st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=60).filter(
        lambda line: lxchooks.LXCFS_HOOK not in line
    ),
    max_size=8,
)


def test_debians_sleep_is_replaced_and_the_mount_hook_kept() -> None:
    done = lxchooks.rewrite(DEBIAN, "/w")
    assert done == "lxc.hook.mount = /usr/share/lxcfs/lxc.mount.hook\nlxc.hook.post-stop = /w\n"
    assert lxchooks.sleeps({"00-lxcfs.conf": DEBIAN})
    assert not lxchooks.sleeps({"00-lxcfs.conf": done})


@given(OTHER_LINES)
def test_every_other_line_is_left_as_it_was(lines: list[str]) -> None:
    text = "\n".join(lines)
    assert lxchooks.rewrite(text, "/w") == text
    assert lxchooks.rewrite(text + "\n" + DEBIAN, "/w").startswith(text + "\n")


def _host(tmp_path: Path, text: str = DEBIAN) -> tuple[Path, Path]:
    base, ours = tmp_path / "host", tmp_path / "ours"
    (base / "common.conf.d").mkdir(parents=True)
    (base / "common.conf.d" / "00-lxcfs.conf").write_text(text)
    return base, ours


@pytest.mark.skipif(os.geteuid() != 0, reason="the folder is root's: current() checks the owner")
def test_install_makes_it_current_and_a_stray_file_makes_it_stale(tmp_path: Path) -> None:
    base, ours = _host(tmp_path)
    assert not lxchooks.current(base, ours)
    lxchooks.install(base, ours)
    assert lxchooks.current(base, ours)
    hook = ours / lxchooks.REBOOT_ONLY
    conf = (ours / "common.conf.d" / "00-lxcfs.conf").read_text()
    assert f"lxc.hook.post-stop = {hook}" in conf
    (ours / "common.conf.d" / "99-planted.conf").write_text("lxc.hook.start = /tmp/x\n")
    assert not lxchooks.current(base, ours)
    lxchooks.install(base, ours)  # what it did not write goes
    assert sorted(os.listdir(ours / "common.conf.d")) == ["00-lxcfs.conf"]


def test_a_host_without_the_sleep_needs_nothing(tmp_path: Path) -> None:
    base, ours = _host(tmp_path, "lxc.hook.mount = /x\n")
    assert lxchooks.current(base, ours)


@pytest.mark.parametrize(("target", "runs"), [("stop", False), ("reboot", True)])
def test_the_wrapper_runs_lxcfs_hook_on_reboot_only(tmp_path: Path, target: str,
                                                    runs: bool) -> None:  # fmt: skip
    marker = tmp_path / "ran"
    script = lxchooks.WRAPPER.replace(lxchooks.LXCFS_HOOK, f"touch {marker}; true")
    done = subprocess.run(["sh", "-c", script], env={"LXC_TARGET": target}, check=False)
    assert done.returncode == 0
    assert marker.exists() is runs


def test_the_daemons_environment_is_read_from_proc(tmp_path: Path) -> None:
    ours = Path("/usr/local/share/coi/lxc")
    for pid, env in ((1, f"A=b\0{lxchooks.ENV}={ours}\0"), (2, "A=b\0")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "environ").write_bytes(env.encode())
    assert lxchooks.daemon_uses_ours([1], ours, tmp_path)
    assert not lxchooks.daemon_uses_ours([1, 2], ours, tmp_path)
    assert not lxchooks.daemon_uses_ours([], ours, tmp_path)
    assert not lxchooks.daemon_uses_ours([3], ours, tmp_path)


@pytest.mark.parametrize(
    ("sleeps", "ours", "systemd", "status"),
    [(False, False, False, OK), (True, True, False, OK), (True, False, False, WARN),
     (True, False, True, WARN)],
)  # fmt: skip
def test_doctor_says_when_stops_sleep(monkeypatch: pytest.MonkeyPatch, sleeps: bool, ours: bool,
                                      systemd: bool, status: str) -> None:  # fmt: skip
    from coi.host import daemon, doctor

    monkeypatch.setattr(lxchooks, "sleeps", lambda files: sleeps)
    monkeypatch.setattr(lxchooks, "daemon_uses_ours", lambda pids: ours)
    monkeypatch.setattr(lxchooks, "current", lambda: True)
    monkeypatch.setattr(daemon, "daemon_pids", lambda: [1])
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os.path, "isdir", lambda path: systemd)
    found = doctor.check_stop_hook()
    assert found.status == status
    if status == WARN:
        assert ("coi setup" in (found.fix or "")) is not systemd

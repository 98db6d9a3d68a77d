"""The freezer shortcut (coi/incus/freezer.py): which cgroup it touches, and that it
touches nothing that is not the container's own."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from coi.incus import freezer

NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)


def test_cgroup_names_follow_liblxc() -> None:
    assert freezer.cgroup_name("default", "coi-ab-1") == "lxc.payload.coi-ab-1"
    assert freezer.cgroup_name("coitest", "c") == "lxc.payload.coitest_c"


@given(project=NAMES, name=NAMES, other=NAMES, depth=st.lists(NAMES, max_size=3))
def test_only_the_expected_top_cgroup_is_taken(project: str, name: str, other: str,
                                               depth: list[str]) -> None:  # fmt: skip
    expected = freezer.cgroup_name(project, name)
    inner = "/".join(["", expected, *depth])
    lines = f"12:pids:/x\n4:freezer:{inner}\n1:name=systemd:/y\n"
    assert freezer.freezer_of(lines, expected) == expected  # init moved deeper: still its top
    stranger = freezer.cgroup_name(project, other)
    if stranger != expected:
        assert freezer.freezer_of(lines, stranger) is None


def test_no_freezer_line_no_cgroup() -> None:
    assert freezer.freezer_of("0::/lxc.payload.c\n", "lxc.payload.c") is None  # cgroup v2
    assert freezer.freezer_of("4:freezer:/system.slice\n", "lxc.payload.c") is None


def _host(tmp_path: Path, pid: int, cgroup: str, top: str) -> tuple[Path, Path, Path]:
    proc, root = tmp_path / "proc", tmp_path / "freezer"
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(f"4:freezer:{cgroup}\n")
    (root / top).mkdir(parents=True)
    state = root / top / "freezer.state"
    state.write_text("THAWED\n")
    return proc, root, state


def test_the_containers_own_freezer_is_written(tmp_path: Path) -> None:
    proc, root, state = _host(tmp_path, 42, "/lxc.payload.c1/inner", "lxc.payload.c1")
    assert freezer.prefreeze(42, "default", "c1", root, proc)
    assert state.read_text().startswith("FROZEN")
    freezer.thaw(42, "default", "c1", root, proc)
    assert state.read_text().startswith("THAWED")


def test_another_containers_freezer_is_left_alone(tmp_path: Path) -> None:
    # a pid that is not this container's init (another pid namespace, a reused pid)
    proc, root, state = _host(tmp_path, 42, "/lxc.payload.c2", "lxc.payload.c2")
    assert not freezer.prefreeze(42, "default", "c1", root, proc)
    freezer.thaw(42, "default", "c1", root, proc)
    assert state.read_text() == "THAWED\n"


def test_a_link_in_place_of_the_state_file_is_not_followed(tmp_path: Path) -> None:
    proc, root, state = _host(tmp_path, 42, "/lxc.payload.c1", "lxc.payload.c1")
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    state.unlink()
    state.symlink_to(target)
    assert not freezer.prefreeze(42, "default", "c1", root, proc)
    assert target.read_text() == "keep"


def test_missing_process_or_freezer_is_no_shortcut(tmp_path: Path) -> None:
    assert not freezer.prefreeze(7, "default", "c1", tmp_path / "none", tmp_path / "proc")
    assert not freezer.prefreeze(0, "default", "c1")

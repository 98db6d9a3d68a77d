"""coi/core/dropped.py: work on a user's tree runs as that user, with no groups and no
capabilities, and reaches its folders at their own paths even below folders it may not
enter."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.core import dropped
from coi.core.errors import CoiError, UsageError

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="dropping rights needs root")
OWNER = (1234, 1234)


def _who() -> tuple[int, int, list[int], str]:
    status = Path("/proc/self/status").read_text()
    caps = next(line for line in status.splitlines() if line.startswith("CapEff"))
    return os.geteuid(), os.getegid(), os.getgroups(), caps.split()[1]


@root_only
def test_the_step_runs_as_the_owner_with_nothing_of_root(tmp_path: Path) -> None:
    hidden = tmp_path / "root-only"
    hidden.mkdir(mode=0o700)
    place = hidden / "deep" / "ws"
    place.mkdir(parents=True)
    os.chown(place, *OWNER)

    def step() -> tuple[tuple[int, int, list[int], str], list[str]]:
        (place / "made").write_text("x")
        return _who(), sorted(os.listdir(place))

    (uid, gid, groups, caps), listed = dropped.call(OWNER, step, [place])
    assert (uid, gid, groups, caps) == (1234, 1234, [], "0000000000000000")
    assert listed == ["made"]
    assert (place / "made").stat().st_uid == 1234  # written as the owner, not chowned
    assert stat.S_IMODE(hidden.stat().st_mode) == 0o700  # nothing changed on the way


@root_only
def test_the_step_cannot_touch_what_the_owner_cannot(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's\n")
    victim.chmod(0o644)

    def step() -> None:
        victim.write_text("owned\n")

    with pytest.raises(CoiError, match="Permission denied"):
        dropped.call(OWNER, step, [tmp_path])
    assert victim.read_text() == "root's\n"


@root_only
def test_errors_come_back_as_coi_errors_of_their_kind(tmp_path: Path) -> None:
    def step() -> None:
        raise UsageError("say this")

    with pytest.raises(UsageError, match="say this"):
        dropped.call(OWNER, step, [tmp_path])


def test_without_an_owner_to_become_the_step_runs_here() -> None:
    assert dropped.call(None, os.getpid, []) == os.getpid()


modes = st.integers(min_value=0, max_value=0o777)
ids = st.sampled_from([0, 1234, 99])


@given(modes, ids, ids, ids, ids)
def test_can_enter_follows_the_permission_bits(mode: int, uid: int, gid: int, me: int,
                                               mine: int) -> None:  # fmt: skip
    info = os.stat_result((stat.S_IFDIR | mode, 0, 0, 2, uid, gid, 0, 0, 0, 0))
    if me == uid:
        want = bool(mode & 0o100)
    elif mine == gid:
        want = bool(mode & 0o010)
    else:
        want = bool(mode & 0o001)
    assert dropped.can_enter(info, (me, mine)) is want


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4), st.sets(
    st.sampled_from(["/a", "/a/b", "/b", "/a/b/c", "/c"])))  # fmt: skip
def test_blocked_names_the_highest_folder_the_owner_cannot_enter(
    parts: list[str], closed: set[str]
) -> None:
    place = Path("/", *parts)

    def stat_of(path: Path) -> os.stat_result:
        mode = 0o700 if str(path) in closed else 0o755
        return os.stat_result((stat.S_IFDIR | mode, 0, 0, 2, 0, 0, 0, 0, 0, 0))

    found = dropped.blocked([place], stat_of, OWNER)
    on_way = [p for p in [*reversed(place.parents), place][1:] if str(p) in closed]
    assert found == on_way[:1]

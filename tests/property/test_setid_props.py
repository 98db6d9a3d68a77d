"""Properties of the workspace mapping, the set-id syscall policy and the host-side clear."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from coi.boundary import seccomp, setid
from coi.launch.spec import LaunchSpec, idmap_for, instance_config
from tests.strategies import container_uids, file_modes, host_uids, workspace_paths

RULE = re.compile(r"^(\w+) errno (\d+) \[(\d+),(\d+),SCMP_CMP_MASKED_EQ,(\d+)\]$")


def refused(name: str, args: dict[int, int]) -> int | None:
    """The errno the policy's argument rules give this call, as libseccomp would decide."""
    for line in seccomp.rules():
        match = RULE.match(line)
        if match and match[1] == name:
            index, value, mask = int(match[3]), int(match[4]), int(match[5])
            if args.get(index, 0) & mask == value:
                return int(match[2])
    return None


@given(host_uids, container_uids)
def test_host_root_is_never_mapped_and_every_other_owner_is(uid: int, inside: int) -> None:
    mapping = idmap_for(uid, inside)
    if uid == 0:
        assert mapping is None
    else:
        assert mapping == f"both {uid} {inside}"


@given(host_uids, container_uids, workspace_paths)
def test_no_host_folder_is_ever_shifted(uid: int, inside: int, path: str) -> None:
    spec = LaunchSpec(
        name="n",
        image="coi",
        workspace=Path(path),
        workspace_uid=uid,
        container_uid=inside,
        disks={"storage": (Path(path), "/storage")},
    )
    body = instance_config(spec)
    assert not any("shift" in device for device in body["devices"].values())
    assert body["config"]["raw.seccomp"] == seccomp.policy()
    assert ("raw.idmap" in body["config"]) == (uid != 0)


@given(st.sampled_from(seccomp.MODE_ARGUMENTS), file_modes)
def test_a_mode_is_refused_exactly_when_it_carries_a_setid_bit(
    call: tuple[str, int], mode: int
) -> None:
    name, index = call
    errno = refused(name, {index: mode})
    assert (errno == seccomp.EPERM) == bool(mode & 0o6000)
    assert errno in (None, seccomp.EPERM)


@given(file_modes)
def test_other_arguments_never_trigger_a_refusal(value: int) -> None:
    """A mode rule looks at the mode argument only (not the path, fd or flags)."""
    for name, index in seccomp.MODE_ARGUMENTS:
        others = {i: value for i in range(6) if i != index}
        assert refused(name, others) is None


@given(file_modes)
def test_cleared_mode_keeps_the_permissions_and_drops_setid(mode: int) -> None:
    cleared = setid.cleared_mode(mode)
    assert not cleared & setid.SETID
    assert cleared | (stat.S_IMODE(mode) & setid.SETID) == stat.S_IMODE(mode)
    assert not setid.carries_setid(stat.S_IFREG | cleared)


@given(st.lists(workspace_paths, max_size=6))
def test_outermost_covers_every_root_once(paths: list[str]) -> None:
    kept = setid.outermost(Path(p) for p in paths)
    for path in (Path(os.path.abspath(p)) for p in paths):
        assert any(path == k or k in path.parents for k in kept)
    for a in kept:
        assert not any(b != a and b in a.parents for b in kept)

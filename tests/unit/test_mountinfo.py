"""The mount table parser: the kernel's octal escapes come back as the characters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coi.core import mountinfo

_names = st.text(st.sampled_from("ab \t\n\\-"), min_size=1, max_size=8)


def _escape(path: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


@given(st.lists(_names, min_size=1, max_size=4))
def test_points_read_back_escaped_names(parts: list[str]) -> None:
    path = "/run/" + "/".join(parts)
    line = f"36 35 0:32 / {_escape(path)} rw,relatime shared:1 - tmpfs tmpfs rw"
    assert mountinfo.points(line) == [path]
    assert mountinfo.below("/run", line) == [path]
    assert mountinfo.below(path, line) == []  # root itself is not below root


def test_this_process_has_a_root_mount() -> None:
    assert "/" in mountinfo.points()

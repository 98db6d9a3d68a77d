"""store._members lists what os.walk and pathlib listed, in the same order, for any tree
of folders, files and links (it reads folder entries instead, for speed), after the
folders above a nested state folder."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from coi.sessions import store

NAMES = st.text(alphabet="abcXY-_.0", min_size=1, max_size=4).filter(lambda n: n not in (".", ".."))
TREES = st.recursive(
    st.sampled_from(["file", "link", "dirlink"]),
    lambda kids: st.dictionaries(NAMES, kids, max_size=4),
    max_leaves=25,
)


def _reference(folder: Path, state_dir: str) -> Iterator[str]:
    if "/" in state_dir.strip("/"):
        yield state_dir.split("/")[0]  # "a/b": its parent "a" first
    for top, dirs, files in os.walk(folder / state_dir):
        here = Path(top)
        yield str(here.relative_to(folder))
        dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink())
        for name in sorted(files):
            if stat.S_ISREG(os.lstat(here / name).st_mode):
                yield str((here / name).relative_to(folder))


def _make(at: Path, tree: object) -> None:
    at.mkdir()
    assert isinstance(tree, dict)
    for name, kid in tree.items():
        if kid == "file":
            (at / name).write_text(name)
        elif kid == "link":
            (at / name).symlink_to("/etc/passwd")
        elif kid == "dirlink":
            (at / name).symlink_to(at, target_is_directory=True)
        else:
            _make(at / name, kid)


@given(st.dictionaries(NAMES, TREES, max_size=5), st.sampled_from([".state", "a/b", "a/b/"]))
def test_members_are_the_walks_in_its_order(tree: dict[str, object], state_dir: str) -> None:
    with tempfile.TemporaryDirectory() as where:
        folder = Path(where)
        top = folder / state_dir
        top.parent.mkdir(parents=True, exist_ok=True)
        _make(top, tree)
        assert list(store._members(folder, state_dir)) == list(_reference(folder, state_dir))

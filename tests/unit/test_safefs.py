"""coi/core/safefs.py: every operation reaches only what lies beneath its folder, and a link
on the way (or at the end) is refused or replaced, never followed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from coi.core import safefs


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """(fd of the tree, the tree, a victim folder outside it with one file)."""
    root, victim = tmp_path / "tree", tmp_path / "victim"
    root.mkdir()
    victim.mkdir()
    (victim / "passwd").write_text("root:x:0:0\n")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    yield fd, root, victim
    os.close(fd)


def untouched(victim: Path) -> bool:
    return sorted(os.listdir(victim)) == ["passwd"] and (
        (victim / "passwd").read_text() == "root:x:0:0\n"
    )


@pytest.mark.parametrize("fallback", [False, True])
def test_a_link_on_the_way_is_refused(tree: tuple[int, Path, Path], fallback: bool,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    fd, root, victim = tree
    if fallback:  # the O_NOFOLLOW walk, as on a kernel without openat2
        monkeypatch.setattr(safefs, "_openat2_ok", False)
    (root / "sub").symlink_to(victim)
    for flags in (os.O_PATH, os.O_RDONLY, os.O_RDONLY | os.O_DIRECTORY):
        with pytest.raises(safefs.Escape):
            os.close(safefs.open_beneath(fd, "sub/passwd", flags))
    with pytest.raises(safefs.Escape):
        os.close(safefs.open_beneath(fd, "sub", os.O_PATH))
    with pytest.raises(ValueError):
        safefs.open_beneath(fd, "../victim/passwd")
    with pytest.raises(safefs.Escape):
        safefs.replace_file(fd, "sub/passwd", b"evil\n", 0o644)
    with pytest.raises(safefs.Escape):
        safefs.makedirs(fd, "sub/new")
    assert untouched(victim)


def test_replacing_a_link_replaces_the_link_not_its_target(tree: tuple[int, Path, Path]) -> None:
    fd, root, victim = tree
    (root / "f").symlink_to(victim / "passwd")
    safefs.replace_file(fd, "f", b"mine\n", 0o4755)
    assert (root / "f").read_text() == "mine\n" and not (root / "f").is_symlink()
    assert stat.S_IMODE((root / "f").stat().st_mode) == 0o755  # no set-id bit
    (root / "d").symlink_to(victim)
    safefs.replace_link(fd, "d", "elsewhere")
    assert os.readlink(root / "d") == "elsewhere"
    assert untouched(victim)


def test_remove_takes_the_link_never_what_it_points_to(tree: tuple[int, Path, Path]) -> None:
    fd, root, victim = tree
    (root / "dir").mkdir()
    (root / "dir" / "inner").symlink_to(victim)
    (root / "top").symlink_to(victim)
    assert safefs.remove(fd, "top")
    assert safefs.remove(fd, "dir")
    assert not safefs.remove(fd, "dir")
    assert os.listdir(root) == [] and untouched(victim)


def test_copy_tree_copies_links_as_links_and_skips(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_text("x")
    (src / "a" / "skipme").write_text("no")
    (src / "link").symlink_to("/etc/passwd")
    (src / "exe").write_text("#!/bin/sh\n")
    (src / "exe").chmod(0o4755)
    os.mkfifo(src / "fifo")
    dst.mkdir()
    with _fd(src) as s, _fd(dst) as d:
        safefs.copy_tree(s, d, frozenset({"a/skipme"}))
    assert (dst / "a" / "b" / "f").read_text() == "x"
    assert not (dst / "a" / "skipme").exists() and not (dst / "fifo").exists()
    assert os.readlink(dst / "link") == "/etc/passwd"
    assert stat.S_IMODE((dst / "exe").stat().st_mode) == 0o755


def test_a_plain_copy_past_its_budget_stops(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "big").write_bytes(b"x" * 5000)
    with _fd(src) as s, _fd(dst) as d:
        try:
            safefs.copy_tree(s, d, budget=[100])
        except safefs.OverBudget:
            return
    # a filesystem with reflinks copies it without spending the budget
    assert (dst / "big").stat().st_size == 5000


def test_walk_does_not_enter_links(tree: tuple[int, Path, Path]) -> None:
    fd, root, victim = tree
    (root / "d").mkdir()
    (root / "d" / "f").write_text("1")
    (root / "l").symlink_to(victim)
    seen = {rel for rel, _ in safefs.walk(fd)}
    assert seen == {"d", "d/f", "l"}


class _fd:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

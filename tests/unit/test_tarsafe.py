"""The explicit safe extraction: each refusal, and the guarantees tarfile's filter= gave."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from coi.core import tarsafe


def _tar(path: Path, entries: dict[str, bytes | None], mode: str = "w") -> Path:
    """A tar of entries (None: a folder) written to path with tarfile's mode."""
    with tarfile.open(path, mode) as archive:  # type: ignore[call-overload]
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_a_compressed_archive_is_refused(tmp_path: Path, mode: str) -> None:
    tar = _tar(tmp_path / "state.tar", {".tool/f": b"x" * 10_000}, mode)
    with pytest.raises(tarsafe.UnsafeArchive, match="not a plain tar"):
        tarsafe.extract(tar, tmp_path / "out")
    assert not (tmp_path / "out" / ".tool").exists()


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_a_sparse_member_is_refused(tmp_path: Path, fmt: str) -> None:
    # GNU tar's own sparse encodings: the 'S' type (gnu) and the pax GNU.sparse headers
    source = tmp_path / "src" / ".tool"
    source.mkdir(parents=True)
    (source / "ok").write_text("fine")
    with open(source / "holes", "wb") as handle:
        handle.truncate(64 * 1024**2)
        handle.write(b"data")
    tar = tmp_path / "state.tar"
    argv = ["tar", "--sparse", f"--format={fmt}", "-C", str(tmp_path / "src"), "-cf", str(tar)]
    subprocess.run([*argv, ".tool"], check=True)
    assert tar.stat().st_size < 1024**2  # the archive is small: the holes are not in it
    with pytest.raises(tarsafe.UnsafeArchive, match="sparse"):
        tarsafe.extract(tar, tmp_path / "out", top=".tool")
    assert not (tmp_path / "out" / ".tool" / "holes").exists()


def test_files_adding_up_past_the_limit_are_refused(tmp_path: Path) -> None:
    entries: dict[str, bytes | None] = {f".tool/f{i}": b"x" * 1000 for i in range(5)}
    tar = _tar(tmp_path / "state.tar", entries)
    tarsafe.extract(tar, tmp_path / "fits", limit=5000)
    assert len(list((tmp_path / "fits" / ".tool").iterdir())) == 5
    with pytest.raises(tarsafe.UnsafeArchive, match="more than 4999 bytes"):
        tarsafe.extract(tar, tmp_path / "over", limit=4999)


def test_a_link_in_the_destination_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    (dest / ".tool").mkdir(parents=True)
    os.symlink(outside, dest / ".tool" / "sub")
    os.symlink(outside / "target", dest / ".tool" / "file")
    folder = _tar(tmp_path / "a.tar", {".tool/sub/planted": b"x"})
    with pytest.raises(tarsafe.UnsafeArchive, match="in the way"):
        tarsafe.extract(folder, dest)
    single = _tar(tmp_path / "b.tar", {".tool/file": b"x"})
    with pytest.raises(tarsafe.UnsafeArchive, match="in the way"):
        tarsafe.extract(single, dest)
    assert list(outside.iterdir()) == []


def test_an_older_regular_file_is_replaced_and_neighbours_kept(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / ".tool").mkdir(parents=True)
    (dest / ".tool" / "f").write_text("old")
    (dest / ".tool" / "keep").write_text("mine")
    tarsafe.extract(_tar(tmp_path / "a.tar", {".tool/f": b"new"}), dest)
    assert (dest / ".tool" / "f").read_text() == "new"
    assert (dest / ".tool" / "keep").read_text() == "mine"


def test_modes_lose_set_id_and_foreign_write_and_owners_are_ours(tmp_path: Path) -> None:
    tar = tmp_path / "state.tar"
    with tarfile.open(tar, "w") as archive:
        for name, mode, kind in (
            (".tool", 0o7777, tarfile.DIRTYPE),
            (".tool/suid", 0o6777, tarfile.REGTYPE),
            (".tool/ro", 0o400, tarfile.REGTYPE),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = kind, mode, 0, 0
            archive.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    tarsafe.extract(tar, tmp_path / "out")
    modes = {p.name: p.stat().st_mode & 0o7777 for p in (tmp_path / "out").rglob("*")}
    assert modes == {".tool": 0o755, "suid": 0o755, "ro": 0o600}
    assert (tmp_path / "out" / ".tool" / "suid").stat().st_uid == os.geteuid()


@pytest.mark.parametrize(("mode", "expected"), [(0o4755, 0o755), (0o666, 0o644), (0o000, 0o600)])
def test_file_mode(mode: int, expected: int) -> None:
    assert tarsafe.file_mode(mode) == expected


@pytest.mark.parametrize("kind", ["pax", "longname"])
def test_a_huge_header_is_refused_before_it_is_read(tmp_path: Path, kind: str) -> None:
    tar = tmp_path / "state.tar"
    size = tarsafe.META_MAX + 1
    if kind == "pax":  # one pax record of size bytes: "<len> comment=xxx...\n"
        rest = f" comment={'x' * size}\n"
        length = len(rest) + 1
        while length != len(rest) + len(str(length)):
            length = len(rest) + len(str(length))
        record = f"{length}{rest}"
        header = tarfile.TarInfo("././@PaxHeader")
        header.type, header.size = tarfile.XHDTYPE, len(record)
        data = record.encode()
    else:
        header = tarfile.TarInfo("././@LongLink")
        header.type, header.size = tarfile.GNUTYPE_LONGNAME, size
        data = b"a" * (size - 1) + b"\0"
    with open(tar, "wb") as handle:
        handle.write(header.tobuf(tarfile.USTAR_FORMAT if kind == "pax" else tarfile.GNU_FORMAT))
        handle.write(data + b"\0" * (-len(data) % 512))
        member = tarfile.TarInfo(".tool/f")
        handle.write(member.tobuf(tarfile.USTAR_FORMAT) + b"\0" * 1024)
    assert header.size > tarsafe.META_MAX
    with pytest.raises(tarsafe.UnsafeArchive, match="tar header"):
        tarsafe.extract(tar, tmp_path / "out")

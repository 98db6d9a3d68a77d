"""The host-side walk that clears set-id bits a container left in a workspace."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from coi.boundary import setid


def _make(path: Path, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"#!/bin/sh\n")
    os.chmod(path, mode)
    return path


def test_clears_setuid_and_setgid_files_and_keeps_the_rest(tmp_path: Path) -> None:
    suid = _make(tmp_path / "a" / "rs", 0o4755)
    sgid = _make(tmp_path / "a" / "b" / "gs", 0o2711)
    plain = _make(tmp_path / "plain", 0o755)
    found = setid.clear([tmp_path])
    assert sorted((f.path, stat.S_IMODE(f.mode), f.cleared) for f in found) == sorted(
        [(suid, 0o4755, True), (sgid, 0o2711, True)]
    )
    assert stat.S_IMODE(suid.stat().st_mode) == 0o755
    assert stat.S_IMODE(sgid.stat().st_mode) == 0o711
    assert stat.S_IMODE(plain.stat().st_mode) == 0o755
    assert setid.clear([tmp_path]) == []


def test_an_unreadable_setuid_file_is_cleared_too(tmp_path: Path) -> None:
    target = _make(tmp_path / "x", 0o4000)
    assert [f.cleared for f in setid.clear([tmp_path])] == [True]
    assert stat.S_IMODE(target.stat().st_mode) == 0


def test_links_are_not_followed(tmp_path: Path) -> None:
    outside = _make(tmp_path / "outside" / "rs", 0o4755)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "file-link").symlink_to(outside)
    (workspace / "dir-link").symlink_to(outside.parent)
    assert setid.clear([workspace]) == []
    assert stat.S_IMODE(outside.stat().st_mode) == 0o4755


def test_a_setgid_folder_stays(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o2775)
    assert setid.clear([tmp_path]) == []
    assert shared.stat().st_mode & stat.S_ISGID


def test_nested_roots_are_walked_once_and_a_missing_root_is_nothing(tmp_path: Path) -> None:
    _make(tmp_path / "sub" / "rs", 0o4755)
    found = setid.clear([tmp_path, tmp_path / "sub", tmp_path / "missing"])
    assert len(found) == 1


def test_report_is_one_line_each_and_capped(tmp_path: Path) -> None:
    found = [setid.Found(tmp_path / f"f{i}", stat.S_IFREG | 0o4755, True) for i in range(25)]
    found.append(setid.Found(tmp_path / "stuck", stat.S_IFREG | 0o2755, False))
    lines: list[str] = []
    setid.report(found, lines.append)
    assert len(lines) == setid.MAX_REPORTED + 1
    assert "f0" in lines[0] and "4755" in lines[0]
    assert lines[-1] == "... and 6 more files with set-id bits"
    few: list[str] = []
    setid.report(found[-1:], few.append)
    assert few == [f"{tmp_path / 'stuck'} carries set-id bits (mode 2755) that coi could not clear"]

"""`coi file push|pull [-r]` against the one fake Incus: the bytes and owners that go in,
what comes out, and the one-line refusals."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from coi.commands.session import files
from coi.incus.adapter import ExecResult
from tests.unit.fakeplus import FakePlus, coi, one_error, tar_answer


def test_push_a_file_and_pull_it_back(fake_incus: FakePlus, tmp_path: Path) -> None:
    fake_incus.add_instance("box")
    source = tmp_path / "notes.txt"
    source.write_bytes(b"hello\n")
    assert coi(["file", "push", str(source), "box:/workspace/notes.txt"]) == 0
    assert fake_incus.files[("box", "/workspace/notes.txt")] == b"hello\n"
    out = tmp_path / "out"
    out.mkdir()
    assert coi(["file", "pull", "box:/workspace/notes.txt", str(out)]) == 0
    assert (out / "notes.txt").read_bytes() == b"hello\n"


def test_push_a_folder_sends_one_tar_owned_by_code_in_its_trees(
    fake_incus: FakePlus, tmp_path: Path
) -> None:
    sent: list[bytes] = []

    def untar(name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
        sent.append(options["stdin"])
        return ExecResult(0, "", "")

    fake_incus.add_instance("box")
    fake_incus.answers["sh"] = untar
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.py").write_text("x = 1\n")
    assert coi(["file", "push", "-r", str(folder), "box:/home/code/src"]) == 0
    assert fake_incus.commands[0][-1] == "/home/code/src"
    with tarfile.open(fileobj=io.BytesIO(sent[0])) as archive:
        members = {m.name: m.uid for m in archive.getmembers()}
    assert members["./sub/a.py"] == 1000


def test_pull_a_folder_drops_what_climbs_out(fake_incus: FakePlus, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in (("logs/a.log", b"ok"), ("../escape", b"no")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    fake_incus.add_instance("box")
    fake_incus.answers["tar"] = tar_answer(buffer.getvalue())
    dest = tmp_path / "got"
    assert coi(["file", "pull", "-r", "box:/var/logs", str(dest)]) == 0
    assert (dest / "a.log").read_bytes() == b"ok"
    assert not (tmp_path / "escape").exists()


def test_mistakes_are_one_line_and_send_nothing(
    fake_incus: FakePlus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box")
    assert coi(["file", "push", str(tmp_path), "box:/tmp/x"]) == 2
    assert "is a folder: pass -r" in one_error(capsys.readouterr().err)
    assert coi(["file", "push", str(tmp_path / "none"), "box:/tmp/x"]) == 2
    assert "does not exist" in one_error(capsys.readouterr().err)
    assert coi(["file", "push", str(tmp_path), "box:relative"]) == 2
    assert "is not NAME:/absolute/path" in one_error(capsys.readouterr().err)
    assert fake_incus.files == {} and fake_incus.commands == []
    assert files.split_remote("box:/a/../b") == ("box", "/b")

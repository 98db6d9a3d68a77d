"""The session store and safe extraction, with a stand-in for the container."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from coi.core import tarsafe
from coi.core.errors import UsageError
from coi.incus import execws
from coi.incus.adapter import ExecResult
from coi.sessions import lifecycle, store
from tests.fakes import FakeIncus


def _tar_folder(home: Path, state_dir: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(home / state_dir, arcname=state_dir)
    return buffer.getvalue()


def serving(home: Path) -> FakeIncus:
    """The fake daemon; its `tar -c` answers with a tar of a host folder standing in for
    /home/code."""

    def tar(name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
        options["raw_stdout"](_tar_folder(home, argv[-1]))
        return ExecResult(0, "", "")

    return FakeIncus(runs=tar)


class Streaming:
    """Answers `tar -c` in 64 KiB chunks and notes when the sink stops it, as execws does."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.stopped = False

    def __call__(self, name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
        data = _tar_folder(self.home, argv[-1])
        try:
            for start in range(0, len(data), 65536):
                options["raw_stdout"](data[start : start + 65536])
        except execws.StopStream:
            self.stopped = True
            return ExecResult(-1, "", "")
        return ExecResult(0, "", "")


def _meta(session_id: str = "s1", workspace: str = "/w") -> store.Metadata:
    return store.Metadata(session_id, "coi-x-1", 1, workspace, "fake", False, None, store.now())


def test_save_drops_links_fifos_and_escapes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = home / ".fake"
    (state / "sub").mkdir(parents=True)
    (state / "sub" / "kept").write_text("data")
    os.symlink("/etc", state / "etc-link")
    os.mkfifo(state / "pipe")
    folder = store.save(serving(home), "c", _meta(), ".fake", running=True)
    assert folder is not None
    assert (folder / ".fake" / "sub" / "kept").read_text() == "data"
    assert not os.path.lexists(folder / ".fake" / "etc-link")
    assert not os.path.lexists(folder / ".fake" / "pipe")
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["schema_version"] == 1 and meta["session_id"] == "s1"
    assert set(meta) >= {
        "session_id",
        "container_name",
        "slot",
        "workspace",
        "tool",
        "persistent",
        "profile",
        "saved_at",
    }


def test_second_save_replaces_the_first_whole(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".fake").mkdir(parents=True)
    (home / ".fake" / "a").write_text("1")
    store.save(serving(home), "c", _meta(), ".fake", running=True)
    (home / ".fake" / "a").unlink()
    (home / ".fake" / "b").write_text("2")
    folder = store.save(serving(home), "c", _meta(), ".fake", running=True)
    assert folder is not None
    assert sorted(p.name for p in (folder / ".fake").iterdir()) == ["b"]
    assert [p.name for p in folder.parent.iterdir()] == ["s1"]


def test_interrupted_replace_is_recovered(tmp_path: Path) -> None:
    saved = store.store("fake")
    saved.mkdir(parents=True)
    old = saved / ".s1.old-1-2"
    old.mkdir()
    (old / "metadata.json").write_text(json.dumps(vars(_meta())))
    store.recover("fake")
    assert store.read(saved / "s1") is not None


def test_latest_is_scoped_to_the_workspace(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".fake").mkdir(parents=True)
    fake = serving(home)
    store.save(fake, "c", _meta("a", "/w1"), ".fake", running=True)
    store.save(fake, "c", _meta("b", "/w2"), ".fake", running=True)
    found = store.latest_for(Path("/w1"), "fake")
    assert found is not None and found[0].session_id == "a"
    with pytest.raises(UsageError, match="belongs to /w2"):
        store.find("b", Path("/w1"), "fake")
    with pytest.raises(UsageError):
        store.session_dir("fake", "../escape")


def test_tarsafe_refuses_absolute_and_climbing_paths(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in ("ok/file", "../evil", "/abs", "ok/../../evil2"):
            info = tarfile.TarInfo(name)
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        kept = [m.name for m in tarsafe.safe_members(archive)]
    assert kept == ["ok/file"]


def test_code_env_carries_nothing_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    env = lifecycle.code_env()
    assert env["HOME"] == "/home/code" and "AWS_SECRET_ACCESS_KEY" not in env


def _tar_of(entries: list[tuple[str, bytes | None, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.uname = mode, 1000, 1000, "code"
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif data == b"->":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc"
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_extraction_keeps_files_and_folders_and_drops_links_and_set_id_bits(
    tmp_path: Path,
) -> None:
    tar = tmp_path / "state.tar"
    tar.write_bytes(
        _tar_of(
            [
                (".tool", None, 0o755),
                (".tool/run", b"#!/bin/sh\n", 0o4777),
                (".tool/plain", b"data", 0o666),
                (".tool/etc", b"->", 0o777),
                ("other/file", b"not under top", 0o644),
            ]
        )
    )
    dest = tmp_path / "out"
    dest.mkdir()
    tarsafe.extract(tar, dest, top=".tool")
    found = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    assert found == [".tool", ".tool/plain", ".tool/run"]
    assert (dest / ".tool/run").read_bytes() == b"#!/bin/sh\n"
    assert (dest / ".tool/run").stat().st_mode & 0o7777 == 0o755
    assert (dest / ".tool/plain").stat().st_mode & 0o7777 == 0o644
    assert (dest / ".tool/plain").stat().st_uid == os.geteuid()  # no owner from inside


def test_a_saved_state_goes_back_as_folders_and_files_owned_inside(tmp_path: Path) -> None:
    state = tmp_path / "saved" / ".tool"
    (state / "sub").mkdir(parents=True)
    (state / "sub" / "f").write_text("x")
    (state / "link").symlink_to("/etc/passwd")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=store.TAR_FORMAT) as archive:
        store.add_state(archive, tmp_path / "saved", ".tool", "home/code/", 1000)
        store.add_state(archive, tmp_path / "saved", ".absent", "home/code/", 1000)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        members = {m.name: (m.uid, m.gid, m.uname) for m in archive}
    assert members == {
        "home/code/.tool": (1000, 1000, ""),
        "home/code/.tool/sub": (1000, 1000, ""),
        "home/code/.tool/sub/f": (1000, 1000, ""),
    }


@pytest.mark.parametrize("running", [True, False])
def test_a_save_past_the_cap_stops_and_keeps_the_previous_one(
    tmp_path: Path, running: bool
) -> None:
    home = tmp_path / "home"
    (home / ".fake").mkdir(parents=True)
    (home / ".fake" / "marker").write_text("good")
    streaming = Streaming(home)
    fake = FakeIncus(runs=streaming)
    fake.files[("c", store.STOPPED_STATE)] = _tar_folder(home, ".fake")
    first = store.save(fake, "c", _meta(), ".fake", running=running, limit=2**20)
    assert first is not None
    (home / ".fake" / "big").write_bytes(os.urandom(3 * 2**20))
    fake.files[("c", store.STOPPED_STATE)] = _tar_folder(home, ".fake")
    with pytest.raises(store.StateTooLarge, match=r"max_state_size \(1MiB\)"):
        store.save(fake, "c", _meta(), ".fake", running=running, limit=2**20)
    assert streaming.stopped == running  # the exec was told to stop, not read to its end
    assert sorted(p.name for p in (first / ".fake").iterdir()) == ["marker"]
    assert [p.name for p in first.parent.iterdir()] == ["s1"]  # no temporary folder left


def test_the_unpacking_sink_takes_nothing_past_its_limit(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(".fake/f")
        info.size = 4000
        archive.addfile(info, io.BytesIO(b"x" * 4000))
    data = buffer.getvalue()  # 10240 bytes: headers, the file, padding
    fits = store._Unpacking(tmp_path / "fits", ".fake", len(data))
    fits(data)
    assert fits.close("c") is True
    assert (tmp_path / "fits" / ".fake" / "f").read_bytes() == b"x" * 4000
    over = store._Unpacking(tmp_path / "over", ".fake", len(data) - 1)
    with pytest.raises(execws.StopStream):
        over(data)
    with pytest.raises(store.StateTooLarge):
        over.close("c")
    assert over.size == 0


def test_a_refused_stream_says_why(tmp_path: Path) -> None:
    sink = store._Unpacking(tmp_path / "out", ".fake", 2**20)
    with contextlib.suppress(execws.StopStream):
        for _ in range(20):  # gzip magic, then more: refused at the first header
            sink(b"\x1f\x8b" + b"\0" * 65534)
    with pytest.raises(tarsafe.UnsafeArchive, match="not a plain tar"):
        sink.close("c")


def test_a_stream_stdin_is_read_only_as_fast_as_it_is_sent(tmp_path: Path) -> None:
    import time

    source = tmp_path / "big"
    source.write_bytes(b"x" * (64 * 2**20))
    with open(source, "rb") as handle:
        execws.StreamIn(handle)
        for _ in range(50):  # the reader thread fills its queue, then waits
            time.sleep(0.02)
        assert handle.tell() <= (execws.STDIN_AHEAD + 1) * 65536


def test_the_state_stream_carries_folders_and_files_owned_inside_after_the_setup(
    tmp_path: Path,
) -> None:
    """The stream a session start sends: its setup archive, then the state packed by GNU
    tar (links left out, owned by the container user, under home/code/), read by one
    `tar -i` as the container's setup does."""
    import subprocess

    state = tmp_path / "saved" / ".tool"
    (state / "sub").mkdir(parents=True)
    (state / "sub" / "f").write_text("x")
    (state / "run").write_bytes(b"#!/bin/sh\n")
    (state / "run").chmod(0o755)
    (state / "link").symlink_to("/etc/passwd")
    (state / "dirlink").symlink_to(tmp_path)
    setup = io.BytesIO()
    with tarfile.open(fileobj=setup, mode="w", format=store.TAR_FORMAT) as archive:
        info = tarfile.TarInfo("etc/coi/session.env")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"A=1"))
    setup.seek(0)
    with store.state_stream(tmp_path / "saved", ".tool", "home/code/", 1000) as state_tar:
        data = store.chained(setup, state_tar).read()
    with store.state_stream(tmp_path / "saved", ".absent", "home/code/", 1000) as none:
        assert none is None
    listing = subprocess.run(
        ["tar", "-i", "-tvf", "-", "--numeric-owner"], input=data, capture_output=True, check=True
    ).stdout.decode()
    rows = {line.split()[-1]: line.split()[:2] for line in listing.splitlines()}
    assert set(rows) == {
        "etc/coi/session.env",
        "home/code/.tool/",
        "home/code/.tool/run",
        "home/code/.tool/sub/",
        "home/code/.tool/sub/f",
    }
    assert all(rows[n][1] == "1000/1000" for n in rows if n.startswith("home/"))
    assert rows["home/code/.tool/run"][0] == "-rwxr-xr-x"


def test_a_nested_state_folder_is_saved_and_goes_back_with_its_parents(tmp_path: Path) -> None:
    """OpenCode keeps its state in ~/.local/share/opencode: a save keeps that folder (and
    nothing else of ~/.local), and the way back makes ~/.local and ~/.local/share owned by
    the container user, not by the root that unpacks."""
    import subprocess

    home = tmp_path / "home"
    state = home / ".local" / "share" / "opencode"
    state.mkdir(parents=True)
    (state / "opencode.db").write_text("conversation")
    (home / ".local" / "share" / "other").mkdir()
    (home / ".local" / "share" / "other" / "secret").write_text("not state")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:  # as `tar -C ~ -c .local/...`
        archive.add(home / ".local", arcname=".local")
    fake = FakeIncus(
        runs=lambda n, a, o: (o["raw_stdout"](buffer.getvalue()), ExecResult(0, "", ""))[1]
    )
    folder = store.save(fake, "c", _meta(), ".local/share/opencode", running=True)
    assert folder is not None
    assert (folder / ".local/share/opencode/opencode.db").read_text() == "conversation"
    assert not (folder / ".local/share/other").exists()
    with store.state_stream(folder, ".local/share/opencode", "home/code/", 1000) as state_tar:
        assert state_tar is not None
        data = state_tar.read()
    listing = subprocess.run(
        ["tar", "-tvf", "-", "--numeric-owner"], input=data, capture_output=True, check=True
    ).stdout.decode()
    owners = {line.split()[-1].rstrip("/"): line.split()[1] for line in listing.splitlines()}
    assert owners == {
        "home/code/.local": "1000/1000",
        "home/code/.local/share": "1000/1000",
        "home/code/.local/share/opencode": "1000/1000",
        "home/code/.local/share/opencode/opencode.db": "1000/1000",
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=store.TAR_FORMAT) as archive:
        store.add_state(archive, folder, ".local/share/opencode", "home/code/", 1000)
    out.seek(0)
    with tarfile.open(fileobj=out) as archive:
        assert {m.name: m.uid for m in archive} == {n: 1000 for n in owners}

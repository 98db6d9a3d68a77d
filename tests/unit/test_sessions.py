"""The session store and safe extraction, with a stand-in for the container."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from coi import runtime, sessions, tarsafe
from coi.errors import UsageError
from coi.incus import ExecResult


class FakeIncus:
    """Answers `tar -c` with a tar of a host folder standing in for /home/code."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def execute(self, name: str, argv: list[str], **kw: Any) -> ExecResult:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            archive.add(self.home / argv[-1], arcname=argv[-1])
        kw["raw_stdout"](buffer.getvalue())
        return ExecResult(0, "", "")


def _meta(session_id: str = "s1", workspace: str = "/w") -> sessions.Metadata:
    return sessions.Metadata(
        session_id, "coi-x-1", 1, workspace, "fake", False, None, sessions.now()
    )


def test_save_drops_links_fifos_and_escapes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = home / ".fake"
    (state / "sub").mkdir(parents=True)
    (state / "sub" / "kept").write_text("data")
    os.symlink("/etc", state / "etc-link")
    os.mkfifo(state / "pipe")
    folder = sessions.save(FakeIncus(home), "c", _meta(), ".fake", running=True)  # type: ignore[arg-type]
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
    sessions.save(FakeIncus(home), "c", _meta(), ".fake", running=True)  # type: ignore[arg-type]
    (home / ".fake" / "a").unlink()
    (home / ".fake" / "b").write_text("2")
    folder = sessions.save(FakeIncus(home), "c", _meta(), ".fake", running=True)  # type: ignore[arg-type]
    assert folder is not None
    assert sorted(p.name for p in (folder / ".fake").iterdir()) == ["b"]
    assert [p.name for p in folder.parent.iterdir()] == ["s1"]


def test_interrupted_replace_is_recovered(tmp_path: Path) -> None:
    store = sessions.store("fake")
    store.mkdir(parents=True)
    old = store / ".s1.old-1-2"
    old.mkdir()
    (old / "metadata.json").write_text(json.dumps(vars(_meta())))
    sessions.recover("fake")
    assert sessions.read(store / "s1") is not None


def test_latest_is_scoped_to_the_workspace(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".fake").mkdir(parents=True)
    fake: Any = FakeIncus(home)
    sessions.save(fake, "c", _meta("a", "/w1"), ".fake", running=True)
    sessions.save(fake, "c", _meta("b", "/w2"), ".fake", running=True)
    found = sessions.latest_for(Path("/w1"), "fake")
    assert found is not None and found[0].session_id == "a"
    with pytest.raises(UsageError, match="belongs to /w2"):
        sessions.find("b", Path("/w1"), "fake")
    with pytest.raises(UsageError):
        sessions.session_dir("fake", "../escape")


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


def test_claude_settings_are_merged_without_losing_host_keys() -> None:
    merged = json.loads(runtime.merge_settings(".claude.json", b'{"oauthAccount": {"x": 1}}'))
    assert merged["oauthAccount"] == {"x": 1}
    assert merged["hasCompletedOnboarding"] is True
    assert merged["projects"]["/workspace"]["hasTrustDialogAccepted"] is True
    assert runtime.merge_settings("other", b"raw") == b"raw"


def test_code_env_carries_nothing_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    env = runtime.code_env()
    assert env["HOME"] == "/home/code" and "AWS_SECRET_ACCESS_KEY" not in env

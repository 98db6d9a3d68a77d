"""`coi list`, `info`, `shutdown`, `kill`, `clean`, `persist` against the one fake Incus:
which containers each one stops, deletes, keeps or saves, and what it prints."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from coi.commands import session
from coi.commands.session import manage
from coi.core import labels
from coi.sessions import store
from tests.unit.fakeplus import FakePlus, coi, one_error, state_tar, tar_answer


def session_box(
    fake: FakePlus, name: str, status: str = "Running", *, persistent: bool = False
) -> None:
    """A session's container: coi's labels, tool claude, session id `s-NAME`."""
    config = {
        labels.WORKSPACE: "/srv/w",
        labels.SLOT: name.rsplit("-", 1)[-1],
        labels.SESSION: f"s-{name}",
        labels.TOOL: "claude",
    }
    if persistent:
        config[labels.PERSISTENT] = "true"
    fake.add_instance(name, config, status)


def test_list_shows_coi_containers_only(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    session_box(fake_incus, "coi-a-1")
    session_box(fake_incus, "coi-a-2", "Stopped", persistent=True)
    fake_incus.add_instance("plain", {"user.other": "x"})
    assert coi(["list", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)["containers"]
    assert [(c["name"], c["status"], c["persistent"], c["slot"]) for c in shown] == [
        ("coi-a-1", "running", False, 1),
        ("coi-a-2", "stopped", True, 2),
    ]
    assert coi(["list"]) == 0
    captured = capsys.readouterr()
    assert "coi-a-1" in captured.out and "plain" not in captured.out
    assert "coi-a-2 is stopped: `coi shell --persistent --slot 2" in captured.err


def test_list_saves_and_removes_a_session_stopped_while_detached(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    session_box(fake_incus, "coi-a-1", "Stopped")
    tar = state_tar(".claude", {"history.jsonl": b"{}\n"})
    fake_incus.files[("coi-a-1", store.STOPPED_STATE)] = tar
    assert coi(["list", "--all", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["containers"] == [] and fake_incus.instance_names() == []
    assert [s["session_id"] for s in shown["sessions"]] == ["s-coi-a-1"]
    saved = Path(shown["sessions"][0]["path"])
    assert (saved / ".claude" / "history.jsonl").read_bytes() == b"{}\n"


def test_info_shows_a_saved_session_or_says_there_is_none(
    fake_incus: FakePlus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["info", "--workspace", str(tmp_path)]) == 2
    assert "`coi list --all`" in one_error(capsys.readouterr().err)
    session_box(fake_incus, "coi-a-3")
    fake_incus.answers["tar"] = tar_answer(state_tar(".claude", {"a": b"1"}))
    assert coi(["shutdown", "coi-a-3"]) == 0
    assert coi(["info", "s-coi-a-3"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["container_name"] == "coi-a-3" and shown["files"] == 2  # metadata + a


def test_shutdown_saves_a_running_session_deletes_ephemeral_keeps_persistent(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    session_box(fake_incus, "coi-a-1")
    session_box(fake_incus, "coi-a-2", persistent=True)
    fake_incus.answers["tar"] = tar_answer(state_tar(".claude", {"s.json": b"{}"}))
    assert coi(["shutdown", "coi-a-1", "coi-a-2"]) == 0
    assert fake_incus.instance_names() == ["coi-a-2"]
    assert fake_incus.instances_by_name["coi-a-2"]["status"] == "Stopped"
    err = capsys.readouterr().err
    assert "coi-a-1: stopped and deleted" in err and "coi-a-2: stopped\n" in err
    assert {m.session_id for m, _ in store.all_sessions()} == {"s-coi-a-1", "s-coi-a-2"}


def test_kill_deletes_without_saving_and_names_the_unknown(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    session_box(fake_incus, "coi-a-1")
    assert coi(["kill", "coi-a-1", "coi-zz-9"]) != 0
    assert "no coi container coi-zz-9" in one_error(capsys.readouterr().err)
    assert fake_incus.instance_names() == ["coi-a-1"]  # nothing killed on a mistake
    assert coi(["kill", "coi-a-1"]) == 0
    assert fake_incus.instance_names() == [] and store.all_sessions() == []
    assert coi(["kill"]) == 2
    assert "name the containers to kill, or pass --all" in one_error(capsys.readouterr().err)


def test_all_needs_force_without_a_terminal(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal
    session_box(fake_incus, "coi-a-1")
    assert coi(["kill", "--all"]) == 2
    assert "there is no terminal, pass --force" in one_error(capsys.readouterr().err)
    assert fake_incus.instance_names() == ["coi-a-1"]
    assert coi(["kill", "--all", "--force"]) == 0
    assert fake_incus.instance_names() == []


def test_persist_marks_the_container_kept(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    session_box(fake_incus, "coi-a-1")
    assert coi(["persist", "coi-a-1"]) == 0
    assert fake_incus.instances_by_name["coi-a-1"]["config"][labels.PERSISTENT] == "true"
    assert "coi-a-1: persistent" in capsys.readouterr().err


def test_clean_removes_stopped_containers_and_saved_sessions(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    session_box(fake_incus, "coi-a-1")
    session_box(fake_incus, "coi-a-2", "Stopped", persistent=True)
    session_box(fake_incus, "coi-a-3", "Stopped")  # reaped: its session saved first
    fake_incus.files[("coi-a-3", store.STOPPED_STATE)] = state_tar(".claude", {"x": b"1"})
    assert coi(["clean", "--force"]) == 0
    assert fake_incus.instance_names() == ["coi-a-1"]
    assert [m.session_id for m, _ in store.all_sessions()] == ["s-coi-a-3"]
    assert "coi-a-2: deleted" in capsys.readouterr().err
    assert coi(["clean", "--force", "--sessions"]) == 0
    assert store.all_sessions() == []
    assert "1 saved sessions deleted" in capsys.readouterr().err


def test_describe_reads_the_address_from_the_state() -> None:
    inst = {
        "name": "coi-a-1",
        "status": "Running",
        "config": {labels.SLOT: "1", labels.POOL: "k"},
        "state": {"network": {"eth0": {"addresses": [{"family": "inet", "address": "10.0.0.5"}]}}},
    }
    shown = manage.describe(inst)
    assert shown["ipv4"] == "10.0.0.5" and shown["pooled"] and shown["slot"] == 1


def test_every_session_command_names_a_handler_in_its_module() -> None:
    from coi.commands.cli import load

    targets = [c.target for c in session.COMMANDS.values() if c.target]
    targets += [s.target for c in session.COMMANDS.values() for s in c.sub.values()]
    assert len(targets) == 15 and all(callable(load(t)) for t in targets)

"""`coi container ...` against the one fake Incus: what each command changes in the
daemon, prints and exits with; a user's mistake is one line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from coi.commands import container
from coi.core import labels
from coi.core.errors import IncusError
from coi.incus.adapter import ExecResult
from tests.unit.fakeplus import FakePlus, coi, one_error


def test_launch_creates_starts_and_waits_past_early_boot(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["--network", "open", "container", "launch", "coi", "box"]) == 0
    record = fake_incus.instances_by_name["box"]
    assert record["status"] == "Running"
    assert record["config"][labels.NETWORK_MODE] == "open"
    assert "coi-base" in record["profiles"] and "coi-base" in fake_incus.profiles
    assert fake_incus.commands and fake_incus.commands[-1][:2] == ["sh", "-c"]
    assert "launched box from coi" in capsys.readouterr().err


def test_launch_no_wait_runs_nothing_inside(fake_incus: FakePlus) -> None:
    argv = ["--network", "open", "container", "launch", "coi", "box", "--no-wait", "--ephemeral"]
    assert coi(argv) == 0
    assert fake_incus.commands == []


def test_stop_start_and_running_follow_the_daemon(fake_incus: FakePlus) -> None:
    fake_incus.add_instance("box")
    assert coi(["container", "running", "box"]) == 0
    assert coi(["container", "stop", "box"]) == 0
    assert fake_incus.instances_by_name["box"]["status"] == "Stopped"
    assert coi(["container", "running", "box"]) == 1
    assert coi(["container", "start", "box"]) == 0
    assert fake_incus.instances_by_name["box"]["status"] == "Running"
    assert coi(["container", "running", "gone"]) == 1


def test_exists_is_the_exit_code(fake_incus: FakePlus) -> None:
    fake_incus.add_instance("box")
    assert coi(["container", "exists", "box"]) == 0
    assert coi(["container", "exists", "other"]) == 1
    assert container.exists(argparse.Namespace(name="box")) == 0  # the handler, called alone


def test_a_running_container_is_deleted_only_with_force(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box")
    assert coi(["container", "delete", "box"]) == 2
    assert "box is running: stop it first or pass --force" in one_error(capsys.readouterr().err)
    assert "box" in fake_incus.instances_by_name
    assert coi(["container", "delete", "box", "--force"]) == 0
    assert "box" not in fake_incus.instances_by_name


def test_a_stopped_container_is_deleted_without_force(fake_incus: FakePlus) -> None:
    fake_incus.add_instance("box", status="Stopped")
    assert coi(["container", "delete", "box"]) == 0
    assert fake_incus.instance_names() == []


def test_exec_keeps_the_inner_exit_code_and_captures_as_json(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[dict[str, Any]] = []

    def runs(name: str, argv: list[str], options: dict[str, Any]) -> ExecResult:
        seen.append(options)
        return ExecResult(3, "out\n", "err\n")

    fake_incus.add_instance("box")
    fake_incus.runs = runs
    argv = ["container", "exec", "box", "--capture", "--env", "A=b=c", "--cwd", "/w", "--", "ls"]
    assert coi(argv) == 3
    assert fake_incus.commands == [["ls"]]
    assert seen[0]["env"] == {"A": "b=c"} and seen[0]["cwd"] == "/w"
    assert capsys.readouterr().out.strip() == (
        '{"stdout": "out\\n", "stderr": "err\\n", "exit_code": 3}'
    )


def test_exec_raw_capture_prints_stdout_only(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box")
    fake_incus.runs = lambda name, argv, options: ExecResult(0, "just this", "not this")
    assert coi(["container", "exec", "box", "--capture", "--format", "raw", "--", "x"]) == 0
    assert capsys.readouterr().out == "just this"


def test_exec_without_a_command_is_one_line(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box")
    assert coi(["container", "exec", "box"]) == 2
    assert "no command given" in one_error(capsys.readouterr().err)
    assert fake_incus.commands == []


def test_mount_adds_a_disk_device(
    fake_incus: FakePlus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box")
    assert coi(["container", "mount", "box", "data", str(tmp_path), "/data", "--shift"]) == 0
    device = fake_incus.instances_by_name["box"]["devices"]["data"]
    assert device == {"type": "disk", "source": str(tmp_path), "path": "/data", "shift": "true"}
    assert f"mounted {tmp_path} at /data in box" in capsys.readouterr().err


def test_mount_of_a_missing_folder_is_one_line(
    fake_incus: FakePlus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box")
    assert coi(["container", "mount", "box", "data", str(tmp_path / "nope"), "/data"]) == 2
    assert "does not exist" in one_error(capsys.readouterr().err)
    assert fake_incus.instances_by_name["box"]["devices"] == {}


class _NoRecursive(FakePlus):
    def set_state(self, name: str, action: str, *, force: bool = False, timeout: int = -1) -> None:
        raise IncusError("Failed to start device: recursive option needs the source mounted")


def test_start_of_a_session_container_says_how_it_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit import fakeplus

    fake = fakeplus.install(monkeypatch, _NoRecursive())
    fake.add_instance("coi-x-2", {labels.SLOT: "2", labels.WORKSPACE: "/srv/w"}, "Stopped")
    assert coi(["container", "start", "coi-x-2"]) == 2
    line = one_error(capsys.readouterr().err)
    assert "coi-x-2 is a session's container" in line and "--slot 2" in line

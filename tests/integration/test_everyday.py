"""Everyday polish on the real daemon: a quiet second run, `[tool] pre_launch`, extra mounts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from coi.boundary import protect
from coi.incus.adapter import Incus
from tests.integration.helpers import coi, ours, own_prefix, user_config_path
from tests.integration.test_ports import SERVER, ask, free_port


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "project"
    ws.mkdir()
    os.chown(ws, 1000, 1000)  # a user's project, as uid 1000 owns it
    return ws


@pytest.fixture
def user_config(
    incus: Incus, session_image: str, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The user's config: the test image, a plain shell tool, a prefix of our own."""
    config = user_config_path()
    config.write_text(f'[defaults]\nimage = "{session_image}"\n[tool]\nname = "shell"\n')
    own_prefix(monkeypatch, "e")
    monkeypatch.chdir(workspace)
    return config


def test_a_second_run_prints_nothing_on_stderr(user_config: Path) -> None:
    first = coi("run", "--", "true")
    assert first.returncode == 0, first.stderr
    second = coi("run", "--", "true")
    assert second.returncode == 0 and second.stderr == ""
    loud = coi("run", "--verbose", "--", "true")  # the checkpoint before it is said again
    assert loud.returncode == 0 and "checkpoint" in loud.stderr


def _capture(name: str, wanted: str, attempts: int = 40) -> str:
    """The tmux pane once it shows `wanted` (bounded)."""
    screen = ""
    for _ in range(attempts):
        screen = coi("tmux", "capture", name).stdout
        if wanted in screen:
            break
        time.sleep(0.5)
    return screen


def test_pre_launch_runs_as_code_before_the_tool_and_a_failure_is_not_fatal(
    user_config: Path, incus: Incus
) -> None:
    with user_config.open("a") as f:
        f.write(
            'pre_launch = ["id -un > ~/pre-ran", "exit 3"]\n'
            '[tools.shell]\nbinary = "bash"\nargs = ["-c", "echo tool-saw-$(cat ~/pre-ran)"]\n'
        )
    started = coi("shell", "--background")
    assert started.returncode == 0, started.stderr
    name = next(
        n for n in incus.instance_names() if n.startswith(os.environ["COI_CONTAINER_PREFIX"])
    )
    try:
        screen = _capture(name, "tool-saw-code")
        assert "pre_launch `exit 3` failed (exit 3)" in screen
        assert screen.index("failed (exit 3)") < screen.index("tool-saw-code")
    finally:
        assert coi("kill", "--force", name).returncode == 0


def test_an_untrusted_project_file_cannot_set_pre_launch(
    user_config: Path, workspace: Path
) -> None:
    (workspace / ".coi.toml").write_text('[tool]\npre_launch = ["touch /workspace/planted"]\n')
    shown = coi("config", "show", "--origin")
    assert "tool.pre_launch = []" in shown.stdout
    assert "pre_launch" in shown.stderr


def test_a_read_only_mount_and_a_writable_one_keep_the_owner(
    user_config: Path, tmp_path: Path
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    for folder in (data, out):
        folder.mkdir()
        os.chown(folder, 1000, 1000)
    (data / "input.txt").write_text("from the host\n")
    os.chown(data / "input.txt", 1000, 1000)
    script = (
        "stat -c %U /data/input.txt; cat /data/input.txt; "
        "echo x > /data/new 2>/dev/null && echo WROTE-RO || echo read-only; "
        "echo y > /out/made && echo wrote-rw"
    )
    done = coi(
        "run", "--mount", f"{data}:/data", "--mount", f"{out}:/out:rw", "--", "sh", "-c", script
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["code", "from the host", "read-only", "wrote-rw"]
    assert not (data / "new").exists()
    assert (out / "made").stat().st_uid == 1000


def test_a_mount_of_a_credential_folder_is_refused(user_config: Path) -> None:
    ssh = Path(os.environ["HOME"]) / ".ssh"
    ssh.mkdir(exist_ok=True)
    refused = coi("run", "--mount", f"{ssh}:/keys", "--", "true")
    assert refused.returncode == 2 and "credentials" in refused.stderr
    assert refused.stderr.count("\n") == 1


def test_a_stopped_persistent_container_takes_changes_and_says_how_it_starts(
    user_config: Path, workspace: Path, incus: Incus
) -> None:
    """Its workspace disk names the locked view, which exists only while coi runs it: Incus
    refused every change of it in its own words, and `incus start` still must."""
    kept = coi("run", "--persistent", "--network", "allowlist", "--", "true")
    assert kept.returncode == 0, kept.stderr
    (name,) = ours(incus, os.environ["COI_CONTAINER_PREFIX"])
    port = free_port()
    hint = f"`coi shell --persistent --slot 1 --workspace {workspace}` starts it again"
    try:
        assert incus.state(name)["status"] == "Stopped" and not protect.view_path(name).exists()
        added = coi("port", "add", name, str(port), "8000")
        assert added.returncode == 0, added.stderr
        allowed = coi("network", "allow", name, "198.51.100.7")  # a rule only: no traffic
        assert allowed.returncode == 0, allowed.stderr
        config = incus.instance(name)
        assert f"coi-port-tcp-{port}" in config["devices"]
        assert config["config"]["user.coi.network.allowed_domains"] == "198.51.100.7"
        assert not protect.view_path(name).exists()  # so `incus start` refuses it still
        for argv in (("attach", name), ("container", "start", name)):
            refused = coi(*argv)
            assert refused.returncode == 2 and hint in refused.stderr, refused.stderr
            assert refused.stderr.count("\n") == 1
        assert hint in coi("list").stderr
        assert hint in coi("doctor").stdout
        other = coi("shell", "--slot", "1", "--background")  # not persistent: a new slot
        assert other.returncode == 0 and hint in other.stderr, other.stderr
        assert coi("kill", "--force", name[:-1] + "2").returncode == 0
        again = coi("shell", "--persistent", "--network", "allowlist", "--background")
        assert again.returncode == 0 and "reusing" in again.stderr, again.stderr
        assert coi("container", "exec", name, "--", "sh", "-c", SERVER).returncode == 0
        assert ask(port) == "pong-from-inside"  # the forward added while it was stopped
        stopped = coi("shutdown", name)
        assert stopped.returncode == 0, stopped.stderr
        assert not protect.view_path(name).exists()  # released, as a session's end does
        assert not (workspace / ".vscode").exists()  # and its placeholders gone
        removed = coi("port", "remove", name, str(port))
        assert removed.returncode == 0, removed.stderr
        assert f"coi-port-tcp-{port}" not in incus.instance(name)["devices"]
    finally:
        coi("kill", "--force", *ours(incus, os.environ["COI_CONTAINER_PREFIX"]))

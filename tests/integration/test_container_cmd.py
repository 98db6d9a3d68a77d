"""`coi container ...` through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from coi.incus.adapter import Incus
from tests.integration.helpers import coi


def test_container_lifecycle_and_exec(
    incus: Incus, base_image: str, name: str, cleanup: list[str]
) -> None:
    cleanup.append(name)
    launched = coi("container", "launch", base_image, name)
    assert launched.returncode == 0, launched.stderr
    assert coi("container", "exists", name).returncode == 0
    assert coi("container", "running", name).returncode == 0

    streamed = coi("container", "exec", name, "--", "sh", "-c", "echo hello; exit 7")
    assert streamed.returncode == 7
    assert streamed.stdout == "hello\n"

    captured = coi(
        "container",
        "exec",
        name,
        "--capture",
        "--user",
        "1000",
        "--cwd",
        "/tmp",
        "--env",
        "A=b,c",
        "--",
        "sh",
        "-c",
        'echo "$A $(id -u) $PWD"; echo e >&2; exit 4',
    )
    assert captured.returncode == 4
    assert json.loads(captured.stdout) == {
        "stdout": "b,c 1000 /tmp\n",
        "stderr": "e\n",
        "exit_code": 4,
    }
    raw = coi("container", "exec", name, "--capture", "--format", "raw", "--", "pwd")
    assert (raw.returncode, raw.stdout) == (0, "/root\n")

    assert coi("container", "delete", name).returncode == 2  # running: needs --force
    assert coi("container", "stop", name, "--force").returncode == 0
    assert coi("container", "running", name).returncode == 1
    assert coi("container", "start", name).returncode == 0
    assert coi("container", "delete", name, "--force").returncode == 0
    assert coi("container", "exists", name).returncode == 1


def test_container_mount(
    incus: Incus, base_image: str, name: str, cleanup: list[str], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "seen.txt").write_text("from the host\n")
    cleanup.append(name)
    assert coi("container", "launch", base_image, name).returncode == 0
    mounted = coi("container", "mount", name, "data", str(tmp_path), "/mnt/data", "--shift")
    assert mounted.returncode == 0, mounted.stderr
    shown = coi("container", "exec", name, "--", "cat", "/mnt/data/seen.txt")
    assert shown.stdout == "from the host\n"


def test_exec_on_missing_container_is_one_line() -> None:
    done = coi("container", "exec", "no-such-container", "--", "true")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "not found" in done.stderr


def test_launch_returns_after_early_boot(
    incus: Incus, base_image: str, name: str, cleanup: list[str]
) -> None:
    """Early boot empties /tmp: launch returns once that is done, so /tmp keeps files."""
    cleanup.append(name)
    assert coi("container", "launch", base_image, name).returncode == 0
    # what the barrier waits for: the unit that empties /tmp has run (sysinit.target may
    # still be on its way: `is-active A B` holds once either is)
    probe = (
        "systemctl is-active systemd-tmpfiles-setup; echo kept > /tmp/mark; sleep 2; cat /tmp/mark"
    )
    done = coi("container", "exec", name, "--", "sh", "-c", probe)
    assert done.stdout.split() == ["active", "kept"], done.stdout + done.stderr


def test_completion_offers_the_live_container_names(
    incus: Incus, base_image: str, name: str, cleanup: list[str], tmp_path: Path
) -> None:
    cleanup.append(name)
    assert coi("container", "launch", base_image, name, "--no-wait").returncode == 0
    line = f"coi kill {name[:6]}"
    out = tmp_path / "answer"
    env = {"COMP_LINE": line, "COMP_POINT": str(len(line)), "_ARGCOMPLETE": "1"}
    subprocess.run(
        [sys.executable, "-m", "coi"],
        env={**os.environ, **env, "_ARGCOMPLETE_STDOUT_FILENAME": str(out)},
        check=True,
        timeout=60,
    )
    assert name in [w.strip() for w in out.read_text().split("\v")]

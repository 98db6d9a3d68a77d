"""Helpers for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI


def coi(
    *argv: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    check: bool = False,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `coi` command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "coi", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        input=input,
        check=check,
        cwd=cwd,
        timeout=600,
    )


class Pty:
    """A coi process on a pseudo-terminal, read and typed into like a person would."""

    def __init__(self, *argv: str) -> None:
        import pty

        self.master, slave = pty.openpty()
        os.set_blocking(self.master, False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coi", *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = b""

    def expect(self, text: str, timeout: float = 120) -> bool:
        """Read until text appears (True) or the time is up (False)."""
        import select
        import time

        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:
                    break
        return text.encode() in self.seen

    def type(self, data: str) -> None:
        os.write(self.master, data.encode())

    def exited(self, timeout: float) -> bool:
        """True once the process has ended (within timeout), reading its output meanwhile."""
        import time

        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.expect("\0never\0", timeout=0.5)
        return self.proc.poll() is not None

    def wait(self, timeout: float = 120) -> int:
        """Wait for the process to end, draining its output; its exit code."""
        import time

        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.expect("\0never\0", timeout=0.5)
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        os.close(self.master)
        return code


def user_config_path() -> Path:
    """The user's coi config file under the test's own HOME, its folder made."""
    path = Path(os.environ["HOME"]) / ".config" / "coi" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def own_prefix(monkeypatch: pytest.MonkeyPatch, tag: str) -> str:
    """A container-name prefix of this test's own (COI_CONTAINER_PREFIX), so what it
    launches is told apart from every other test's; returned too."""
    prefix = f"{tag}{uuid.uuid4().hex[:5]}-"
    monkeypatch.setenv("COI_CONTAINER_PREFIX", prefix)
    return prefix


def ours(incus: IncusAPI, prefix: str) -> list[str]:
    """The instances whose names carry this prefix."""
    return [n for n in incus.instance_names() if n.startswith(prefix)]


NONROOT_VENV = Path(os.environ.get("COI_NONROOT_VENV", "/opt/coi-nonroot-venv"))


def coi_as(
    user: str,
    *argv: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    venv: Path = NONROOT_VENV,
    command: tuple[str, ...] = ("coi",),
) -> subprocess.CompletedProcess[str]:
    """Run `coi` (or another command of the venv's PATH) as a non-root user, the way that
    user would: an empty environment but HOME, PATH (the venv on /usr/bin/python3 first)
    and what env adds. The test itself stays root, for setup and inspection."""
    import pwd

    home = pwd.getpwnam(user).pw_dir
    plain = {"HOME": home, "PATH": f"{venv}/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    extra = [f"{k}={v}" for k, v in {**plain, **(env or {})}.items()]
    return subprocess.run(
        ["runuser", "-u", user, "--", "env", "-i", "-C", str(cwd or home), *extra, *command, *argv],
        capture_output=True,
        text=True,
        timeout=600,
    )


def coi_as_popen(
    user: str,
    *argv: str,
    env: dict[str, str] | None = None,
    venv: Path = NONROOT_VENV,
) -> subprocess.Popen[bytes]:
    """`coi_as`, started and not waited for (stdout and stderr piped): a session that must
    be running while the test does something else as that user."""
    import pwd

    home = pwd.getpwnam(user).pw_dir
    plain = {"HOME": home, "PATH": f"{venv}/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    extra = [f"{k}={v}" for k, v in {**plain, **(env or {})}.items()]
    return subprocess.Popen(
        ["runuser", "-u", user, "--", "env", "-i", "-C", home, *extra, "coi", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

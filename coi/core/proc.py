"""The one helper that runs host commands; failures carry argv, code and output."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coi.core.errors import CoiError, CommandFailed


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv, capture text output; raise CommandFailed on a non-zero exit if check."""
    done: subprocess.CompletedProcess[str] = _run(
        list(argv), input=input, env=env, timeout=timeout, text=True
    )
    if check and done.returncode != 0:
        raise CommandFailed(list(argv), done.returncode, done.stdout, done.stderr)
    return done


def _run(
    args: list[str], *, env: Mapping[str, str] | None, timeout: float | None, **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """subprocess.run with output captured; a missing program or a timeout is a CoiError."""
    full_env = None if env is None else {**os.environ, **env}
    try:
        return subprocess.run(args, env=full_env, capture_output=True, timeout=timeout, **kwargs)
    except FileNotFoundError as exc:
        raise CoiError(f"`{args[0]}` is not installed: run `coi setup`") from exc
    except subprocess.TimeoutExpired as exc:
        raise CoiError(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from exc


def ok(argv: Sequence[str], timeout: float | None = 30) -> bool:
    """True when argv runs and exits 0."""
    try:
        return run(argv, check=False, timeout=timeout).returncode == 0
    except CoiError:
        return False


def log_tail(path: Path, lines: int) -> str:
    """The last lines of a command's log joined on one line, or "" if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


def run_bytes(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float | None = None,
) -> bytes:
    """Run argv on bytes (file names need not be UTF-8); its stdout, or CommandFailed."""
    done = _run(list(argv), env=env, timeout=timeout, cwd=cwd, input=input)
    if done.returncode != 0:
        out, err = (s.decode(errors="replace") for s in (done.stdout, done.stderr))
        raise CommandFailed(list(argv), done.returncode, out, err)
    stdout: bytes = done.stdout
    return stdout


def runs(pid: object, *words: bytes) -> bool:
    """Whether pid is a live process (not a zombie) whose command line holds each of words:
    a pid a record kept is checked to still be the process it named, not a reused pid."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and all(word in argv for word in words)

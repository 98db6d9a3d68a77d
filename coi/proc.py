"""The one helper that runs host commands; failures carry argv, code and output."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from coi.errors import CoiError, CommandFailed


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv, capture text output; raise CommandFailed on a non-zero exit if check."""
    args = list(argv)
    full_env = None if env is None else {**os.environ, **env}
    try:
        done = subprocess.run(
            args, input=input, env=full_env, capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise CoiError(f"`{args[0]}` is not installed: run `coi setup`") from exc
    except subprocess.TimeoutExpired as exc:
        raise CoiError(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        raise CommandFailed(args, done.returncode, done.stdout, done.stderr)
    return done


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
    args = list(argv)
    full_env = None if env is None else {**os.environ, **env}
    try:
        done = subprocess.run(
            args, cwd=cwd, env=full_env, input=input, capture_output=True, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise CoiError(f"`{args[0]}` is not installed: install it and try again") from exc
    except subprocess.TimeoutExpired as exc:
        raise CoiError(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        out, err = (s.decode(errors="replace") for s in (done.stdout, done.stderr))
        raise CommandFailed(args, done.returncode, out, err)
    return done.stdout

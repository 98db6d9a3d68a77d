"""Helpers for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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

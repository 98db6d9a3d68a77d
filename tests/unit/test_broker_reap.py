"""A credential broker that died on its own before coi stops it is collected, not left a
zombie until coi exits (coi/broker/process.py `stop`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coi.broker import process


def test_a_broker_that_died_early_is_reaped_by_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COI_HOME", str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    monkeypatch.setitem(process._children, child.pid, child)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # dead, not collected: a zombie
        with open(f"/proc/{child.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    process.stop("coi-gone-1")
    assert child.pid not in process._children
    assert child.returncode == 0
    assert not os.path.exists(f"/proc/{child.pid}")

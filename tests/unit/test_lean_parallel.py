"""What 8 parallel `coi run`s on one workspace met: each prunes the workspace's automatic
checkpoints, and a checkpoint another session removed first is not an error."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from coi.workspace import checkpoints


def test_a_checkpoint_pruned_by_a_parallel_session_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "file").write_text("x\n")
    for n in range(3):
        checkpoints.before_session(workspace, f"s{n}", keep=5, max_size=10**6)
    real = shutil.rmtree

    def raced(path: Any, *args: Any, **kwargs: Any) -> None:
        real(path)  # the other session's prune got there first
        real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoints.shutil, "rmtree", raced)
    gone = checkpoints.prune(workspace, 1, named=checkpoints.AUTO)
    assert len(gone) == 2
    assert len(checkpoints.all_of(workspace)) == 1

"""`coi checkpoint`, `coi diff` and `coi rollback` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def coi(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coi", *argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_checkpoint_diff_rollback_and_undo(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("original\n")
    (tmp_path / "gone.txt").write_text("will be deleted\n")
    made = coi("checkpoint", "start", "-m", "before the agent", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    (tmp_path / "gone.txt").unlink()
    (tmp_path / "keep.txt").write_text("rewritten\n")
    changed = coi("diff", "--format", "json", cwd=tmp_path)
    assert json.loads(changed.stdout)["changes"] == [
        {"status": "D", "path": "gone.txt"},
        {"status": "M", "path": "keep.txt"},
    ]
    assert coi("rollback", cwd=tmp_path).returncode == 0
    assert (tmp_path / "gone.txt").read_text() == "will be deleted\n"
    assert (tmp_path / "keep.txt").read_text() == "original\n"
    listed = json.loads(coi("checkpoint", "list", "--format", "json", cwd=tmp_path).stdout)
    assert [c["id"].split("-", 1)[1] for c in listed] == ["before-rollback", "start"]
    assert coi("rollback", listed[0]["id"], cwd=tmp_path).returncode == 0
    assert not (tmp_path / "gone.txt").exists()
    assert (tmp_path / "keep.txt").read_text() == "rewritten\n"
    assert coi("checkpoint", "prune", "--keep", "1", cwd=tmp_path).returncode == 0
    assert len(json.loads(coi("checkpoint", "list", "--format", "json", cwd=tmp_path).stdout)) == 1


def test_mistakes_are_one_line(tmp_path: Path) -> None:
    nothing = coi("rollback", cwd=tmp_path)
    assert nothing.returncode == 2 and "no checkpoint" in nothing.stderr
    bad = coi("checkpoint", "bad/name", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1

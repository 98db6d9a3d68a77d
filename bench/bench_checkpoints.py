"""A checkpoint of a 1 GB git workspace with 20,000 files, against `git stash create` and a
plain copy, measured in the same run: wall time and the extra disk each leaves behind.

COI_BENCH_CHECKPOINT_MB and COI_BENCH_CHECKPOINT_FILES shrink it for a quick look.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coi.workspace import checkpoints

TOTAL_MB = int(os.environ.get("COI_BENCH_CHECKPOINT_MB", "1024"))
FILES = int(os.environ.get("COI_BENCH_CHECKPOINT_FILES", "20000"))
GIT = ["git", "-c", "user.name=b", "-c", "user.email=b@b"]


def du(path: Path) -> int:
    """Bytes on disk under path."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def make_workspace(root: Path) -> Path:
    """FILES files adding up to TOTAL_MB (20 large ones carry most bytes), committed, then
    a tenth of them changed and 500 untracked ones added, as after an agent's session."""
    ws = root / "ws"
    ws.mkdir()
    big = 20
    big_size = TOTAL_MB * 2**20 * 9 // 10 // big
    small_size = max(1, TOTAL_MB * 2**20 // 10 // max(1, FILES - big))
    for i in range(FILES):
        folder = ws / f"d{i % 100:02d}"
        folder.mkdir(exist_ok=True)
        size = big_size if i < big else small_size
        (folder / f"f{i}.bin").write_bytes(os.urandom(size))
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=ws, check=True)
    subprocess.run([*GIT, "commit", "-qm", "base"], cwd=ws, check=True)
    for i in range(0, FILES, 10):
        path = ws / f"d{i % 100:02d}" / f"f{i}.bin"
        if i >= big:
            path.write_bytes(os.urandom(small_size))
    for i in range(500):
        (ws / f"new{i}.txt").write_text(f"untracked {i}\n")
    return ws


def timed(step: object) -> float:
    start = time.perf_counter()
    step()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="coi-bench-cp-", dir="/var/tmp") as folder:
        root = Path(folder)
        os.environ["COI_HOME"] = str(root / "coi-home")
        print(f"workspace: {FILES} files, {TOTAL_MB} MB (making it...)", flush=True)
        ws = make_workspace(root)
        # each method gets its own identical copy, so none finds the others' objects
        mine, theirs = root / "ws-coi", root / "ws-stash"
        for twin in (mine, theirs):
            subprocess.run(["cp", "-a", str(ws), str(twin)], check=True)
        disk0 = du(mine / ".git")
        t_coi = timed(lambda: checkpoints.create(mine, "bench"))
        disk_coi = du(mine / ".git") - disk0
        disk1 = du(theirs / ".git")
        stash = [*GIT, "stash", "create"]
        t_stash = timed(lambda: subprocess.run(stash, cwd=theirs, check=True, capture_output=True))
        disk_stash = du(theirs / ".git") - disk1
        copy = root / "copy"
        t_copy = timed(lambda: shutil.copytree(ws, copy, symlinks=True))
        disk_copy = du(copy)
        print(f"coi checkpoint:   {t_coi:7.2f} s, {disk_coi / 2**20:8.1f} MiB more in .git "
              "(untracked files included)")  # fmt: skip
        print(f"git stash create: {t_stash:7.2f} s, {disk_stash / 2**20:8.1f} MiB more in .git "
              "(tracked files only: untracked ones are not saved)")  # fmt: skip
        print(f"plain copy:       {t_copy:7.2f} s, {disk_copy / 2**20:8.1f} MiB")
        print(f"ratio coi/stash: {t_coi / t_stash:.2f}; coi/copy: {t_coi / t_copy:.2f}")


if __name__ == "__main__":
    main()

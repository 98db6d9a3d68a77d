"""What network isolation costs a launch: restricted and allowlist against open, same run.

Launches through the one launch path in a throwaway project (create + rules + start,
not boot), then times the rule change alone. Run as root, or as a member of the Incus
admin group once `sudo coi setup` installed the helper.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import median_of, report

from coi.core.errors import CoiError
from coi.images.base import ensure_base
from coi.incus.adapter import Incus, connect
from coi.launch import executor
from coi.launch.spec import LaunchSpec
from coi.network import enforce, policy
from coi.testing import create_project, drop_project

RUNS = int(os.environ.get("COI_BENCH_RUNS", "5"))


def _project() -> str:
    name = f"coibench-net-{uuid.uuid4().hex[:6]}"
    create_project(name, "coi benchmark (throwaway)")
    return name


def main() -> None:
    project = _project()
    incus = connect(project=project)
    made: list[str] = []
    try:
        executor.prepare(incus, "coi", "coibr0")
        image = ensure_base(incus, "debian/12", log=lambda line: None)

        def launch_one(mode: str, extra: dict[str, str] | None = None) -> None:
            name = f"b-{mode[:4]}-{uuid.uuid4().hex[:6]}"
            made.append(name)
            spec = LaunchSpec(name=name, image=image, network_mode=mode, extra_config=extra or {})
            executor.create(incus, spec)

        allow = policy.policy_keys(["192.0.2.10", "192.0.2.11:443"], "", 0)
        open_s = median_of(lambda: launch_one("open"), RUNS)
        restricted_s = median_of(lambda: launch_one("restricted"), RUNS)
        allowlist_s = median_of(lambda: launch_one("allowlist", allow), RUNS)
        report("launch restricted vs open", restricted_s, open_s, "within 1.3x")
        report("launch allowlist vs open", allowlist_s, open_s, "within 1.3x")
        rules_s = median_of(lambda: enforce.apply_rules(incus, made[-1]), RUNS * 2)
        print(f"re-apply one container's rules: {rules_s * 1000:.0f} ms")
        for name in list(made):
            start = time.perf_counter()
            executor.teardown(incus, name)
            made.remove(name)
        took = (time.perf_counter() - start) * 1000
        print(f"teardown of the last container (delete + rules): {took:.0f} ms")
    finally:
        for name in made:
            with contextlib.suppress(CoiError):
                executor.teardown(incus, name)
        _drop(incus, project)


def _drop(incus: Incus, project: str) -> None:
    with contextlib.suppress(CoiError):
        drop_project(project)


if __name__ == "__main__":
    main()

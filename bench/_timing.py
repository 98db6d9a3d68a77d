"""Small helpers shared by the benchmarks: medians of repeated wall times, and the raw
`incus` cycle coi run is measured against."""

from __future__ import annotations

import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence


def wall(argv: Sequence[str], runs: int = 15, **kwargs: object) -> float:
    """Median wall time in seconds of running argv `runs` times."""
    return median_of(
        lambda: subprocess.run(list(argv), capture_output=True, check=True, **kwargs), runs
    )  # type: ignore[call-overload]


def median_of(step: Callable[[], object], runs: int) -> float:
    """Median wall time of calling step `runs` times (one warm-up call first)."""
    step()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def report(label: str, ours: float, baseline: float, goal: str) -> None:
    """One line: both times, their ratio and the goal (reported, never asserted)."""
    print(
        f"{label}: coi {ours * 1000:.0f} ms, baseline {baseline * 1000:.0f} ms, "
        f"ratio {ours / baseline:.2f} (goal: {goal})"
    )


def incus(*argv: str) -> None:
    """Run the incus CLI, quietly; a failure raises."""
    subprocess.run(["incus", *argv], check=True, capture_output=True)


def raw_cycle(image: str) -> None:
    """What `coi run -- true` does, with the raw CLI: launch with coi's profile, exec, delete."""
    name = f"bench-raw-{uuid.uuid4().hex[:6]}"
    incus("launch", image, name, "--profile", "coi-base")
    incus("exec", name, "--", "true")
    incus("delete", "--force", name)

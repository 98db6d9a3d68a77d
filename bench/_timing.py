"""Small timing helpers shared by the benchmarks: medians of repeated wall times."""

from __future__ import annotations

import statistics
import subprocess
import time
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

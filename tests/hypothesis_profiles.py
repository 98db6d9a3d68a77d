"""Hypothesis profiles for a loaded 2-core machine: `dev` (the default) and `ci`.

HYPOTHESIS_PROFILE names one; without it, CI=true picks `ci`. `pytest
--hypothesis-profile NAME` still overrides both.

Both drop the checks that read the wall clock, as no test here may: the deadline (a
time limit per example) and HealthCheck.too_slow (input generation timed against about
a second). Other engineers' tests, image builds and Incus share this machine's two
cores; with them (stress-ng --cpu 8 stood in) tests/strategies.py's claude_settings
made five inputs in over a second and test_broker_session failed on time alone. A hang
is the per-test timeout's job (pytest-timeout, pyproject.toml). The health checks that
count (filter_too_much, data_too_large, ...) stay on: they judge a strategy, not the
load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hypothesis import HealthCheck, settings

TIMING = [HealthCheck.too_slow]  # the one health check that reads the clock

settings.register_profile("dev", deadline=None, suppress_health_check=TIMING)
# A fresh clone for each CI run: no example database to keep; a failure prints the blob
# that replays it (@reproduce_failure) on a developer's machine.
settings.register_profile(
    "ci", deadline=None, suppress_health_check=TIMING, database=None, print_blob=True
)


def chosen(environ: Mapping[str, str]) -> str:
    """The profile the environment asks for: HYPOTHESIS_PROFILE, else `ci` when CI is
    true, else `dev`."""
    named = environ.get("HYPOTHESIS_PROFILE", "").strip()
    if named:
        return named
    return "ci" if environ.get("CI", "").strip().lower() in ("1", "true", "yes") else "dev"


def load() -> str:
    """Load the profile the environment asks for; its name."""
    name = chosen(os.environ)
    settings.load_profile(name)
    return name

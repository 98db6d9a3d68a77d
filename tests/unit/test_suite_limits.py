"""The suite's own limits: a time limit per test, hypothesis profiles that read no clock."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests import hypothesis_profiles


def test_every_test_has_a_time_limit(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert float(pytestconfig.getini("timeout")) > 0


@pytest.mark.parametrize(
    ("environ", "profile"),
    [
        ({}, "dev"),
        ({"CI": "true"}, "ci"),
        ({"CI": "false"}, "dev"),
        ({"CI": "true", "HYPOTHESIS_PROFILE": "dev"}, "dev"),
        ({"HYPOTHESIS_PROFILE": "ci"}, "ci"),
    ],
)
def test_the_environment_chooses_the_profile(environ: dict[str, str], profile: str) -> None:
    assert hypothesis_profiles.chosen(environ) == profile


@pytest.mark.parametrize("name", ["dev", "ci"])
def test_no_profile_times_an_example_or_its_generation(name: str) -> None:
    profile = settings.get_profile(name)
    assert profile.deadline is None
    assert HealthCheck.too_slow in profile.suppress_health_check
    assert HealthCheck.data_too_large not in profile.suppress_health_check

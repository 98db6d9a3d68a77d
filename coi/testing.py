"""Helpers for tests and benchmarks: throwaway Incus projects and their cleanup.

This sits at the top of the house (it uses the launch path's teardown), so nothing in
coi's own commands imports it.
"""

from __future__ import annotations

import time
from contextlib import suppress

from coi.core.errors import CoiError
from coi.incus.adapter import connect
from coi.launch import executor


def create_project(name: str, description: str = "") -> None:
    """A throwaway project, as tests and benchmarks make them: it shares the default
    project's images (imported once) and keeps its own profiles (so they get applied)."""
    config = {
        "features.images": "false",
        "features.profiles": "true",
        "features.storage.volumes": "false",
        "features.networks": "false",
    }
    connect().create_project(name, config, description)


def drop_project(name: str) -> None:
    """Delete a throwaway project and what is in it (instances, profiles), as tests and
    benchmarks make them; an instance caught mid-shutdown is tried again, bounded."""
    scoped = connect(project=name)
    for _ in range(20):
        for inst in scoped.instance_names():
            with suppress(CoiError):
                executor.teardown(scoped, inst)
        if not scoped.instance_names():
            break
        time.sleep(0.5)
    for profile in scoped.profile_names():
        if profile != "default":
            scoped.delete_profile(profile)
    connect().delete_project(name)

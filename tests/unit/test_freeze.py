"""coi/sessions/freeze.py with the fake daemon: the workspace's running containers are
frozen for the block and thawed after it, whatever happened in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from coi.core.errors import CoiError
from coi.sessions import freeze
from tests.fakes import FakeIncus


def test_only_the_running_containers_of_the_workspace_are_frozen_then_thawed() -> None:
    incus = FakeIncus()
    ws = Path("/w/project")
    incus.add_instance("a", {freeze.WORKSPACE_KEY: str(ws)})
    incus.add_instance("b", {freeze.WORKSPACE_KEY: str(ws)}, status="Stopped")
    incus.add_instance("c", {freeze.WORKSPACE_KEY: "/w/other"})
    with pytest.raises(RuntimeError), freeze.frozen(incus, ws) as still:
        assert still == ["a"]
        assert incus.instances_by_name["a"]["status"] == "Frozen"
        assert incus.instances_by_name["c"]["status"] == "Running"
        raise RuntimeError("the step failed")
    assert [incus.instances_by_name[n]["status"] for n in "abc"] == [
        "Running", "Stopped", "Running"]  # fmt: skip


def test_a_container_that_cannot_be_frozen_stops_the_step_and_names_itself() -> None:
    class Stuck(FakeIncus):
        def set_state(self, name: str, action: str, *, force: bool = False,
                      timeout: int = -1) -> None:  # fmt: skip
            if action == "freeze" and name == "b":
                raise CoiError("cgroup busy")
            super().set_state(name, action, force=force, timeout=timeout)

    incus = Stuck()
    ws = Path("/w/project")
    for name in "ab":
        incus.add_instance(name, {freeze.WORKSPACE_KEY: str(ws)})
    ran = False
    with pytest.raises(CoiError, match="could not freeze b"), freeze.frozen(incus, ws):
        ran = True
    assert not ran
    assert incus.instances_by_name["a"]["status"] == "Running"  # thawed again

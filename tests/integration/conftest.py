"""Integration fixtures: a real Incus daemon, a throwaway project per run and worker.

Each project shares the default project's images (so the base image is imported
once) and has its own profiles (so profile application is exercised). Everything a
test creates is named per test and removed, even after failures.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator

import pytest

from coi.core.errors import CoiError
from coi.incus.adapter import Incus, connect
from coi.launch import executor, spec
from coi.testing import create_project, drop_project

POOL, NETWORK = "coi", "coibr0"
BASE = os.environ.get("COI_TEST_BASE", "debian/12")
RUN_ID = uuid.uuid4().hex[:6]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


def _project_name(worker: str) -> str:
    return f"coitest-{RUN_ID}-{worker}"


@pytest.fixture(scope="session")
def project(worker_id: str) -> Iterator[str]:
    """A throwaway Incus project for this run and xdist worker."""
    name = _project_name(worker_id)
    create_project(name, "coi integration tests (throwaway)")
    try:
        yield name
    finally:
        drop_project(name)


@pytest.fixture(scope="session")
def pool_and_network() -> tuple[str, str]:
    return POOL, NETWORK


@pytest.fixture(scope="session")
def session_incus(project: str) -> Incus:
    incus = connect(project=project)
    executor.prepare(incus, POOL, NETWORK)
    return incus


@pytest.fixture
def incus(session_incus: Incus, project: str, monkeypatch: pytest.MonkeyPatch) -> Incus:
    """The project's connection; coi subprocesses of this test use the same project."""
    monkeypatch.setenv("COI_INCUS_PROJECT", project)
    return session_incus


@pytest.fixture(scope="session")
def base_image(session_incus: Incus) -> str:
    """The local Debian base image alias (built once, shared through the default project)."""
    from coi.images.base import ensure_base

    return ensure_base(session_incus, BASE, log=lambda line: None)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A unique instance name for this test."""
    stem = request.node.name.replace("_", "-").replace("[", "-").replace("]", "")[:30]
    return f"t-{stem.strip('-')}-{uuid.uuid4().hex[:5]}".lower()


@pytest.fixture
def cleanup(session_incus: Incus) -> Iterator[list[str]]:
    """Instance names to delete after the test, whatever happened."""
    names: list[str] = []
    yield names
    for n in names:
        with contextlib.suppress(CoiError):
            session_incus.delete_instance(n, force=True)
        executor.release_workspace(n)  # the locked workspace view and its placeholders


SESSION_IMAGE_SCRIPT = """set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends tmux >/dev/null
useradd --create-home --uid 1000 --shell /bin/bash code
echo 'code ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/code
chmod 0440 /etc/sudoers.d/code
"""


@pytest.fixture(scope="session")
def session_image(session_incus: Incus, base_image: str, worker_id: str) -> Iterator[str]:
    """A small image with the `code` user and tmux: enough for session tests, fast to build."""
    alias = f"coitest-sess-{RUN_ID}-{worker_id}"
    builder = f"build-{RUN_ID}"
    executor.create(
        session_incus, spec.LaunchSpec(name=builder, image=base_image, network_mode="open")
    )
    try:
        for _ in range(100):  # wait (bounded) for the DHCP lease
            net = session_incus.state(builder).get("network", {}).get("eth0", {})
            if any(a.get("family") == "inet" for a in net.get("addresses", [])):
                break
            time.sleep(0.2)
        result = session_incus.execute(builder, ["sh", "-c", SESSION_IMAGE_SCRIPT])
        assert result.exit_code == 0, result.stderr
        session_incus.set_state(builder, "stop", timeout=30)
        op = session_incus.call(
            "POST",
            "images",
            {
                "source": {"type": "instance", "name": builder},
                "aliases": [{"name": alias}],
                "properties": {"description": "coi session test image"},
            },
        )
        fingerprint = op["metadata"]["fingerprint"]
    finally:
        session_incus.delete_instance(builder, force=True)
    try:
        yield alias
    finally:
        session_incus.delete_image(fingerprint)

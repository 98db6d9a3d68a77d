"""Snapshots of a persistent container: restore brings back a package installed before the
snapshot and removes one installed after it (local .deb files: no network needed)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coi.incus.adapter import Incus
from tests.integration.helpers import coi


def tiny_deb(folder: Path, package: str) -> Path:
    """A package holding one file, /usr/share/<package>/marker."""
    root = folder / package
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: coi tests <t@localhost>\nDescription: coi snapshot test package\n"
    )
    (root / "usr" / "share" / package).mkdir(parents=True)
    (root / "usr" / "share" / package / "marker").write_text(f"{package}\n")
    deb = folder / f"{package}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True,
                   capture_output=True)  # fmt: skip
    return deb


def installed(name: str, package: str) -> bool:
    return coi("container", "exec", name, "--", "dpkg", "-s", package).returncode == 0


def install(name: str, deb: Path) -> None:
    assert coi("file", "push", str(deb), f"{name}:/tmp/{deb.name}").returncode == 0
    done = coi("container", "exec", name, "--", "dpkg", "-i", f"/tmp/{deb.name}")
    assert done.returncode == 0, done.stderr


@pytest.fixture
def persistent(incus: Incus, base_image: str) -> Iterator[str]:
    name = f"t-snap-{uuid.uuid4().hex[:6]}"
    assert coi("--network", "open", "container", "launch", base_image, name).returncode == 0
    try:
        yield name
    finally:
        coi("container", "delete", "--force", name)


def test_snapshots_need_a_persistent_container(persistent: str) -> None:
    refused = coi("snapshot", "create", persistent)
    assert refused.returncode == 2 and "coi persist" in refused.stderr


def test_restore_brings_back_the_packages_of_the_snapshot(persistent: str, tmp_path: Path) -> None:
    before, after = tiny_deb(tmp_path, "coi-snap-before"), tiny_deb(tmp_path, "coi-snap-after")
    assert coi("persist", persistent).returncode == 0
    install(persistent, before)
    made = coi("snapshot", "create", persistent, "s1")
    assert made.returncode == 0, made.stderr
    assert (
        coi("container", "exec", persistent, "--", "dpkg", "-r", "coi-snap-before").returncode == 0
    )
    install(persistent, after)
    assert installed(persistent, "coi-snap-after") and not installed(persistent, "coi-snap-before")
    restored = coi("snapshot", "restore", persistent)  # the newest: s1
    assert restored.returncode == 0, restored.stderr
    assert coi("container", "running", persistent).returncode == 0
    assert installed(persistent, "coi-snap-before")
    assert not installed(persistent, "coi-snap-after")
    listed = coi("snapshot", "list", persistent, "--format", "json")
    assert '"s1"' in listed.stdout
    assert coi("snapshot", "delete", persistent, "s1").returncode == 0
    assert '"s1"' not in coi("snapshot", "list", persistent, "--format", "json").stdout

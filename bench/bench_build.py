"""The coi image: full build time, image size, and the time of an up-to-date `coi build`.

Builds the real image at the shipped pins under an alias of its own (never `coi`) in a
throwaway project, then times `coi build` again (nothing to do) against `incus image show`
of the same alias in the same run. Reported, never asserted. Goals: image under 1.5 GB,
up-to-date check under 2 s. Run as root on a host where `coi setup` ran.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import median_of, report, wall

from coi.core.errors import CoiError
from coi.incus.adapter import Incus, connect
from coi.launch import executor, spec
from coi.testing import create_project, drop_project

RUNS = int(os.environ.get("COI_BENCH_RUNS", "5"))
NETWORK = os.environ.get("COI_BENCH_NETWORK", "coibr0")
POOL = os.environ.get("COI_BENCH_POOL", "coi")


def _project() -> str:
    name = f"coitest-img-bench-{uuid.uuid4().hex[:6]}"
    create_project(name, "coi benchmark (throwaway)")
    return name


def _env(incus: Incus, folder: Path) -> dict[str, str]:
    """The bridge's own dnsmasq as resolver and probe: the bench contacts no public resolver."""
    cidr = incus.get(f"networks/{NETWORK}")["config"]["ipv4.address"]
    gateway = str(ipaddress.ip_interface(cidr).ip)
    config = folder / "config.toml"
    config.write_text(
        f'[build]\ndns_resolvers = ["{gateway}"]\nconnectivity_probe = "{gateway}"\n'
        f'[incus]\nnetwork = "{NETWORK}"\nstorage_pool = "{POOL}"\n'
    )
    return {
        **os.environ,
        "COI_CONFIG": str(config),
        "COI_HOME": str(folder / "home"),
        "COI_INCUS_PROJECT": incus.project,
    }


def _rootfs_bytes(incus: Incus, alias: str) -> int:
    """The unpacked size of the image: `du` of / in a container made from it."""
    name = f"b-size-{uuid.uuid4().hex[:6]}"
    executor.create(incus, spec.LaunchSpec(name=name, image=alias, network_mode="open"))
    try:
        out = incus.execute(name, ["du", "-sxb", "/"]).stdout
        return int(out.split()[0])
    finally:
        executor.teardown(incus, name)


def main() -> None:
    project = _project()
    incus = connect(project=project)
    alias = f"coitest-img-bench-{uuid.uuid4().hex[:6]}"
    try:
        executor.prepare(incus, POOL, NETWORK)
        with tempfile.TemporaryDirectory() as folder:
            env = _env(incus, Path(folder))
            argv = [sys.executable, "-m", "coi", "build", "--alias", alias]
            started = time.perf_counter()
            done = subprocess.run(
                [*argv, "--format", "json"], env=env, capture_output=True, text=True
            )
            took = time.perf_counter() - started
            if done.returncode != 0:
                sys.exit(f"build failed: {done.stderr.strip().splitlines()[-1]}")
            result = json.loads(done.stdout)
            print(f"full build of the coi image: {took:.0f} s")
            for step in result["steps"]:
                print(f"  {step['seconds']:7.1f} s  {step['name']}")
            size = result["size"]
            print(
                f"image size (compressed, as stored): {size / 2**20:.0f} MiB (goal: under 1.5 GB)"
            )
            print(f"rootfs size (unpacked): {_rootfs_bytes(incus, alias) / 2**20:.0f} MiB")
            ours = median_of(
                lambda: subprocess.run(argv, env=env, capture_output=True, check=True), RUNS
            )
            raw = wall(["incus", "image", "show", alias], runs=RUNS)
            report("up-to-date `coi build` vs `incus image show`", ours, raw, "under 2 s")
    finally:
        for image in incus.images():
            if any(a["name"].startswith(alias) for a in image.get("aliases") or []):
                with contextlib.suppress(CoiError):
                    incus.delete_image(image["fingerprint"])
        with contextlib.suppress(CoiError):
            drop_project(project)


if __name__ == "__main__":
    main()

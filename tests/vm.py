"""`nox -s integration -- --vm`: run the integration suite inside a throwaway Incus VM.

GitHub's runners have KVM; there the suite runs in a VM with its own nested Incus,
so the runner's network and firewall stay untouched. Where VMs cannot run (no KVM or
vhost_vsock, as on the project's own machines) it stops at once and says why.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

REQUIRED = {"/dev/kvm": "KVM (hardware virtualisation)", "/dev/vhost-vsock": "vhost_vsock"}


def missing(exists: dict[str, bool]) -> list[str]:
    """What the host lacks for an Incus VM, given which device nodes exist."""
    return [what for path, what in REQUIRED.items() if not exists.get(path, False)]


def vm_config(
    name: str,
    image: str = "images:debian/12",
    cpus: int = 2,
    memory: str = "8GiB",
    disk: str = "30GiB",
) -> list[str]:
    """The `incus launch` argv of the test VM: nested Incus needs nesting and room."""
    return [
        "incus",
        "launch",
        image,
        name,
        "--vm",
        "-c",
        f"limits.cpu={cpus}",
        "-c",
        f"limits.memory={memory}",
        "-c",
        "security.nesting=true",
        "-c",
        "security.secureboot=false",
        "-d",
        f"root,size={disk}",
    ]


def inside(name: str, script: str) -> list[str]:
    """argv running a shell script as root inside the VM."""
    return ["incus", "exec", name, "--", "bash", "-lc", script]


SUITE = """set -e
apt-get update -qq && apt-get install -y -qq python3-venv python3-pip git >/dev/null
python3 -m venv /opt/nox && /opt/nox/bin/pip install -q nox
cd /src && /opt/nox/bin/nox -s integration -- {args}
"""


def main(argv: list[str]) -> int:
    lacking = missing({p: os.path.exists(p) for p in REQUIRED})
    if lacking:
        print(
            f"--vm cannot run here: this host has no {' and no '.join(lacking)}; "
            "run `nox -s integration` without --vm",
            file=sys.stderr,
        )
        return 1
    name = f"coi-ci-vm-{uuid.uuid4().hex[:6]}"
    subprocess.run(vm_config(name), check=True)
    try:
        for _ in range(120):  # the agent needs a moment after boot
            if subprocess.run(inside(name, "true"), capture_output=True).returncode == 0:
                break
            time.sleep(2)
        repo = Path(__file__).resolve().parent.parent
        tar = subprocess.Popen(
            ["tar", "-C", str(repo), "--exclude=.nox", "-cf", "-", "."], stdout=subprocess.PIPE
        )
        subprocess.run(
            inside(name, "mkdir -p /src && tar -C /src -xf -"), stdin=tar.stdout, check=True
        )
        tar.wait()
        script = SUITE.format(args=shlex.join(argv))
        return subprocess.run(inside(name, script)).returncode
    finally:
        subprocess.run(["incus", "delete", "--force", name], check=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The one launch path against a real daemon: config read back, ownership, slot races."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from coi.boundary import protect
from coi.core import slots
from coi.incus.adapter import Incus
from coi.launch import executor
from coi.launch.spec import LaunchSpec, owner_uid


def test_launch_config_is_what_incus_holds(
    incus: Incus, base_image: str, name: str, cleanup: list[str], tmp_path: Path
) -> None:
    spec = LaunchSpec(
        name=name,
        image=base_image,
        workspace=tmp_path,
        workspace_uid=1000,
        slot=3,
        tool="shell",
        session="s-1",
        environment={"GREETING": "a,b=c"},
        limits={"processes": "500"},
    )
    cleanup.append(name)
    executor.create(incus, spec)
    inst = incus.instance(name)
    config, devices = inst["config"], inst["devices"]
    assert inst["profiles"] == ["coi-base"]
    assert config["user.coi.workspace"] == str(tmp_path)
    assert config["user.coi.slot"] == "3"
    assert config["user.coi.tool"] == "shell"
    assert config["user.coi.network_mode"] == "restricted"
    assert config["environment.GREETING"] == "a,b=c"
    assert config["limits.processes"] == "500"
    # the locked view of the workspace (coi/boundary/protect_host.py)
    assert devices["workspace"] == {
        "type": "disk",
        "source": str(protect.view_path(name)),
        "path": "/workspace",
        "recursive": "true",
    }
    assert config["raw.idmap"] == "both 1000 1000"  # mapped explicitly, never shifted
    expanded = inst["expanded_config"]
    assert expanded["security.nesting"] == "true"
    assert expanded.get("security.privileged", "false") == "false"
    assert inst["expanded_devices"]["eth0"]["security.ipv4_filtering"] == "true"
    assert incus.state(name)["status"] == "Running"


def test_workspace_owned_by_another_uid(
    incus: Incus, base_image: str, name: str, cleanup: list[str], tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to uid 1234 needs root")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    os.chown(workspace, 1234, 1234)
    spec = LaunchSpec(
        name=name,
        image=base_image,
        workspace=workspace,
        workspace_uid=owner_uid(workspace),
    )
    cleanup.append(name)
    executor.create(incus, spec)
    assert incus.instance(name)["config"]["raw.idmap"] == "both 1234 1000"
    result = incus.execute(
        name, ["sh", "-c", "touch /workspace/made-inside && id -u"], user=1000, group=1000
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "1000"
    made = (workspace / "made-inside").stat()
    assert (made.st_uid, made.st_gid) == (1234, 1234)


ALLOCATE = """
import sys
from pathlib import Path
from coi.launch import executor
from coi.launch.spec import LaunchSpec
from coi.incus.adapter import connect
incus = connect(project=sys.argv[1])
ws = Path(sys.argv[2])
spec = executor.create_in_slot(
    incus, ws, lambda n, s: LaunchSpec(name=n, image=sys.argv[3], workspace=ws,
                                       workspace_uid=0, slot=s),
    limit=10, start=False)
incus.instance(spec.name)  # the creation goes on after the record: see it through
print(spec.name)
"""


def test_parallel_processes_take_distinct_slots(
    incus: Incus,
    project: str,
    base_image: str,
    tmp_path: Path,
    cleanup: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = f"p{uuid.uuid4().hex[:4]}-"
    monkeypatch.setenv("COI_CONTAINER_PREFIX", prefix)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", ALLOCATE, project, str(tmp_path), base_image],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    names = []
    for proc in workers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        names.append(out.strip())
    cleanup.extend(names)
    assert len(set(names)) == 8
    taken = slots.slots_in_use(incus.instance_names(), tmp_path, prefix)
    assert taken == set(range(1, 9))


def test_failed_start_leaves_nothing(
    incus: Incus, base_image: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coi.core.faults import InjectedFault

    monkeypatch.setenv("COI_FAULT", "start")
    with pytest.raises(InjectedFault):
        executor.create(incus, LaunchSpec(name=name, image=base_image))
    assert not incus.exists(f"instances/{name}")

"""The Incus adapter against a real daemon: launch, exec, files, errors, HTTPS remote."""

from __future__ import annotations

import pytest

from coi.core.errors import IncusError, NotFound
from coi.incus.adapter import Endpoint, Incus
from coi.launch import executor, spec


def test_launch_exec_delete(incus: Incus, base_image: str, name: str) -> None:
    executor.create(incus, spec.LaunchSpec(name=name, image=base_image))
    try:
        streamed: list[str] = []
        result = incus.execute(
            name, ["sh", "-c", "echo out; echo err >&2; exit 3"], on_stdout=streamed.append
        )
        assert result.exit_code == 3
        assert "out" in "".join(streamed)
        assert result.stderr.strip() == "err"
        incus.push_file(name, "/tmp/hello", b"hi there\n", uid=1000, gid=1000, mode=0o600)
        assert incus.pull_file(name, "/tmp/hello") == b"hi there\n"
        owner = incus.execute(name, ["stat", "-c", "%u %a", "/tmp/hello"]).stdout.split()
        assert owner == ["1000", "600"]
    finally:
        incus.delete_instance(name, force=True)
    assert not incus.exists(f"instances/{name}")


def test_missing_instance_is_not_found(incus: Incus) -> None:
    with pytest.raises(NotFound, match="not found"):
        incus.instance("no-such-instance-here")


def test_missing_image_names_it(incus: Incus, name: str) -> None:
    with pytest.raises(IncusError, match="no-such-image"):
        executor.create(incus, spec.LaunchSpec(name=name, image="no-such-image"))
    assert not incus.exists(f"instances/{name}")


def test_daemon_down_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IncusError, match=r"Incus is not running.*coi setup"):
        Incus(Endpoint(str(tmp_path / "nothing.socket")))

"""The real coi image, built once per run under an alias of its own (never `coi`).

What it must show 1: in a container from it, as uid 1000 in /workspace, the tools run and
Docker runs a busybox image made with `docker import`. What it must show 3: what is
installed equals the pins, a second --force build installs the same versions (that second
full build runs when COI_TEST_REBUILD=1, as CI sets it), and the export checks and
re-imports. Resolvers and the connectivity probe point at the test bridge's dnsmasq.

COI_TEST_IMAGE=NAME tests an image built before instead (CI builds `coi`, then runs these
tests on it and ships it); the second build then goes under the tests' own alias.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coi.core.errors import CoiError
from coi.images import pins
from coi.incus.adapter import ExecResult, Incus
from coi.launch import executor
from coi.launch.spec import LaunchSpec, owner_uid
from tests.integration.conftest import NETWORK
from tests.integration.helpers import coi, own_prefix

OWN = f"coitest-img-coi-{uuid.uuid4().hex[:6]}"
GIVEN = os.environ.get("COI_TEST_IMAGE", "")
ALIAS = GIVEN or OWN
PINS = pins.load()


def _env(incus: Incus, folder: Path) -> dict[str, str]:
    gateway = str(
        ipaddress.ip_interface(incus.get(f"networks/{NETWORK}")["config"]["ipv4.address"]).ip
    )
    load = folder / "build.toml"
    load.write_text(f'[build]\ndns_resolvers = ["{gateway}"]\nconnectivity_probe = "{gateway}"\n')
    return {
        "COI_CONFIG": str(load),
        "COI_HOME": str(folder / "home"),
        "COI_INCUS_PROJECT": incus.project,
    }


def _build(env: dict[str, str], alias: str, *extra: str) -> dict[str, Any]:
    done = coi("build", "--alias", alias, "--format", "json", *extra, env=env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def build_env(session_incus: Incus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _env(session_incus, tmp_path_factory.mktemp("coi-image"))


@pytest.fixture(scope="module")
def coi_image(
    session_incus: Incus, base_image: str, build_env: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """The coi image at the shipped pins; every image of the tests' own alias goes afterwards."""
    try:
        if GIVEN:
            record = session_incus.image_alias(GIVEN)
            assert record is not None, f"COI_TEST_IMAGE={GIVEN} names no image"
            props = session_incus.image(record["target"])["properties"]
            yield {"alias": GIVEN, "fingerprint": record["target"], "inputs": props["coi.inputs"]}
        else:
            yield _build(build_env, OWN)
    finally:
        for image in session_incus.images():
            if any(a["name"].startswith(OWN) for a in image.get("aliases") or []):
                with contextlib.suppress(CoiError):
                    session_incus.delete_image(image["fingerprint"])


@pytest.fixture(scope="module")
def session(
    session_incus: Incus, coi_image: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A container from the image with a workspace at /workspace, as a session has."""
    workspace = tmp_path_factory.mktemp("workspace")
    os.chown(workspace, 1000, 1000)  # a user's project folder, as uid 1000 owns it inside
    workspace.chmod(0o755)
    name = f"t-coi-image-{uuid.uuid4().hex[:6]}"
    spec = LaunchSpec(
        name=name,
        image=ALIAS,
        workspace=workspace,
        workspace_uid=owner_uid(workspace),
        network_mode="open",
    )
    executor.create(session_incus, spec)
    try:
        wait_ready(session_incus, name)
        yield name
    finally:
        executor.teardown(session_incus, name)


def wait_ready(incus: Incus, name: str, timeout: float = 90) -> None:
    """Until systemd finished booting (exec fails while the container is starting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(CoiError):
            state = incus.execute(name, ["systemctl", "is-system-running"]).stdout.strip()
            if state in ("running", "degraded"):
                return
        time.sleep(1)
    raise AssertionError(f"{name} did not finish booting in {timeout:.0f} s")


def as_code(incus: Incus, name: str, command: str) -> ExecResult:
    """command in a login shell of uid 1000 (its groups included) in /workspace."""
    return incus.execute(name, ["runuser", "-l", "code", "-c", f"cd /workspace && {command}"])


def test_the_image_records_its_pins_and_a_dated_alias(
    incus: Incus, coi_image: dict[str, Any]
) -> None:
    image = incus.image(coi_image["fingerprint"])
    names = [a["name"] for a in image["aliases"]]
    assert ALIAS in names and any(n.startswith(f"{ALIAS}-") for n in names)
    if not GIVEN:  # tests never touch the user's `coi`
        assert "coi" not in names
    props = image["properties"]
    assert json.loads(props["coi.pins"]) == PINS.to_dict()
    assert props["coi.kind"] == "coi" and props["coi.inputs"] == coi_image["inputs"]


@pytest.mark.parametrize(
    "command",
    [
        "claude --version",
        "node --version",
        "gh --version",
        "tmux -V",
        "sudo -n true",
        "git --version",
    ],
)
def test_tools_run_as_uid_1000_in_the_workspace(incus: Incus, session: str, command: str) -> None:
    """What it must show 1."""
    result = as_code(
        incus, session, f'test "$(id -u)" = 1000 && test "$PWD" = /workspace && {command}'
    )
    assert result.exit_code == 0, result.stdout + result.stderr


def test_docker_runs_an_imported_busybox(incus: Incus, session: str) -> None:
    """What it must show 1: no Docker Hub, the rootfs comes from Debian's busybox-static."""
    installed = incus.execute(
        session,
        [
            "sh",
            "-c",
            "apt-get update -q && apt-get install -y -q --no-install-recommends busybox-static",
        ],
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )
    assert installed.exit_code == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    result = as_code(
        incus,
        session,
        "rm -rf bb && mkdir -p bb/bin && cp /bin/busybox bb/bin/ "
        "&& tar -C bb -c . | docker import - coitest-busybox:1 "
        "&& docker run --rm coitest-busybox:1 /bin/busybox echo hello-from-busybox",
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "hello-from-busybox" in result.stdout


def test_installed_versions_equal_the_pins(
    incus: Incus, session: str, coi_image: dict[str, Any]
) -> None:
    """What it must show 3 (first part): queried inside, not taken from the manifest."""
    assert as_code(incus, session, "node --version").stdout.strip() == f"v{PINS.node}"
    assert as_code(incus, session, "npm --version").stdout.strip() == PINS.npm
    listed = json.loads(as_code(incus, session, "npm ls -g --json --depth=0").stdout)[
        "dependencies"
    ]
    assert listed["@anthropic-ai/claude-code"]["version"] == PINS.tools["claude"]
    assert PINS.tools["claude"] in as_code(incus, session, "claude --version").stdout
    names = " ".join(PINS.apt_names())
    dpkg = incus.execute(
        session, ["sh", "-c", f"dpkg-query -W -f '${{Package}}=${{Version}}\\n' {names}"]
    )
    assert dpkg.exit_code == 0, dpkg.stderr
    found = dict(line.split("=", 1) for line in dpkg.stdout.split())
    assert set(found) == set(PINS.apt_names())
    for name, version in PINS.apt_versions().items():
        assert found[name] == version
    info = json.loads(coi("image", "info", ALIAS, "--format", "json").stdout)
    assert {k: info["dpkg"][k] for k in found} == found
    assert info["tools"]["claude"].startswith(PINS.tools["claude"])


def status(incus: Incus, name: str) -> str:
    """The instance's status; "" while Incus cannot tell (it errs on a stopping container)."""
    with contextlib.suppress(CoiError):
        return str(incus.state(name)["status"])
    return ""


def test_poweroff_by_code_stops_the_container(incus: Incus, coi_image: dict[str, Any]) -> None:
    """The shutdown/poweroff wrappers end a session at once, also when `code` calls them."""
    name = f"t-coi-off-{uuid.uuid4().hex[:6]}"
    executor.create(incus, LaunchSpec(name=name, image=ALIAS, network_mode="open"))
    try:
        wait_ready(incus, name)
        with contextlib.suppress(CoiError):  # the exec may die with the container
            as_code(incus, name, "poweroff")
        deadline = time.monotonic() + 60
        while status(incus, name) != "Stopped" and time.monotonic() < deadline:
            time.sleep(1)
        assert status(incus, name) == "Stopped"
    finally:
        executor.teardown(incus, name)


@pytest.mark.skipif(
    not os.environ.get("COI_TEST_REBUILD"),
    reason="a second full build of the coi image; CI sets COI_TEST_REBUILD=1",
)
def test_a_second_forced_build_installs_the_same_versions(
    incus: Incus, coi_image: dict[str, Any], build_env: dict[str, str]
) -> None:
    """What it must show 3 (second part)."""
    first = json.loads(coi("image", "info", ALIAS, "--format", "json").stdout)
    again = _build(build_env, OWN, "--force")
    assert again["fingerprint"] != coi_image["fingerprint"]
    second = json.loads(coi("image", "info", OWN, "--format", "json").stdout)
    for key in ("dpkg", "npm", "tools", "node", "pins", "inputs"):
        assert second[key] == first[key], key


def test_export_checks_and_reimports(
    incus: Incus, coi_image: dict[str, Any], tmp_path: Path
) -> None:
    """What it must show 3 (last part)."""
    fingerprint = incus.image_alias(ALIAS)["target"]
    folder = tmp_path / "release"
    exported = coi("image", "export", ALIAS, str(folder))
    assert exported.returncode == 0, exported.stderr
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["fingerprint"] == fingerprint and manifest["pins"] == PINS.to_dict()
    incus.delete_image(fingerprint)
    imported = coi("image", "import", str(folder))
    assert imported.returncode == 0, imported.stderr
    assert incus.image_alias(ALIAS)["target"] == fingerprint


def test_each_installed_tool_runs_and_keeps_its_state_across_resume(
    incus: Incus,
    coi_image: dict[str, Any],
    build_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sessions issue, item 5: for each tool the image installs, --version runs inside a
    session, and a file planted in its state folder survives save and resume. The npm
    query also proves a session trusts the host's extra CAs (HTTPS through the proxy)."""
    from coi.config import load, tools

    workspace = tmp_path / "project"
    workspace.mkdir()
    os.chown(workspace, 1000, 1000)
    monkeypatch.chdir(workspace)
    own_prefix(monkeypatch, "t")
    built_with = load.load(workspace, environ={**os.environ, **build_env})
    installed = [n for n in built_with.build.tools if n in tools.BUILTIN]
    assert installed, "the image installs no tool"
    for name in installed:
        tool = tools.BUILTIN[name]
        version = " ".join(tool.version_command)
        plant = f"mkdir -p ~/{tool.state_dir} && echo kept-{name} > ~/{tool.state_dir}/coi-planted"
        first = coi(
            "run", "--image", ALIAS, "--tool", name, "--", "sh", "-c", f"{version} && {plant}"
        )
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip(), f"{version} printed nothing"
        again = coi(
            "run",
            "--resume",
            "--image",
            ALIAS,
            "--tool",
            name,
            "--",
            "cat",
            f"/home/code/{tool.state_dir}/coi-planted",
        )
        assert again.stdout == f"kept-{name}\n", again.stderr
    registry = coi(
        "run",
        "--image",
        ALIAS,
        "--tool",
        "shell",
        "--",
        "sh",
        "-c",
        "npm view --no-update-notifier @anthropic-ai/claude-code name",
    )
    assert registry.returncode == 0, registry.stderr
    assert registry.stdout.strip() == "@anthropic-ai/claude-code"

"""The image pipeline on a real Incus, with small custom images on the base image.

Every alias here starts with coitest-img-<run>; everything made is deleted afterwards.
Resolvers and the connectivity probe point at the test bridge's own dnsmasq (or at its
subnet's network address, which DHCP never hands out and so never answers): no test
contacts a public resolver.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from coi.core.errors import CoiError
from coi.images import certs, dnsfix, naming
from coi.incus.adapter import Incus
from tests.integration.conftest import NETWORK
from tests.integration.helpers import coi

RUN = uuid.uuid4().hex[:6]
PREFIX = f"coitest-img-{RUN}"


# -- fixtures -------------------------------------------------------------------------


def bridge_addresses(incus: Incus) -> tuple[str, str]:
    """The bridge's own address (its dnsmasq) and its subnet's network address (dead)."""
    cidr = incus.get(f"networks/{NETWORK}")["config"]["ipv4.address"]
    interface = ipaddress.ip_interface(cidr)
    return str(interface.ip), str(interface.network.network_address)


def write_config(path: Path, gateway: str, **build: Any) -> Path:
    """A config file whose [build] resolvers and probe are gateway unless build says else."""
    values: dict[str, Any] = {"dns_resolvers": [gateway], "connectivity_probe": gateway, **build}
    lines = ["[build]", *(f"{key} = {json.dumps(value)}" for key, value in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def gateway(incus: Incus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A config whose resolvers and probe are the test bridge's dnsmasq."""
    address, _ = bridge_addresses(incus)
    monkeypatch.setenv("COI_CONFIG", str(write_config(tmp_path / "build.toml", address)))
    return address


def delete_images(incus: Incus, prefix: str) -> None:
    for image in incus.images():
        if any(a["name"].startswith(prefix) for a in image.get("aliases") or []):
            with contextlib.suppress(CoiError):
                incus.delete_image(image["fingerprint"])


@pytest.fixture(scope="module", autouse=True)
def drop_images(session_incus: Incus) -> Iterator[None]:
    """Delete every image this module made, whatever happened."""
    yield
    delete_images(session_incus, PREFIX)


@pytest.fixture
def alias(request: pytest.FixtureRequest) -> str:
    """An image name of this test's own."""
    return f"{PREFIX}-{request.node.name[5:25].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:4]}"


def script(tmp_path: Path, body: str, name: str = "setup.sh") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\nset -e\n" + body + "\n")
    return path


def build(
    name: str, path: Path, base: str, *extra: str, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return coi("build", "custom", name, "--script", str(path), "--base", base, *extra, **kw)


def target(incus: Incus, name: str) -> str | None:
    record = incus.image_alias(name)
    return str(record["target"]) if record else None


def dated(incus: Incus, name: str) -> list[str]:
    """NAME's dated aliases, oldest first."""
    names = [a["name"] for image in incus.images() for a in image.get("aliases") or []]
    return sorted(n for n in names if naming.stamp_of(n, f"{name}-") is not None)


def build_containers(incus: Incus) -> list[str]:
    return [n for n in incus.instance_names() if n.startswith("coi-build-")]


@pytest.fixture(scope="module")
def dead_dns_base(
    session_incus: Incus, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A base whose DHCP client always writes a resolver nobody answers on."""
    _, dead = bridge_addresses(session_incus)
    folder = tmp_path_factory.mktemp("deaddns")
    hook = (
        "cat > /etc/dhcp/dhclient-enter-hooks.d/aa-coitest-dead-dns <<'EOF'\n"
        "make_resolv_conf() {\n"
        f"    printf 'nameserver {dead}\\noptions timeout:1 attempts:1\\n' > /etc/resolv.conf\n"
        "}\nEOF"
    )
    name = f"{PREFIX}-deaddns"
    gateway, _ = bridge_addresses(session_incus)
    env = {
        "COI_CONFIG": str(write_config(folder / "c.toml", gateway)),
        "COI_HOME": str(folder / "home"),
        "COI_INCUS_PROJECT": session_incus.project,
    }
    done = build(name, script(folder, hook), base_image, env=env)
    assert done.returncode == 0, done.stderr
    return name


# -- builds ---------------------------------------------------------------------------


def test_build_publish_cache_force_and_cleanup(
    incus: Incus, base_image: str, gateway: str, alias: str, tmp_path: Path
) -> None:
    """What it must show 4 (first half), plus progress, CA trust, properties, the cache."""
    check = script(
        tmp_path,
        'echo "NODE_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS"\n'
        "ls /usr/local/share/ca-certificates/ | grep -c '^coi-' || true\n"
        "echo built > /etc/coitest-built",
    )
    first = build(alias, check, base_image)
    assert first.returncode == 0, first.stderr
    log_line = re.search(r"full log: (\S+)", first.stderr)
    assert log_line and Path(log_line[1]).is_file()
    for step in ("launch", "network", "certificates", "setup.sh", "publish"):
        assert re.search(rf"build: {re.escape(step)} done in [0-9.]+ s", first.stderr), step
    assert "total" in first.stderr
    host_cas = certs.host_certificates()
    log = Path(log_line[1]).read_text()
    assert "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" in log
    if host_cas:
        assert "trusting extra CA certificates: " + str(host_cas[0]) in first.stderr

    fingerprint = target(incus, alias)
    assert fingerprint is not None
    props = incus.image(fingerprint)["properties"]
    assert len(props["coi.inputs"]) == 64 and props["coi.version"] and props["coi.kind"] == "custom"
    assert json.loads(props["coi.manifest"])["base"]["fingerprint"] == target(incus, base_image)
    assert len(dated(incus, alias)) == 1

    again = build(alias, check, base_image)
    assert again.returncode == 0 and "up to date" in again.stderr, again.stderr
    assert target(incus, alias) == fingerprint
    assert len(dated(incus, alias)) == 1  # nothing was built: no second dated alias

    for _ in range(2):
        forced = build(alias, check, base_image, "--force", "--format", "json")
        assert forced.returncode == 0, forced.stderr
        result = json.loads(forced.stdout)
        assert result["up_to_date"] is False and target(incus, alias) == result["fingerprint"]
    newest = target(incus, alias)
    assert len(dated(incus, alias)) == 3 and newest != fingerprint

    refused = coi("image", "cleanup", f"{alias}-", "--keep", "0")
    assert refused.returncode == 2 and "--keep must be 1 or more" in refused.stderr
    pruned = coi("image", "cleanup", f"{alias}-", "--keep", "2")
    assert pruned.returncode == 0, pruned.stderr
    remaining = dated(incus, alias)
    assert len(remaining) == 2
    assert target(incus, alias) == newest and incus.image_alias(remaining[-1])["target"] == newest
    assert not incus.exists(f"images/{fingerprint}")
    assert build_containers(incus) == []


def test_a_failing_script_leaves_no_container_and_does_not_move_the_alias(
    incus: Incus, base_image: str, gateway: str, alias: str, tmp_path: Path, cleanup: list[str]
) -> None:
    """What it must show 4 (second half), and the failing-script fault."""
    good = build(alias, script(tmp_path, "true"), base_image)
    assert good.returncode == 0, good.stderr
    before = target(incus, alias)
    broken = script(tmp_path, "echo preparing\necho 'cannot frobnicate' >&2\nexit 7", "bad.sh")
    failed = build(alias, broken, base_image, "--force")
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "coi: error: build script bad.sh exited 7: preparing | cannot frobnicate"
    )
    assert "full log:" in last and "Traceback" not in failed.stderr
    assert build_containers(incus) == []
    assert target(incus, alias) == before
    assert len(dated(incus, alias)) == 1
    still = f"t-still-{uuid.uuid4().hex[:6]}"
    cleanup.append(still)
    launched = coi("container", "launch", alias, still)
    assert launched.returncode == 0, launched.stderr


def test_a_missing_script_is_a_usage_error(gateway: str, alias: str, tmp_path: Path) -> None:
    done = coi("build", "custom", alias, "--script", str(tmp_path / "nope.sh"))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"coi: error: build script {tmp_path / 'nope.sh'} not found: pass an existing file"
    )


def test_a_base_that_cannot_be_found(
    incus: Incus, gateway: str, alias: str, tmp_path: Path
) -> None:
    done = build(alias, script(tmp_path, "true"), f"{PREFIX}-no-such-base")
    assert done.returncode == 1
    assert "base image" in done.stderr and "not found" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert build_containers(incus) == []


def test_a_network_that_never_comes_up(
    incus: Incus, dead_dns_base: str, tmp_path: Path, alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, dead = bridge_addresses(incus)
    config = write_config(tmp_path / "c.toml", gateway, connectivity_probe=dead)
    monkeypatch.setenv("COI_CONFIG", str(config))
    done = build(alias, script(tmp_path, "true"), dead_dns_base, "--network-timeout", "6")
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    # the bound coi keeps is in its message: it gave up after the 6 s it was given
    assert "no working network after 6 s" in message and f"connected to {dead}:53" in message
    assert build_containers(incus) == [] and target(incus, alias) is None


def test_a_full_disk_says_so(
    incus: Incus, base_image: str, gateway: str, alias: str, tmp_path: Path
) -> None:
    fill = script(
        tmp_path,
        "mkdir -p /mnt/small && mount -t tmpfs -o size=1m coitest /mnt/small\n"
        "dd if=/dev/zero of=/mnt/small/fill bs=64k count=64",
    )
    done = build(alias, fill, base_image)
    assert done.returncode == 1
    assert "coi: error: disk full during build script setup.sh" in done.stderr
    assert "incus storage info" in done.stderr
    assert build_containers(incus) == []


def run_interruptible(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """coi with SIGINT at its default (a background shell would hand it down ignored)."""
    return subprocess.run(
        [sys.executable, "-m", "coi", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupted_build_cleans_up(
    incus: Incus, base_image: str, gateway: str, alias: str, tmp_path: Path, sig: str, code: int
) -> None:
    path = script(tmp_path, "sleep 60")
    done = run_interruptible(
        "build", "custom", alias, "--script", str(path), "--base", base_image,
        env={"COI_FAULT_SIGNAL": f"{sig}@build-script"},
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    assert build_containers(incus) == [] and target(incus, alias) is None


def test_a_second_build_of_one_alias_is_refused(
    incus: Incus, base_image: str, gateway: str, alias: str, tmp_path: Path
) -> None:
    path = script(tmp_path, "echo waiting\nsleep 120")
    argv = ["build", "custom", alias, "--script", str(path), "--base", base_image]
    with subprocess.Popen(
        [sys.executable, "-m", "coi", *argv], stderr=subprocess.PIPE, text=True
    ) as first:
        try:
            assert first.stderr is not None
            for line in first.stderr:
                if "setup.sh ..." in line:
                    break
            second = build(alias, path, base_image)
            assert second.returncode == 1
            assert re.search(r"is being built by another coi process \(pid [0-9]+\)", second.stderr)
        finally:
            first.send_signal(signal.SIGTERM)
            first.wait(120)
    assert first.returncode == 128 + signal.SIGTERM
    assert build_containers(incus) == []


# -- DNS fix (what it must show 2) ------------------------------------------------------


def bridge_settings() -> dict[str, Any]:
    shown = yaml.safe_load(
        subprocess.run(
            ["incus", "network", "show", NETWORK], capture_output=True, text=True, check=True
        ).stdout
    )
    shown.pop("used_by", None)  # other tests' instances come and go
    return dict(shown)


@pytest.mark.parametrize("keep", [False, True], ids=["removed", "kept"])
def test_the_dns_fix_fires_and_leaves_the_bridge_alone(
    incus: Incus, dead_dns_base: str, gateway: str, alias: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, keep: bool, cleanup: list[str],
) -> None:  # fmt: skip
    if keep:
        monkeypatch.setenv(
            "COI_CONFIG", str(write_config(tmp_path / "k.toml", gateway, keep_dns_fix=True))
        )
    before = bridge_settings()
    resolve = script(tmp_path, "getent hosts deb.debian.org\ncat /etc/resolv.conf")
    done = build(alias, resolve, dead_dns_base)
    assert done.returncode == 0, done.stderr
    assert f"names did not resolve through the DNS of Incus network {NETWORK}" in done.stderr
    assert f"incus network set {NETWORK} dns.mode managed" in done.stderr
    assert bridge_settings() == before
    name = f"t-dns-{uuid.uuid4().hex[:6]}"
    cleanup.append(name)
    launched = coi("container", "launch", alias, name)
    assert launched.returncode == 0, launched.stderr
    hook = incus.execute(name, ["test", "-e", dnsfix.HOOK]).exit_code == 0
    backup = incus.execute(name, ["test", "-e", dnsfix.BACKUP]).exit_code == 0
    assert hook is keep and backup is False


# -- image commands -------------------------------------------------------------------


def test_image_commands_and_export_round_trip(
    incus: Incus, base_image: str, gateway: str, alias: str, tmp_path: Path, cleanup: list[str]
) -> None:
    done = build(alias, script(tmp_path, "echo v1 > /etc/coitest-version"), base_image)
    assert done.returncode == 0, done.stderr
    fingerprint = target(incus, alias)
    assert fingerprint

    listed = json.loads(coi("image", "list", "--prefix", alias, "--format", "json").stdout)
    assert [r["fingerprint"] for r in listed] == [fingerprint]
    assert alias in listed[0]["aliases"] and listed[0]["kind"] == "custom"
    assert coi("image", "exists", alias).returncode == 0
    assert coi("image", "exists", f"{alias}-nope").returncode == 1
    info = json.loads(coi("image", "info", alias, "--format", "json").stdout)
    assert info["fingerprint"] == fingerprint and info["dpkg"]["bash"]
    assert info["inputs"] == incus.image(fingerprint)["properties"]["coi.inputs"]
    text = coi("image", "info", alias).stdout
    assert f"inputs:        {info['inputs']}" in text and "dpkg (" in text

    folder = tmp_path / "export"
    exported = coi("image", "export", alias, str(folder))
    assert exported.returncode == 0, exported.stderr
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads((folder / "manifest.json").read_text())["fingerprint"] == fingerprint
    assert coi("image", "delete", alias).returncode == 0
    assert coi("image", "exists", alias).returncode == 1
    imported = coi("image", "import", str(folder))
    assert imported.returncode == 0, imported.stderr
    assert target(incus, alias) == fingerprint
    assert "coi.manifest" in incus.image(fingerprint)["properties"]

    container = f"t-pub-{uuid.uuid4().hex[:6]}"
    cleanup.append(container)
    assert coi("container", "launch", alias, container).returncode == 0
    running = coi("image", "publish", container, f"{alias}-pub")
    assert running.returncode == 2 and "is running" in running.stderr
    published = coi(
        "image", "publish", container, f"{alias}-pub", "--force", "--description", "mine"
    )
    assert published.returncode == 0, published.stderr
    pub = incus.image(target(incus, f"{alias}-pub") or "")
    assert pub["properties"]["description"] == "mine"
    assert incus.state(container)["status"] == "Running"

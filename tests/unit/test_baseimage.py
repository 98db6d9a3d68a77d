"""The base image step's pure parts: parsing, hashing, naming, metadata; no Incus."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from coi.core.errors import CoiError, UsageError
from coi.images import base
from tests.fakes import FakeIncus

AMD64 = base.BaseSpec(release="12", arch="amd64")


@pytest.mark.parametrize(
    ("ref", "release", "suite"),
    [
        ("debian/12", "12", "bookworm"),
        ("debian/13", "13", "trixie"),
        (" debian/12\n", "12", "bookworm"),
    ],
)
def test_parse_local_debian(ref: str, release: str, suite: str) -> None:
    spec = base.parse_base(ref)
    assert spec == base.BaseSpec(release=release)
    assert isinstance(spec, base.BaseSpec)
    assert spec.suite == suite
    assert spec.mirror == "http://deb.debian.org/debian"
    assert spec.arch == ""  # parse_base is pure: the host's arch is filled in by resolve


@pytest.mark.parametrize(
    ("ref", "remote", "name"),
    [
        ("images:debian/12", "images", "debian/12"),
        ("images:debian/13/cloud", "images", "debian/13/cloud"),
        ("my-server:coi_base", "my-server", "coi_base"),
        ("local:abc.def", "local", "abc.def"),
    ],
)
def test_parse_remote(ref: str, remote: str, name: str) -> None:
    parsed = base.parse_base(ref)
    assert parsed == base.RemoteBase(remote, name)
    assert isinstance(parsed, base.RemoteBase)
    assert parsed.source == ref


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "debian",
        "debian/11",
        "debian/bookworm",
        "debian/12/extra",
        "ubuntu/24.04",
        "images:",
        ":debian/12",
        "https://example.invalid/debian",
        "images: debian/12",
    ],
)
def test_parse_rejects(ref: str) -> None:
    with pytest.raises(UsageError) as info:
        base.parse_base(ref)
    message = str(info.value)
    assert "debian/12" in message and "debian/13" in message and "REMOTE:NAME" in message
    assert info.value.exit_code == 2


def test_base_alias() -> None:
    assert base.base_alias(base.BaseSpec(release="12")) == "coi-base-debian-12"
    assert base.base_alias(base.BaseSpec(release="13", arch="arm64")) == "coi-base-debian-13"


def test_default_packages_cover_boot_and_network() -> None:
    for package in ("systemd-sysv", "dbus", "ifupdown", "isc-dhcp-client", "iproute2", "sudo"):
        assert package in base.DEFAULT_PACKAGES


def test_inputs_hash_is_stable() -> None:
    first = base.inputs_hash(base.BaseSpec(release="12", arch="amd64"))
    again = base.inputs_hash(
        base.BaseSpec(release="12", arch="amd64", packages=base.DEFAULT_PACKAGES)
    )
    assert first == again
    assert re.fullmatch(r"[0-9a-f]{64}", first)


@pytest.mark.parametrize(
    "changed",
    [
        base.BaseSpec(release="13", arch="amd64"),
        base.BaseSpec(release="12", arch="arm64"),
        base.BaseSpec(release="12", arch="amd64", mirror="http://mirror.example/debian"),
        base.BaseSpec(release="12", arch="amd64", packages=(*base.DEFAULT_PACKAGES, "less")),
        base.BaseSpec(release="12", arch="amd64", security_mirror=""),
    ],
)
def test_inputs_hash_follows_the_spec(changed: base.BaseSpec) -> None:
    assert base.inputs_hash(changed) != base.inputs_hash(AMD64)


def test_inputs_hash_follows_script_and_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    before = base.inputs_hash(AMD64)
    monkeypatch.setattr(base, "CUSTOMISE_SCRIPT", base.CUSTOMISE_SCRIPT + "\ntrue\n")
    after_script = base.inputs_hash(AMD64)
    monkeypatch.setattr(base, "TEMPLATES", {**base.TEMPLATES, "hosts.tpl": "127.0.0.1 localhost\n"})
    after_template = base.inputs_hash(AMD64)
    assert len({before, after_script, after_template}) == 3


def test_inputs_hash_follows_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    before = base.inputs_hash(AMD64)
    props = base.image_properties
    monkeypatch.setattr(base, "image_properties", lambda s: {**props(s), "variant": "other"})
    assert base.inputs_hash(AMD64) != before


@pytest.mark.parametrize(
    ("dpkg", "incus"),
    [("amd64", "x86_64"), ("arm64", "aarch64"), ("armhf", "armv7l"), ("i386", "i686"),
     ("ppc64el", "ppc64le"), ("s390x", "s390x"), ("riscv64", "riscv64")],
)  # fmt: skip
def test_incus_arch(dpkg: str, incus: str) -> None:
    assert base.incus_arch(dpkg) == incus
    assert base.metadata(base.BaseSpec(release="12", arch=dpkg), 0)["architecture"] == incus


def test_incus_arch_unknown() -> None:
    with pytest.raises(CoiError, match="pdp11"):
        base.incus_arch("pdp11")


def test_metadata_shape() -> None:
    meta = base.metadata(base.BaseSpec(release="13", arch="arm64"), 1700000000)
    assert meta["architecture"] == "aarch64"
    assert meta["creation_date"] == 1700000000
    props = meta["properties"]
    assert props["os"] == "Debian" and props["release"] == "trixie"
    assert "13" in props["description"]
    assert set(meta["templates"]) == {"/etc/hostname", "/etc/hosts"}
    for entry in meta["templates"].values():
        assert entry["template"] in base.TEMPLATES
        assert "create" in entry["when"]
    assert "{{ instance.name }}" in base.TEMPLATES["hostname.tpl"]
    text = yaml.safe_dump(meta)
    assert "&id" not in text  # no YAML anchors: every template entry is its own dict
    assert yaml.safe_load(text) == meta


def test_resolve_fills_the_host_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "host_arch", lambda: "riscv64")
    assert base.resolve(base.BaseSpec(release="12")).arch == "riscv64"
    assert base.resolve(AMD64).arch == "amd64"


def test_debootstrap_argv() -> None:
    argv = base.debootstrap_argv(AMD64, Path("/var/tmp/x/rootfs"))
    assert argv[0] == "debootstrap"
    assert "--variant=minbase" in argv and "--arch=amd64" in argv
    assert f"--include={','.join(base.DEFAULT_PACKAGES)}" in argv
    assert argv[-3:] == ["bookworm", "/var/tmp/x/rootfs", "http://deb.debian.org/debian"]


def test_customise_script_parses() -> None:
    done = subprocess.run(["sh", "-n", "-c", base.CUSTOMISE_SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_mounts_below() -> None:
    info = "\n".join(
        [
            "22 27 0:21 / /proc rw - proc proc rw",
            "44 27 0:44 / /var/tmp/coi-base-x/rootfs/proc rw - proc proc rw",
            "45 27 0:45 / /var/tmp/coi-base-x/rootfs/dev/pts rw - devpts devpts rw",
            "46 27 0:46 / /var/tmp/coi-base-x/rootfs/dev rw - devtmpfs udev rw",
            "47 27 0:47 / /var/tmp/coi-base-x/with\\040space rw - tmpfs t rw",
            "48 27 0:48 / /var/tmp/coi-base-xy/rootfs/proc rw - proc proc rw",
            "49 27 0:49 / /var/tmp/coi-base-x rw - tmpfs t rw",
        ]
    )
    points = base.mounts_below(Path("/var/tmp/coi-base-x"), info)
    assert points[0] == "/var/tmp/coi-base-x/rootfs/dev/pts"
    assert set(points) == {
        "/var/tmp/coi-base-x/rootfs/proc",
        "/var/tmp/coi-base-x/rootfs/dev/pts",
        "/var/tmp/coi-base-x/rootfs/dev",
        "/var/tmp/coi-base-x/with space",
    }


# -- ensure_base against a stand-in for Incus -----------------------------------------


def no_build(*args: object, **kwargs: object) -> str:
    raise AssertionError("ensure_base must not build here")


def test_ensure_remote_is_passed_through() -> None:
    assert base.ensure_base(FakeIncus(), "images:debian/12") == "images:debian/12"


def test_ensure_cache_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "host_arch", lambda: "amd64")
    monkeypatch.setattr(base, "build_base", no_build)
    fake = FakeIncus()
    fake.add_image("coi-base-debian-12", {base.INPUTS_PROPERTY: base.inputs_hash(AMD64)})
    assert base.ensure_base(fake, "debian/12") == "coi-base-debian-12"


@pytest.mark.parametrize("properties", [None, {}, {base.INPUTS_PROPERTY: "stale"}])
def test_ensure_needs_root_to_build(
    monkeypatch: pytest.MonkeyPatch, properties: dict[str, str] | None
) -> None:
    monkeypatch.setattr(base, "host_arch", lambda: "amd64")
    monkeypatch.setattr(base, "build_base", no_build)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(CoiError, match="sudo coi setup"):
        fake = FakeIncus()
        if properties is not None:
            fake.add_image("coi-base-debian-12", properties)
        base.ensure_base(fake, "debian/12")


# -- streaming a command ----------------------------------------------------------------


def test_stream_passes_lines_as_they_come() -> None:
    lines: list[str] = []
    base.stream(["sh", "-c", "echo one; echo two >&2; echo three"], lines.append, 10)
    assert lines == ["one", "two", "three"]


def test_stream_failure_carries_the_tail() -> None:
    with pytest.raises(CoiError, match=r"exited 3: .*E: no network"):
        base.stream(["sh", "-c", "echo I: start; echo E: no network; exit 3"], lambda _: None, 10)


def test_stream_timeout_kills() -> None:
    with pytest.raises(CoiError, match="did not finish within 1 s"):
        base.stream(["sh", "-c", "echo started; sleep 30"], lambda _: None, 1)


def test_debootstraps_lines_go_to_its_log_file_not_to_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    baseimage = base

    def fake_stream(argv: list[str], line: Callable[[str], None], timeout: float) -> None:
        for n in range(550):
            line(f"I: step {n}")

    monkeypatch.setattr(baseimage, "stream", fake_stream)
    monkeypatch.setattr(baseimage.shutil, "which", lambda *a, **k: "/usr/sbin/debootstrap")
    said: list[str] = []
    baseimage.debootstrap(AMD64, tmp_path / "rootfs", said.append)
    assert len(said) == 1 and "its output goes to" in said[0]
    record = Path(said[0].rsplit(" ", 1)[1])
    assert record.read_text().count("\n") == 550

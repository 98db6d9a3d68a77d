"""`coi image ...` against the one fake Incus: list, publish, delete, exists, cleanup,
info, export and import, by what each leaves in the daemon and prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coi.commands import image
from coi.commands.image import manage
from coi.images.manifest import MANIFEST_PROPERTY
from tests.unit.fakeplus import FakePlus, coi, one_error

MANIFEST = json.dumps({"alias": "coi", "kind": "coi", "inputs": "abc123", "coi_version": "9"})


def test_list_shows_coi_images_only_unless_all(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_image("coi", {"coi.version": "1"}, created_at="2026-01-02T00:00:00")
    fake_incus.add_image("ubuntu", {}, created_at="2026-01-01T00:00:00")
    assert coi(["image", "list", "--format", "json"]) == 0
    assert [r["aliases"] for r in json.loads(capsys.readouterr().out)] == [["coi"]]
    assert coi(["image", "list", "--all", "--format", "json"]) == 0
    assert [r["aliases"] for r in json.loads(capsys.readouterr().out)] == [["coi"], ["ubuntu"]]
    assert coi(["image", "list", "--prefix", "ubu"]) == 0
    assert "ubuntu" in capsys.readouterr().out


def test_exists_and_delete_by_alias(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fingerprint = fake_incus.add_image("mine", {})
    assert coi(["image", "exists", "mine"]) == 0
    assert coi(["image", "exists", fingerprint[:12]]) == 0  # a fingerprint prefix
    assert coi(["image", "exists", "other"]) == 1
    assert coi(["image", "delete", "mine"]) == 0
    assert fake_incus.images_by_fingerprint == {} and fake_incus.aliases == {}
    assert f"deleted image {fingerprint[:12]} (mine)" in capsys.readouterr().err
    assert coi(["image", "delete", "mine"]) != 0
    assert "`coi image list --all`" in one_error(capsys.readouterr().err)


def test_publish_a_stopped_container_moves_the_alias_and_dates_it(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box", status="Stopped")
    assert coi(["image", "publish", "box", "mine", "--description", "d"]) == 0
    fingerprint = fake_incus.aliases["mine"]
    dated = [a for a, f in fake_incus.aliases.items() if f == fingerprint and a != "mine"]
    assert len(dated) == 1 and dated[0].startswith("mine-")
    props = fake_incus.published[0]["properties"]
    assert props["description"] == "d" and props["coi.kind"] == "published"
    assert "published box as mine" in capsys.readouterr().err


def test_publish_of_a_running_container_needs_force_and_restarts_it(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_instance("box")
    assert coi(["image", "publish", "box", "mine"]) == 2
    assert "box is running: stop it first or pass --force" in one_error(capsys.readouterr().err)
    assert fake_incus.published == []
    assert coi(["image", "publish", "box", "mine", "--force"]) == 0
    assert fake_incus.instances_by_name["box"]["status"] == "Running"  # started again
    assert "mine" in fake_incus.aliases


def test_cleanup_keeps_the_newest_builds(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    stamps = ["20260101-000000", "20260102-000000", "20260103-000000"]
    prints = {s: fake_incus.add_image(f"coi-{s}", {}) for s in stamps}
    fake_incus.set_alias("coi", prints[stamps[-1]])
    assert coi(["image", "cleanup", "coi-", "--keep", "1", "--dry-run"]) == 0
    assert "would delete 2 old build(s)" in capsys.readouterr().err
    assert len(fake_incus.images_by_fingerprint) == 3
    assert coi(["image", "cleanup", "coi-", "--keep", "1"]) == 0
    assert set(fake_incus.images_by_fingerprint) == {prints[stamps[-1]]}
    assert coi(["image", "cleanup", "coi-", "--keep", "0"]) == 2
    assert "--keep must be 1 or more" in one_error(capsys.readouterr().err)


def test_info_prints_the_manifest_of_coi_builds_only(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_incus.add_image("coi", {MANIFEST_PROPERTY: MANIFEST})
    fake_incus.add_image("plain", {})
    assert coi(["image", "info", "coi", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"] == "abc123"
    assert coi(["image", "info", "coi"]) == 0
    assert "abc123" in capsys.readouterr().out
    assert coi(["image", "info", "plain"]) == 1
    assert "has no coi manifest" in one_error(capsys.readouterr().err)


def test_export_then_import_round_trips_through_the_folder(
    fake_incus: FakePlus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fingerprint = fake_incus.add_tarball("mine", b"\x28\xb5\x2f\xfd image bytes", {})
    out = tmp_path / "out"
    assert coi(["image", "export", "mine", str(out)]) == 0
    assert "sha256sum -c SHA256SUMS" in capsys.readouterr().err
    assert (out / "SHA256SUMS").is_file() and (out / "manifest.json").is_file()
    assert coi(["image", "import", str(out)]) == 1  # the same image is already here
    assert "nothing to import" in one_error(capsys.readouterr().err)
    fake_incus.delete_image(fingerprint)
    assert coi(["image", "import", str(out), "--alias", "back"]) == 0
    assert fake_incus.aliases["back"] == fingerprint


def test_import_refuses_a_changed_export_and_a_missing_folder(
    fake_incus: FakePlus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fingerprint = fake_incus.add_tarball("mine", b"image", {})
    out = tmp_path / "out"
    assert coi(["image", "export", "mine", str(out)]) == 0
    fake_incus.delete_image(fingerprint)
    tarball = next(p for p in out.iterdir() if p.name.startswith("mine."))
    tarball.write_bytes(b"changed")
    capsys.readouterr()
    assert coi(["image", "import", str(out)]) == 1
    assert "does not match SHA256SUMS" in one_error(capsys.readouterr().err)
    assert coi(["image", "import", str(tmp_path / "none")]) == 2
    assert fake_incus.images_by_fingerprint == {}


def test_rows_of_the_listing_are_newest_first() -> None:
    images = [
        {"fingerprint": "a", "created_at": "1", "aliases": [{"name": "coi"}]},
        {"fingerprint": "b", "created_at": "2", "aliases": [{"name": "coi-x"}]},
    ]
    assert [r["fingerprint"] for r in manage.rows(images, False, None)] == ["b", "a"]


def test_the_build_table_checks_the_network_timeout_before_any_connection(
    fake_incus: FakePlus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert coi(["build", "--network-timeout", "9999"]) == 2
    assert "must be from 1 to 3600 seconds" in one_error(capsys.readouterr().err)
    assert fake_incus.connected == []
    assert set(image.COMMANDS["image"].sub) >= {"list", "publish", "export", "import"}

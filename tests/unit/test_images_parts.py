"""CA trust, progress, manifests, export files and the build command line, without Incus."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coi.commands.cli import build_parser
from coi.commands.image import build, manage
from coi.config import tools
from coi.config.load import Config, load
from coi.core.errors import CoiError, ConfigError, UsageError
from coi.images import certs, export
from coi.images.build import BuildResult
from coi.images.manifest import (
    age_line,
    compose,
    dpkg_versions,
    from_image,
    npm_versions,
    text_lines,
    tool_probe,
)
from coi.images.progress import Progress, log_path
from tests.fakes import FakeIncus

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def config(tmp_path: Path, text: str = "") -> Config:
    path = tmp_path / "extra.toml"
    path.write_text(text)
    return load(tmp_path, environ={**os.environ, "COI_CONFIG": str(path)})


# -- certificates ---------------------------------------------------------------------


def test_host_certificates_are_found_below_the_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.crt", "sub/b.crt", "c.pem"):
        (tmp_path / name).write_bytes(PEM)
    assert [p.name for p in certs.host_certificates(tmp_path)] == ["a.crt", "b.crt"]
    assert certs.host_certificates(tmp_path / "missing") == []


def test_container_names_are_distinct_and_prefixed() -> None:
    files = [Path("/a/corp ca.crt"), Path("/b/corp ca.crt"), Path("/c/x.crt")]
    assert certs.container_names(files) == ["coi-corp-ca.crt", "coi-corp-ca-2.crt", "coi-x.crt"]


def test_config_files_are_added_and_host_ones_can_be_turned_off(tmp_path: Path) -> None:
    mine = tmp_path / "mine.crt"
    mine.write_bytes(PEM)
    host = tmp_path / "host"
    host.mkdir()
    (host / "proxy.crt").write_bytes(PEM)
    on = config(tmp_path, f'[certificates]\nfiles = ["{mine}"]\n')
    assert certs.sources(on, host) == [host / "proxy.crt", mine]
    off = config(tmp_path, f'[certificates]\ntrust_host = false\nfiles = ["{mine}"]\n')
    assert certs.sources(off, host) == [mine]


def test_trust_pushes_files_and_sets_the_node_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "mine.crt"
    mine.write_bytes(PEM)
    monkeypatch.setattr(certs, "HOST_DIR", tmp_path / "none")
    fake, said = FakeIncus(), []
    cfg = config(tmp_path, f'[certificates]\nfiles = ["{mine}"]\n')
    monkeypatch.setattr(certs, "sources", lambda c, folder=None: [mine])
    added = certs.trust_extra_cas(fake, "c1", cfg, said.append)
    assert added == [str(mine)]
    assert fake.files[("c1", "/usr/local/share/ca-certificates/coi-mine.crt")] == PEM
    assert (
        b"NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"
        in fake.files[("c1", certs.PROFILE)]
    )
    assert "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" in fake.commands[0]
    assert str(mine) in said[0]


def test_nothing_to_trust_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, said = FakeIncus(), []
    cfg = config(tmp_path, "[certificates]\ntrust_host = false\n")
    assert certs.trust_extra_cas(fake, "c1", cfg, said.append) == []
    assert fake.files == {} and fake.commands == []
    assert "trust_host is false" in said[0]


def test_a_file_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.crt"
    bad.write_bytes(b"\x30\x82")
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        certs.read_pem(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        certs.read_pem(tmp_path / "missing.crt")


# -- progress ---------------------------------------------------------------------------


def test_progress_logs_everything_and_reports_steps(tmp_path: Path) -> None:
    stream = io.StringIO()
    path = tmp_path / "logs" / "b.log"
    with Progress(path, stream=stream, tty=False) as progress:
        with progress.step("packages"):
            progress.output(b"line one\nline tw")
            progress.output(b"o\r\nlast line")
            assert progress.tail(2) == ["line two", "last line"]
        with pytest.raises(RuntimeError), progress.step("broken"):
            raise RuntimeError("x")
        progress.note("a message")
    shown = stream.getvalue()
    assert "coi: build: packages ..." in shown and "packages done in" in shown
    assert "broken FAILED" in shown and "coi: a message" in shown
    text = path.read_text()
    assert "line one" in text and "last line" in text and "a message" in text
    summary = progress.summary()
    assert summary[0].split()[0] == "ok" and summary[1].split()[0] == "FAIL"
    assert str(path) in summary[-1]


def test_log_paths_carry_alias_and_time(tmp_path: Path) -> None:
    assert log_path("coi", tmp_path).name.startswith("build-coi-")


# -- manifest ---------------------------------------------------------------------------


def test_dpkg_lines_keep_installed_packages_only() -> None:
    text = "ii \tgit\t1:2.39\nrc \told\t1.0\nii \tcurl\t7.88\n"
    assert dpkg_versions(text) == {"curl": "7.88", "git": "1:2.39"}


def test_npm_json_gives_versions() -> None:
    text = json.dumps({"dependencies": {"npm": {"version": "10.9.9"}}})
    assert npm_versions(text) == {"npm": "10.9.9"}
    assert npm_versions("") == {} and npm_versions("{") == {}


def test_tool_probe_skips_a_missing_binary() -> None:
    probe = tool_probe(tools.BUILTIN["claude"])
    assert probe.startswith("command -v claude >/dev/null || exit 0;")


def test_a_manifest_round_trips_through_image_properties() -> None:
    manifest = compose(
        {"dpkg": {"git": "1"}, "tools": {"claude": "2.1.332"}, "npm": {}, "node": "v22"},
        alias="coi",
        kind="coi",
        inputs="abc",
        base="coi-base-debian-12",
        base_fingerprint="f00",
        pins={"base": "debian/12"},
        coi_version="0.1.0",
        built="now",
    )
    image = {
        "fingerprint": "f" * 64,
        "size": 5,
        "properties": {"coi.manifest": json.dumps(manifest)},
    }
    back = from_image(image)
    assert back["inputs"] == "abc" and back["fingerprint"] == "f" * 64
    lines = text_lines(back)
    assert any("claude" in line and "2.1.332" in line for line in lines)


def test_an_image_coi_did_not_build_has_no_manifest() -> None:
    with pytest.raises(CoiError, match="has no coi manifest"):
        from_image({"fingerprint": "ab" * 32, "aliases": [{"name": "x"}]})


# -- export files ---------------------------------------------------------------------


def test_sums_round_trip_in_sha256sum_format(tmp_path: Path) -> None:
    text = export.sums_text({"b.tar.zst": "1" * 64, "manifest.json": "2" * 64})
    assert text.splitlines()[0] == f"{'1' * 64}  b.tar.zst"
    assert export.parse_sums(text) == {"b.tar.zst": "1" * 64, "manifest.json": "2" * 64}


def test_suffix_follows_the_compression() -> None:
    assert export.suffix_for(b"\x28\xb5\x2f\xfd...") == "tar.zst"
    assert export.suffix_for(b"\x1f\x8b\x08") == "tar.gz"
    assert export.suffix_for(b"ustar") == "tar"


def test_verify_catches_a_changed_file(tmp_path: Path) -> None:
    (tmp_path / "x.tar").write_bytes(b"image")
    (tmp_path / "manifest.json").write_text('{"alias": "x"}')
    files = {n: export.sha256_file(tmp_path / n) for n in ("x.tar", "manifest.json")}
    (tmp_path / "SHA256SUMS").write_text(export.sums_text(files))
    tarball, manifest = export.verify(tmp_path)
    assert tarball.name == "x.tar" and manifest == {"alias": "x"}
    (tmp_path / "x.tar").write_bytes(b"changed")
    with pytest.raises(CoiError, match="does not match"):
        export.verify(tmp_path)
    with pytest.raises(UsageError, match="no SHA256SUMS"):
        export.verify(tmp_path / "x.tar")


# -- command line -----------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_build_alone_is_the_coi_image(tmp_path: Path) -> None:
    recipe = build.recipe_for(parse("build"), config(tmp_path))
    assert recipe.alias == "coi" and recipe.kind == "coi"
    assert [t.name for t in recipe.tools] == ["claude"]
    recipe = build.recipe_for(parse("build", "--alias", "coitest-x"), config(tmp_path))
    assert recipe.alias == "coitest-x"


def test_coi_build_reports_the_version_each_installed_tool_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, '[build]\ntools = ["claude", "codex", "opencode", "aider"]\n')
    recipe = build.recipe_for(parse("build"), cfg)
    assert [t.name for t in recipe.tools] == ["claude", "codex", "opencode", "aider"]
    reported = {"claude": "2.1.332 (Claude Code)", "codex": "codex-cli 0.171.0", "shell": "x"}
    manifest = compose(
        {"dpkg": {}, "tools": reported, "npm": {}, "node": "v22"},
        alias="coi",
        kind="coi",
        inputs="abc",
        base="b",
        base_fingerprint="f",
        pins=None,
        coi_version="0",
        built="now",
    )
    incus = FakeIncus()
    fingerprint = incus.add_image("coi", {"coi.manifest": json.dumps(manifest)})
    versions = build.tool_versions(incus, fingerprint, recipe)
    assert versions == {
        "claude": "2.1.332 (Claude Code)",
        "codex": "codex-cli 0.171.0",
        "opencode": "not reported",
        "aider": "not reported",
    }
    result = BuildResult(alias="coi", fingerprint=fingerprint, inputs="abc", up_to_date=True)
    build.show(result, "text", versions)
    shown = capsys.readouterr().err
    assert "up to date" in shown and "codex: codex-cli 0.171.0" in shown
    assert "shell" not in shown  # a tool the recipe does not install is not reported
    build.show(result, "json", versions)
    assert json.loads(capsys.readouterr().out)["tools"] == versions
    other = incus.add_image("plain", {})
    assert build.tool_versions(incus, other, recipe) == {}  # not one of coi's builds


def test_build_custom_needs_name_and_script(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("true\n")
    args = parse("build", "custom", "mine", "--script", str(script), "--base", "other")
    recipe = build.recipe_for(args, config(tmp_path))
    assert (recipe.alias, recipe.base, recipe.kind) == ("mine", "other", "custom")
    for argv in (["build", "custom", "mine"], ["build", "--script", str(script)]):
        with pytest.raises(UsageError):
            build.recipe_for(parse(*argv), config(tmp_path))


def test_a_configured_base_replaces_the_pinned_one(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[build]\nbase = "debian/13"\n')
    assert build.recipe_for(parse("build"), cfg).base == "debian/13"


def test_build_network_timeout_is_bounded() -> None:
    assert parse("build", "--network-timeout", "5").network_timeout == 5.0
    with pytest.raises(UsageError):
        parse("build", "--network-timeout", "0")


def test_image_list_rows_filter_by_coi_and_prefix() -> None:
    images = [
        {"fingerprint": "a" * 64, "aliases": [{"name": "coi"}], "created_at": "2"},
        {"fingerprint": "b" * 64, "aliases": [{"name": "ubuntu"}], "created_at": "1"},
        {"fingerprint": "c" * 64, "aliases": [], "properties": {"coi.version": "0.1"}},
    ]
    assert [r["fingerprint"][0] for r in manage.rows(images, False, None)] == ["a", "c"]
    assert [r["fingerprint"][0] for r in manage.rows(images, True, None)] == ["a", "b", "c"]
    assert [r["fingerprint"][0] for r in manage.rows(images, False, "ubu")] == ["b"]


def test_the_image_commands_are_in_the_table() -> None:
    args = parse("image", "cleanup", "coi-", "--keep", "2")
    assert args._target == "coi.commands.image.manage:cleanup" and args.keep == 2
    probe = (
        "import sys; from coi.commands.cli import build_parser; build_parser(); "
        "heavy = ('coi.images.build', 'coi.images.dnsfix', 'pylxd'); "
        "print(any(m.startswith(heavy) for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


# -- publishing and launching (images.py) with a fake adapter ---------------------------


def published(created: dict[str, str], aliases: dict[str, str]) -> FakeIncus:
    """The fake daemon with these images (fingerprint -> created_at) and aliases."""
    fake = FakeIncus()
    for fingerprint, created_at in created.items():
        fake.add_image(None, fingerprint=fingerprint, created_at=created_at)
    fake.aliases.update(aliases)
    return fake


def test_a_new_build_gets_a_dated_alias_and_the_moving_one() -> None:
    from coi.images import naming, publish

    fake = published({"old": "2026-01-02T03:04:05Z", "new": ""}, {"coi": "old"})
    dated = publish.publish_aliases(fake, "coi", "new")
    assert naming.stamp_of(dated, "coi-") is not None
    assert fake.aliases["coi"] == "new" and fake.aliases[dated] == "new"
    assert fake.aliases["coi-20260102-030405"] == "old"  # the old build stays findable


def test_a_failed_alias_move_deletes_the_new_image_and_keeps_the_old(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from coi.core.faults import InjectedFault
    from coi.images import publish

    fake = published({"old": "", "new": ""}, {"coi": "old", "coi-20260101-000000": "old"})
    monkeypatch.setenv("COI_FAULT", "build-alias")
    with pytest.raises(InjectedFault):
        publish.publish_aliases(fake, "coi", "new")
    assert "new" not in fake.images_by_fingerprint
    assert "old" in fake.images_by_fingerprint
    assert fake.aliases == {"coi": "old", "coi-20260101-000000": "old"}


def test_a_base_that_cannot_be_fetched_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coi.core.errors import IncusError
    from coi.images import build, plan
    from coi.launch import executor

    def refuse(incus: object, spec: object, **kwargs: object) -> str:
        raise IncusError("Failed getting remote image info: connection refused")

    monkeypatch.setattr(executor, "create", refuse)
    job = build._Job(
        FakeIncus(),
        config(tmp_path),
        plan.Recipe("x", "images:debian/12", ()),
        "images:debian/12",
        "",
        "digest",
        5.0,
    )
    with pytest.raises(CoiError) as caught:
        job._launch()
    assert str(caught.value) == (
        "cannot launch the build container from images:debian/12: "
        "Failed getting remote image info: connection refused"
    )


def test_a_full_disk_message_says_where_to_make_room(tmp_path: Path) -> None:
    from coi.images import build

    message = build.disk_full("publishing the image", config(tmp_path), "no space left on device")
    assert message.startswith("disk full during publishing the image (no space left on device)")
    assert "incus storage info coi" in message and "coi image cleanup" in message


def test_the_build_assets_live_inside_the_package() -> None:
    import coi
    from coi.images import plan

    package = Path(coi.__file__).parent
    assert plan.assets_dir().is_relative_to(package)
    assert (plan.assets_dir() / "coi" / "pins.toml").is_file()


def test_age_line_names_the_tools_and_the_days_since_the_build() -> None:

    manifest = {
        "built": "2026-11-20T10:00:00+00:00",
        "tools": {"claude": "2.1.332 (Claude Code)", "shell": "GNU bash"},
    }
    now = 1796032800.0  # 2026-11-30T10:00:00Z
    line = age_line(manifest, now)
    assert line == "its tools (claude 2.1.332) were installed 10 days ago, on 2026-11-20"
    assert "today" in age_line(manifest, now - 9.5 * 86400)
    assert "unknown" in age_line({"built": "?"}, now)
    four = {
        "built": manifest["built"],
        "tools": {
            "claude": "2.1.332 (Claude Code)",
            "codex": "codex-cli 0.171.0",
            "opencode": "1.18.33",
            "aider": "aider 0.86.2",
            "mine": "",  # not installed: reported nothing
        },
    }
    assert age_line(four, now).startswith(
        "its tools (claude 2.1.332, codex 0.171.0, opencode 1.18.33, aider 0.86.2) were"
    )

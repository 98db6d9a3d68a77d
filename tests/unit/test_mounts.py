"""Extra mounts: flags and [[mounts]] tables become checked, read-only-by-default mounts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.config import files, load, mounts
from coi.core.errors import ConfigError, UsageError

HOME = Path("/home/alice")
SEGMENT = st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True)


def test_a_flag_is_read_only_unless_rw(tmp_path: Path) -> None:
    assert mounts.parse_flag("data:/data", tmp_path) == mounts.Mount(tmp_path / "data", "/data")
    writable = mounts.parse_flag("/srv/x:/x:rw", tmp_path)
    assert writable.readonly is False and writable.as_device().get("readonly") is None
    assert mounts.parse_flag("/srv/x:/x", tmp_path).as_device()["readonly"] == "true"
    for bad in ("/srv/x", "/srv/x:/x:wr", ":/x", "/a:/b:rw:more"):
        with pytest.raises(UsageError):
            mounts.parse_flag(bad, tmp_path)


@given(st.sampled_from(mounts.CREDENTIAL_PATHS), st.lists(SEGMENT, max_size=3))
def test_a_credential_folder_and_anything_in_it_is_refused(cred: str, rest: list[str]) -> None:
    assert mounts.source_problem(HOME.joinpath(cred, *rest), HOME) is not None


@given(st.sampled_from(mounts.CREDENTIAL_PATHS))
def test_a_folder_holding_a_credential_folder_is_refused(cred: str) -> None:
    holder = (HOME / cred).parent
    assert mounts.source_problem(holder, HOME) is not None
    assert mounts.source_problem(Path("/"), HOME) is not None
    assert mounts.source_problem(Path("/home"), HOME) is not None


@given(st.lists(SEGMENT, min_size=1, max_size=3))
def test_a_project_folder_in_the_home_may_be_mounted(parts: list[str]) -> None:
    assert mounts.source_problem(HOME.joinpath("work", *parts), HOME) is None


BAD_TARGETS = ["/", "/workspace", "/workspace/.git/hooks", "/etc/x", "relative", "/usr/local/bin"]


@pytest.mark.parametrize("target", [*BAD_TARGETS, "/tmp/x", "/home/code"])
def test_targets_that_would_cover_the_system_or_workspace_are_refused(target: str) -> None:
    assert mounts.target_problem(target) is not None


def test_good_targets() -> None:
    assert mounts.target_problem("/data") is None
    assert mounts.target_problem("/home/code/datasets") is None


def test_check_resolves_links_before_deciding(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / "innocent").symlink_to(home / ".ssh")
    with pytest.raises(UsageError, match="credentials"):
        mounts.check(mounts.Mount(home / "innocent", "/data"), home)
    with pytest.raises(UsageError, match="does not exist"):
        mounts.check(mounts.Mount(home / "nope", "/data"), home)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_mounts_tables_are_validated(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.toml", '[[mounts]]\nsource = "~/data"\ntarget = "/data"\n')
    layer = files.load_file(good)
    assert layer is not None and layer.data["mounts"][0]["target"] == "/data"
    for body, word in [
        ('[[mounts]]\nsource = "~/data"\n', "target"),
        ('[[mounts]]\nsource = "~/d"\ntarget = "data"\n', "absolute"),
        ('[[mounts]]\nsource = "~/d"\ntarget = "/d"\nreadonly = "no"\n', "boolean"),
        ('mounts = "x"\n', "tables"),
    ]:
        with pytest.raises(ConfigError, match=word):
            files.load_file(_write(tmp_path / "bad.toml", body))


def test_an_untrusted_project_file_cannot_mount(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    _write(ws / ".coi.toml", '[[mounts]]\nsource = "/etc"\ntarget = "/data"\n')
    cfg = load.load(ws)
    assert cfg.mounts == ()
    assert any(item.key == "mounts" for item in cfg.ignored)

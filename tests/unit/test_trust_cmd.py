"""`coi trust`, `coi trust --list`, `coi untrust` and `coi config show` on a screened file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coi import trust
from coi.cli import main

RISKY = '[defaults]\nmount_claude_config = true\n[network]\nmode = "open"\n'


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    (path / ".coi.toml").write_text(RISKY)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_trust_approves_and_says_what_now_applies(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "trust", "--workspace", str(workspace))
    assert code == 0
    digest = trust.digest((workspace / ".coi.toml").read_bytes())
    assert f"trusted: {workspace / '.coi.toml'} (sha256 {digest[:12]})" in err
    assert "it now applies: defaults.mount_claude_config, network.mode" in err
    assert trust.is_trusted(workspace / ".coi.toml", digest)
    code, _, err = run(capsys, "trust", "--workspace", str(workspace))
    assert "already trusted" in err


def test_trust_defaults_to_the_current_folder(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    assert run(capsys, "trust")[0] == 0
    assert str(workspace / ".coi.toml") in trust.approvals()


def test_trust_without_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "trust", "--workspace", str(tmp_path))
    assert code == 2
    assert f"{tmp_path / '.coi.toml'}: no such file;" in err


def test_a_broken_file_is_not_trusted(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workspace / ".coi.toml").write_text('[network]\nmode = "strict"\n')
    code, _, err = run(capsys, "trust", "--workspace", str(workspace))
    assert code == 2
    assert "network.mode: 'strict' is not one of" in err
    assert trust.approvals() == {}


def test_list_shows_each_state(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "trust", "--list")[2].strip() == "no trusted project files"
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / ".coi.toml").write_text("[defaults]\nmax_slots = 2\n")
    run(capsys, "trust", "--workspace", str(workspace))
    run(capsys, "trust", "--workspace", str(gone))
    (gone / ".coi.toml").unlink()
    code, out, _ = run(capsys, "trust", "--list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["STATE", "SHA256", "APPROVED", "FILE"]
    assert lines[1].startswith("missing ") and lines[1].endswith(str(gone / ".coi.toml"))
    assert lines[2].startswith("trusted ") and lines[2].endswith(str(workspace / ".coi.toml"))
    (workspace / ".coi.toml").write_text(RISKY + "# edited\n")
    code, out, _ = run(capsys, "trust", "--list", "--format", "json")
    items = json.loads(out)
    assert [i["state"] for i in items] == ["missing", "changed"]
    assert set(items[0]) == {"state", "sha256", "approved_at", "path"}
    assert len(items[0]["sha256"]) == 64


def test_untrust(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "trust", "--workspace", str(workspace))
    code, _, err = run(capsys, "untrust", "--workspace", str(workspace))
    assert code == 0
    assert f"no longer trusted: {workspace / '.coi.toml'}" in err
    assert trust.approvals() == {}
    code, _, err = run(capsys, "untrust", "--workspace", str(workspace / "absent"))
    assert code == 0
    assert "was not trusted: nothing to do" in err


def test_config_show_origin_lists_ignored_keys_and_why(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "config", "show", "--workspace", str(workspace), "--origin")
    assert code == 0
    lines = out.splitlines()
    assert 'network.mode = "restricted"  # built-in defaults' in lines
    ignored = [line for line in lines if line.startswith("# ignored: ")]
    assert len(ignored) == 2
    assert ignored[1].startswith(f'# ignored: network.mode = "open"  # {workspace / ".coi.toml"}')
    assert "only make the mode stricter" in ignored[1]
    assert err.count("coi: warning: ") == 1

    code, out, _ = run(
        capsys, "config", "show", "--workspace", str(workspace), "--origin", "--format", "json"
    )
    shown = json.loads(out)
    assert shown["config"]["network"]["mode"] == "restricted"
    assert [i["key"] for i in shown["ignored"]] == ["defaults.mount_claude_config", "network.mode"]
    assert shown["ignored"][1]["value"] == "open"


def test_the_whole_round_trip_in_a_real_process(workspace: Path) -> None:
    """Untrusted: ignored with a warning; trusted: applied; edited: the warning is back."""

    def show() -> tuple[dict[str, object], str]:
        argv = [sys.executable, "-m", "coi", "config", "show", "--format", "json"]
        argv += ["--workspace", str(workspace)]
        done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ))
        assert done.returncode == 0, done.stderr
        tree = json.loads(done.stdout)
        return {
            "mode": tree["network"]["mode"],
            "mount": tree["defaults"]["mount_claude_config"],
        }, done.stderr

    values, err = show()
    assert values == {"mode": "restricted", "mount": False}
    assert "defaults.mount_claude_config, network.mode" in err and "coi trust" in err
    argv = [sys.executable, "-m", "coi", "trust", "--workspace", str(workspace)]
    subprocess.run(argv, check=True, capture_output=True, env=dict(os.environ))
    values, err = show()
    assert values == {"mode": "open", "mount": True}
    assert err == ""
    with (workspace / ".coi.toml").open("a") as handle:
        handle.write("\n")
    values, err = show()
    assert values == {"mode": "restricted", "mount": False}
    assert "not trusted" in err

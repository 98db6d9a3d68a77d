"""`coi trust`, `coi trust --list`, `coi untrust` and `coi config show` on a screened file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coi.commands.cli import main
from coi.config import trust

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


def test_trust_shows_the_digest_and_what_it_turns_on_then_approves(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "trust", "--yes", "--workspace", str(workspace))
    assert code == 0
    digest = trust.digest((workspace / ".coi.toml").read_bytes())
    lines = err.splitlines()
    assert lines[:3] == [str(workspace / ".coi.toml"), f"sha256 {digest}", "approving it turns on:"]
    assert lines[3].startswith("  defaults.mount_claude_config = true  (")
    assert lines[4].startswith('  network.mode = "open"  (')
    assert f"trusted: {workspace / '.coi.toml'} (sha256 {digest[:12]})" in err
    assert trust.is_trusted(workspace / ".coi.toml", digest)
    code, _, err = run(capsys, "trust", "--yes", "--workspace", str(workspace))
    assert code == 0
    assert err.strip() == f"already trusted: {workspace / '.coi.toml'} (sha256 {digest})"


def test_trust_defaults_to_the_current_folder(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    assert run(capsys, "trust", "--yes")[0] == 0
    assert str(workspace / ".coi.toml") in trust.approvals()


def test_trust_without_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "trust", "--yes", "--workspace", str(tmp_path))
    assert code == 2
    assert f"{tmp_path / '.coi.toml'}: no such file;" in err


def test_a_broken_file_is_not_trusted(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workspace / ".coi.toml").write_text('[network]\nmode = "strict"\n')
    code, _, err = run(capsys, "trust", "--yes", "--workspace", str(workspace))
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
    run(capsys, "trust", "--yes", "--workspace", str(workspace))
    run(capsys, "trust", "--yes", "--workspace", str(gone))
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
    run(capsys, "trust", "--yes", "--workspace", str(workspace))
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
    argv = [sys.executable, "-m", "coi", "trust", "--yes", "--workspace", str(workspace)]
    subprocess.run(argv, check=True, capture_output=True, env=dict(os.environ))
    values, err = show()
    assert values == {"mode": "open", "mount": True}
    assert err == ""
    with (workspace / ".coi.toml").open("a") as handle:
        handle.write("\n")
    values, err = show()
    assert values == {"mode": "restricted", "mount": False}
    assert "not trusted" in err


class _Terminal(io.StringIO):
    """A stdin that says it is a terminal and holds what the user types."""

    def isatty(self) -> bool:
        return True


def test_without_a_terminal_or_yes_trust_is_a_one_line_usage_error(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, out, err = run(capsys, "trust", "--workspace", str(workspace))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "no terminal to confirm on" in err and "--yes" in err
    assert trust.approvals() == {}


@pytest.mark.parametrize(("answer", "approved"), [("y\n", True), ("n\n", False), ("", False)])
def test_on_a_terminal_trust_asks_and_only_yes_approves(
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    approved: bool,
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal(answer))
    code, _, err = run(capsys, "trust", "--workspace", str(workspace))
    assert "trust this file? [y/N]" in err and "sha256 " in err
    assert code == (0 if approved else 1)
    assert (str(workspace / ".coi.toml") in trust.approvals()) is approved


def test_trust_approves_the_bytes_it_showed_even_if_the_file_changes_after(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is swapped while the user reads the review: the old bytes' digest is stored."""
    shown = (workspace / ".coi.toml").read_bytes()

    class SwapWhileAsking(_Terminal):
        def readline(self, size: int = -1) -> str:
            (workspace / ".coi.toml").write_text('[network]\nmode = "open"\n# swapped\n')
            return "y\n"

    monkeypatch.setattr(sys, "stdin", SwapWhileAsking())
    code, _, err = run(capsys, "trust", "--workspace", str(workspace))
    assert code == 0 and f"sha256 {trust.digest(shown)}" in err
    assert trust.is_trusted(workspace / ".coi.toml", trust.digest(shown))
    swapped = (workspace / ".coi.toml").read_bytes()
    assert not trust.is_trusted(workspace / ".coi.toml", trust.digest(swapped))


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "outside-link", "folder"])
def test_trust_refuses_a_project_file_that_is_not_a_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    target = workspace / ".coi.toml"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dev-zero-link":
        target.symlink_to("/dev/zero")
    elif kind == "outside-link":
        (tmp_path / "elsewhere.toml").write_text(RISKY)
        target.symlink_to(tmp_path / "elsewhere.toml")
    else:
        target.mkdir()
    code, _, err = run(capsys, "trust", "--yes", "--workspace", str(workspace))
    assert code == 2 and err.count("\n") == 1
    assert "not a regular file" in err or "cannot read" in err
    assert trust.approvals() == {}


def test_the_review_names_the_credentials_a_chosen_tool_would_get(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / ".coi.toml").write_text('[tool]\nname = "codex"\n')
    code, _, err = run(capsys, "trust", "--yes", "--workspace", str(workspace))
    assert code == 0
    assert '  tool.name = "codex"  (that tool gets its credential files)' in err.splitlines()

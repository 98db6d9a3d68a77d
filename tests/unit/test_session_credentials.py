"""Which host credentials enter a session's container, seen in what the one fake Incus
is sent (coi/sessions/credentials.py through the session path): the chosen tool's files
in copy mode, a placeholder and a broker in broker mode, nothing for `coi run` without
--tool or for a tool an untrusted project file chose."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from coi.broker import process
from coi.broker.session import DEVICE
from coi.sessions import credentials, lifecycle
from coi.sessions.model import Request
from tests.unit.fakeplus import FakePlus, Setups, ViewHelper

TOKEN = b'{"claudeAiOauth": {"accessToken": "sk-host-secret"}}'
OPEN = {"network": "open"}


@pytest.fixture
def setups(fake_incus: FakePlus, view_helper: ViewHelper, isolated_home: Path) -> Setups:
    """The host's login (~/.claude/.credentials.json, ~/.claude.json) and the setup's answer."""
    (isolated_home / ".claude").mkdir()
    (isolated_home / ".claude" / ".credentials.json").write_bytes(TOKEN)
    account = {"oauthAccount": {"emailAddress": "me@example.com"}, "projects": {"/x": {}}}
    (isolated_home / ".claude.json").write_text(json.dumps(account))
    answer = Setups()
    fake_incus.answers["sh"] = answer
    return answer


def sent(workspace: Path, setups: Setups, **kw: object) -> dict[str, bytes]:
    undo: list[Callable[[], None]] = []
    runs_tool = bool(kw.pop("runs_tool", True))
    request = Request(workspace, OPEN, **kw)  # type: ignore[arg-type]
    lifecycle.open_session(request, undo, log=lambda _: None, runs_tool=runs_tool)
    return setups.archives[-1]


def test_copy_mode_gives_the_chosen_tool_its_files_and_a_filtered_account(
    fake_incus: FakePlus, setups: Setups, workspace: Path, user_file: Path
) -> None:
    user_file.write_text('[credentials]\nmode = "copy"\n')
    files = sent(workspace, setups, tool="claude")
    assert files["home/code/.claude/.credentials.json"] == TOKEN
    account = json.loads(files["home/code/.claude.json"])
    assert account["oauthAccount"]["emailAddress"] == "me@example.com"
    assert "/x" not in account.get("projects", {})  # other projects stay on the host


def test_broker_mode_keeps_the_token_on_the_host_and_starts_a_broker(
    fake_incus: FakePlus, setups: Setups, workspace: Path
) -> None:
    files = sent(workspace, setups, tool="claude")
    assert "home/code/.claude/.credentials.json" not in files
    assert b"sk-host-secret" not in b"".join(files.values())
    (name,) = fake_incus.instance_names()
    assert DEVICE in fake_incus.instances_by_name[name]["devices"]
    assert process.running() == [name]


def test_a_command_that_is_not_the_tool_gets_no_credentials(
    fake_incus: FakePlus, setups: Setups, workspace: Path, user_file: Path
) -> None:
    user_file.write_text('[credentials]\nmode = "copy"\n')
    files = sent(workspace, setups, runs_tool=False)
    assert not any(path.startswith("home/code/.claude") for path in files)
    assert process.running() == []


def test_a_tool_an_untrusted_project_file_chose_gets_nothing_and_is_warned_about(
    fake_incus: FakePlus,
    setups: Setups,
    workspace: Path,
    user_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user_file.write_text('[credentials]\nmode = "copy"\n')
    (Path.home() / ".codex").mkdir()
    (Path.home() / ".codex" / "auth.json").write_text('{"key": "codex-secret"}')
    (workspace / ".coi.toml").write_text('[tool]\nname = "codex"\n')
    files = sent(workspace, setups)
    assert b"codex-secret" not in b"".join(files.values())
    assert "coi trust --workspace" in capsys.readouterr().err
    assert "COI_STATE_DIR=.codex" in files["etc/coi/session.env"].decode()  # codex runs


def test_a_resumed_state_loses_the_login_this_session_is_not_given(
    fake_incus: FakePlus, setups: Setups, workspace: Path, user_file: Path
) -> None:
    from coi.sessions import finish
    from tests.unit.fakeplus import state_tar, tar_answer

    user_file.write_text('[credentials]\nmode = "copy"\n')
    undo: list[Callable[[], None]] = []
    first = lifecycle.open_session(Request(workspace, OPEN, tool="claude"), undo)
    fake_incus.answers["tar"] = tar_answer(state_tar(".claude", {".credentials.json": TOKEN}))
    finish.finish(first, log=lambda _: None)
    sent(workspace, setups, resume="", runs_tool=False)  # `coi run` resuming it
    dropped = fake_incus.commands[-1][4:]
    assert dropped == credentials.withheld(first.tool, {}) == [".claude/.credentials.json",
                                                              ".claude.json"]  # fmt: skip

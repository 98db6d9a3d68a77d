"""The attacker's view of credentials: what of the host's secrets a session container holds.

A scratch HOME (the coi subprocess's HOME) holds a credential file of each tool, a
~/.claude.json with two projects and a user-scope MCP server with secrets in its env and
headers; each secret is a unique marker. Inside, a search of the whole filesystem (but
/proc, /sys, /dev) and of the environment names every marker it finds.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest

from coi.incus.adapter import Incus
from tests.integration.helpers import coi

# The markers travel on stdin to the root search, never in a command line that sudo logs.
SEARCH = r"""
for m in "$@"; do env | grep -qF -- "$m" && echo "env:$m"; done
printf '%s\n' "$@" | sudo -n sh -c '
while read -r m; do
  grep -rqsF -D skip --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -- "$m" / &&
    echo "file:$m"
done'
echo search-done
"""


@pytest.fixture
def markers() -> dict[str, str]:
    """One unique marker per planted secret or piece of data, by what it stands for."""
    tag = uuid.uuid4().hex[:10]
    names = (
        "claude_login",  # ~/.claude/.credentials.json
        "claude_account",  # oauthAccount in ~/.claude.json
        "this_project",  # the workspace's entry in ~/.claude.json
        "other_project",  # another project's entry
        "mcp_command",  # a user-scope MCP server: how to start it
        "mcp_env",  # ... and the secrets in its env
        "mcp_header",  # ... and in its headers
        "codex",  # ~/.codex/auth.json
        "aider",  # ~/.aider.conf.yml
    )
    return {name: f"mk-{name.replace('_', '-')}-{tag}" for name in names}


@pytest.fixture
def workspace(
    incus: Incus,
    session_image: str,
    tmp_path: Path,
    markers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A workspace and a scratch HOME holding every tool's planted credentials."""
    home = Path(os.environ["HOME"])
    ws = tmp_path / "ws"
    ws.mkdir()
    user = home / ".config" / "coi" / "config.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(f'[defaults]\nimage = "{session_image}"\n')
    claude_json = {
        "hasCompletedOnboarding": True,
        "oauthAccount": {"emailAddress": markers["claude_account"]},
        "mcpServers": {
            "search": {
                "type": "stdio",
                "command": markers["mcp_command"],
                "env": {"SEARCH_API_KEY": markers["mcp_env"]},
            },
            "remote": {
                "type": "http",
                "url": "https://mcp.invalid/",
                "headers": {"Authorization": f"Bearer {markers['mcp_header']}"},
            },
        },
        "projects": {
            str(ws): {"history": [{"display": markers["this_project"]}]},
            str(tmp_path / "other"): {"history": [{"display": markers["other_project"]}]},
        },
    }
    files = {
        ".claude/.credentials.json": json.dumps({"accessToken": markers["claude_login"]}),
        ".claude.json": json.dumps(claude_json),
        ".codex/auth.json": json.dumps({"OPENAI_API_KEY": markers["codex"]}),
        ".aider.conf.yml": f"openai-api-key: {markers['aider']}\n",
    }
    for rel, text in files.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text)
    monkeypatch.setenv("COI_CONTAINER_PREFIX", f"sc{uuid.uuid4().hex[:5]}-")
    monkeypatch.setenv("COI_CREDENTIALS_MODE", "copy")  # these tests are about the copy mode
    monkeypatch.chdir(ws)
    return ws


def _found(stdout: str, markers: dict[str, str]) -> set[str]:
    """The names of the markers the search reported (in a file or in the environment)."""
    assert "search-done" in stdout, stdout
    by_value = {value: name for name, value in markers.items()}
    hits = re.findall(r"^(?:env|file):(\S+)$", stdout, re.MULTILINE)
    return {by_value[hit] for hit in hits}


def _run(markers: dict[str, str], *flags: str) -> tuple[set[str], str]:
    done = coi("run", *flags, "--", "sh", "-c", SEARCH, "sh", *markers.values())
    assert done.returncode == 0, done.stderr
    return _found(done.stdout, markers), done.stderr


def _shell(markers: dict[str, str]) -> tuple[set[str], str]:
    """Start the configured tool in `coi shell --background`, search inside, then kill it."""
    started = coi("shell", "--background")
    assert started.returncode == 0, started.stderr
    name = re.search(r"^(\S+) keeps running", started.stderr, re.MULTILINE)
    assert name, started.stderr
    try:
        argv = ["container", "exec", name[1], "--", "sh", "-c", SEARCH, "sh"]
        done = coi(*argv, *markers.values())
        assert done.returncode == 0, done.stderr
        return _found(done.stdout, markers), started.stderr
    finally:
        coi("kill", name[1])


def test_a_plain_run_holds_no_credentials(workspace: Path, markers: dict[str, str]) -> None:
    found, err = _run(markers)
    assert found == set()
    assert "without its credentials" not in err  # no tool runs: nothing to warn about


def test_run_with_tool_claude_gets_claude_files_filtered_to_this_project(
    workspace: Path, markers: dict[str, str]
) -> None:
    found, _ = _run(markers, "--tool", "claude")
    assert found == {"claude_login", "claude_account", "this_project", "mcp_command"}

    # A trusted layer may let the MCP servers' env and headers in; nothing else changes.
    user = Path(os.environ["HOME"]) / ".config" / "coi" / "config.toml"
    user.write_text(user.read_text() + "[credentials]\nclaude_mcp_env = true\n")
    found, _ = _run(markers, "--tool", "claude")
    assert found == {
        "claude_login",
        "claude_account",
        "this_project",
        "mcp_command",
        "mcp_env",
        "mcp_header",
    }


def test_a_tool_an_untrusted_file_chose_gets_nothing_until_coi_trust(
    workspace: Path, markers: dict[str, str]
) -> None:
    (workspace / ".coi.toml").write_text('[tool]\nname = "codex"\n')
    found, err = _shell(markers)
    assert found == set()
    line = [x for x in err.splitlines() if "without its credentials" in x]
    assert len(line) == 1, err
    assert str(workspace / ".coi.toml") in line[0] and "coi trust" in line[0]
    assert _run(markers)[0] == set()  # and `coi run` there gets none either

    trusted = coi("trust", "--yes")
    assert trusted.returncode == 0, trusted.stderr
    found, err = _shell(markers)
    assert found == {"codex"}  # the tool that runs, and no other tool's files
    assert "without its credentials" not in err


def test_a_resumed_state_does_not_bring_a_login_back_to_a_session_without_it(
    workspace: Path, markers: dict[str, str]
) -> None:
    """The saved ~/.claude holds the login a --tool claude session was given; a resume
    that is not given it gets the rest of the state, not the login."""
    keep = "echo kept-state > ~/.claude/note && cat ~/.claude/.credentials.json"
    first = coi("run", "--tool", "claude", "--", "sh", "-c", keep)
    assert first.returncode == 0 and markers["claude_login"] in first.stdout, first.stderr
    script = "cat ~/.claude/note; " + SEARCH
    done = coi("run", "--resume", "--", "sh", "-c", script, "sh", *markers.values())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("kept-state\n")  # the state was restored
    assert _found(done.stdout, markers) == set()

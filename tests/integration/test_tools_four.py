"""Four tools in one image, each proven (issue 25, must show 1).

`[build] tools` names Claude Code, Codex, OpenCode and Aider; `coi build` makes the image
(under an alias of the tests' own, reused while its inputs do not change) and reports each
version. In it, each tool answers `--version` as `code`, and answers a headless prompt
from a fake model API (tests/fakeupstream.py: HTTPS on the host's loopback, a test CA only
the broker trusts) through its session's credential broker: the fake sees the host's key,
never the placeholder. Then `coi run --resume` brings the tool's saved state back: the
next request carries the answer of the first one, which nothing but that state holds.
"""

from __future__ import annotations

import ipaddress
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coi.broker import PLACEHOLDER
from coi.images import pins, plan
from coi.incus.adapter import Incus
from tests.fakeopenai import ANSWER
from tests.fakeupstream import Upstream
from tests.integration.conftest import NETWORK
from tests.integration.helpers import coi

TOOLS = ("claude", "codex", "opencode", "aider")
# One alias for every run: a build whose inputs did not change is up to date at once, and
# `coi image cleanup` keeps only its newest image.
ALIAS = "coitest-tools4"
KEY_VAR = "TOOLS_TEST_KEY"
PINS = pins.load()

# What each tool runs headless, then resumed (its newest conversation, from saved state).
# Codex and Aider refuse a workspace that is not a git repository unless told; OpenCode
# asks for a model its bundled list knows (models.dev may be out of reach).
PROMPTS: dict[str, tuple[str, str]] = {
    "claude": ("claude -p 'say pong'", "claude -p --continue 'say pong again'"),
    "codex": (
        "codex exec --skip-git-repo-check 'say pong'",
        "codex exec --skip-git-repo-check resume --last 'say pong again'",
    ),
    "opencode": (
        "opencode run -m openai/gpt-5 'say pong'",
        "opencode run -m openai/gpt-5 --continue 'say pong again'",
    ),
    "aider": (
        "aider --no-git --yes-always --message 'say pong'",
        "aider --no-git --yes-always --restore-chat-history --message 'say pong again'",
    ),
}
# The API each tool speaks: the path its prompt goes to.
API = {
    "claude": "/v1/messages",
    "codex": "/v1/responses",
    "opencode": "/v1/responses",
    "aider": "/v1/chat/completions",
}


@pytest.fixture(scope="module")
def built(
    session_incus: Incus, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """`coi build` with all four tools, as JSON; afterwards only the newest image stays."""
    folder = tmp_path_factory.mktemp("tools4")
    gateway = ipaddress.ip_interface(
        session_incus.get(f"networks/{NETWORK}")["config"]["ipv4.address"]
    ).ip
    config = folder / "build.toml"
    config.write_text(
        f"[build]\ntools = {json.dumps(list(TOOLS))}\n"
        f'dns_resolvers = ["{gateway}"]\nconnectivity_probe = "{gateway}"\n'
    )
    env = {
        "COI_CONFIG": str(config),
        "COI_HOME": str(folder / "home"),
        "COI_INCUS_PROJECT": session_incus.project,
    }
    done = coi("build", "--alias", ALIAS, "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    try:
        yield json.loads(done.stdout)
    finally:
        coi("image", "cleanup", f"{ALIAS}-", "--keep", "1", env=env)


@pytest.fixture
def workspace(
    incus: Incus,
    built: dict[str, Any],
    upstream: Upstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A workspace; a trusted config sending every tool's broker to the fake upstream,
    the host's key in a host variable."""
    ws = tmp_path / "ws"
    ws.mkdir()
    os.chown(ws, 1000, 1000)  # a user's project: `code` inside, as its owner outside
    user = Path(os.environ["HOME"]) / ".config" / "coi" / "config.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    tables = "".join(
        f'[tools.{t}]\nbinary = "{t}"\nupstreams = ["{upstream.url}"]\n' for t in TOOLS
    )
    user.write_text(
        f'[defaults]\nimage = "{ALIAS}"\n{tables}'
        f'[credentials]\napi_key_env = "{KEY_VAR}"\nca_file = "{upstream.ca}"\n'
    )
    monkeypatch.setenv(KEY_VAR, f"sk-real-{uuid.uuid4().hex}")
    monkeypatch.setenv("COI_CONTAINER_PREFIX", f"t4{uuid.uuid4().hex[:5]}-")
    monkeypatch.chdir(ws)
    return ws


def test_coi_build_reports_each_pinned_version(built: dict[str, Any]) -> None:
    assert set(built["tools"]) == set(TOOLS)
    for name in TOOLS:
        assert plan.reports(built["tools"][name], PINS.tools[name]), built["tools"]


def test_each_tool_answers_version_as_code(workspace: Path) -> None:
    script = "id -un; " + "; ".join(f"echo {t}: $({t} --version 2>&1)" for t in TOOLS)
    done = coi("run", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "code", done.stdout
    for name in TOOLS:
        shown = next((line for line in lines if line.startswith(f"{name}: ")), "")
        assert plan.reports(shown, PINS.tools[name]), done.stdout


def _asked(upstream: Upstream, since: int, tool: str) -> list[dict[str, Any]]:
    """The prompt requests (to the tool's API) the fake saw after the first `since`."""
    return [r for r in upstream.seen.requests[since:] if r["path"].split("?")[0] == API[tool]]


@pytest.mark.parametrize("tool", TOOLS)
def test_each_tool_answers_through_the_broker_and_resumes_its_state(
    workspace: Path, upstream: Upstream, tool: str
) -> None:
    first, again = PROMPTS[tool]
    done = coi("run", "--tool", tool, "--", "timeout", "180", "sh", "-c", first)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ANSWER in done.stdout, done.stdout + done.stderr
    asked = _asked(upstream, 0, tool)
    assert asked, [r["path"] for r in upstream.seen.requests]
    assert not any(ANSWER in r["body"] for r in asked)  # a new conversation
    # Through the broker: the host's key reached the fake, the placeholder never did.
    secret = os.environ[KEY_VAR]
    assert set(upstream.credentials()) == {secret if tool == "claude" else f"Bearer {secret}"}
    assert not any(PLACEHOLDER in json.dumps(r["headers"]) for r in upstream.seen.requests)
    # The conversation lives in the tool's state folder, not in the workspace.
    assert not [p.name for p in workspace.iterdir() if p.name.startswith(".aider.chat")]

    seen = len(upstream.seen.requests)
    resumed = coi("run", "--resume", "--tool", tool, "--", "timeout", "180", "sh", "-c", again)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert ANSWER in resumed.stdout, resumed.stdout + resumed.stderr
    later = _asked(upstream, seen, tool)
    assert any(ANSWER in r["body"] for r in later), [r["body"][:300] for r in later]

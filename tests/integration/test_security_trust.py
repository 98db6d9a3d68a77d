"""A hostile repository's .coi.toml: it cannot hang coi, open the network beyond what
restricted allows, or get approved for bytes the user was not shown."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coi.config import trust
from coi.incus.adapter import Incus
from tests.integration.helpers import Pty, coi, own_prefix, user_config_path
from tests.integration.netfixtures import Lab, make_lab

RISKY = '[network]\nmode = "open"\n[defaults]\nmount_claude_config = true\n'
BOUND = 60  # a command that has not ended by then hangs: the test fails, nothing is timed


@pytest.fixture
def workspace(
    incus: Incus, session_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A workspace whose user config (trusted) names the test image; our own prefix."""
    user = user_config_path()
    user.write_text(f'[defaults]\nimage = "{session_image}"\n')
    ws = tmp_path / "ws"
    ws.mkdir()
    own_prefix(monkeypatch, "st")
    monkeypatch.chdir(ws)
    return ws


def _bounded(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coi", *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=BOUND,
    )


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "outside-link", "folder"])
def test_a_project_file_that_is_not_a_regular_file_is_one_line_and_exit_2(
    workspace: Path, tmp_path: Path, kind: str
) -> None:
    target = workspace / ".coi.toml"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dev-zero-link":
        target.symlink_to("/dev/zero")
    elif kind == "outside-link":
        (tmp_path / "outside.toml").write_text(RISKY)
        target.symlink_to(tmp_path / "outside.toml")
    else:
        target.mkdir()
    commands = [
        ("run", "--", "true"),
        ("shell", "--background"),
        ("trust", "--yes"),
        ("config", "show"),
    ]
    for argv in commands:
        done = _bounded(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"coi: error: {target}: ")
        assert "not a regular file" in done.stderr
    assert trust.approvals() == {}


def test_trust_without_a_terminal_or_yes_is_refused_in_one_line(workspace: Path) -> None:
    (workspace / ".coi.toml").write_text(RISKY)
    done = _bounded("trust")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "no terminal to confirm on" in done.stderr and "--yes" in done.stderr
    assert trust.approvals() == {}


def test_trust_shows_digest_and_keys_and_approves_only_the_bytes_shown(workspace: Path) -> None:
    """The repository swaps the file while the user reads the review: the swap stays
    untrusted, since coi stored the digest of the bytes it showed."""
    project = workspace / ".coi.toml"
    project.write_text(RISKY)
    shown = trust.digest(project.read_bytes())
    session = Pty("trust")
    assert session.expect("[y/N]", timeout=BOUND), session.seen
    text = session.seen.decode()
    assert f"sha256 {shown}" in text
    assert re.search(r"network\.mode = \"open\"", text) and "mount_claude_config = true" in text
    project.write_text(RISKY + '[tool]\nname = "codex"\n# swapped after the review\n')
    session.type("y\n")
    assert session.wait(BOUND) == 0, session.seen
    assert trust.approvals()[str(project)].sha256 == shown
    after = _bounded("config", "show")
    assert after.returncode == 0 and "not trusted" in after.stderr
    assert 'network.mode = "restricted"' in after.stdout

    project.write_text(RISKY)  # the bytes that were shown: trusted
    after = _bounded("config", "show")
    assert after.returncode == 0 and after.stderr == "", after.stderr
    assert 'network.mode = "open"' in after.stdout


def test_trust_answered_no_approves_nothing(workspace: Path) -> None:
    (workspace / ".coi.toml").write_text(RISKY)
    session = Pty("trust")
    assert session.expect("[y/N]", timeout=BOUND), session.seen
    session.type("n\n")
    assert session.wait(BOUND) == 1
    assert trust.approvals() == {}


# --- an untrusted allowlist only tightens ---------------------------------------------------------


@pytest.fixture(scope="module")
def lab(session_incus: Incus, base_image: str) -> Iterator[Lab]:
    with make_lab(session_incus, base_image) as built:
        yield built


def _reach(*addresses: str) -> tuple[list[str], str]:
    """One `coi run`: for each address, whether its test server (TCP 8080) answered."""
    ask = "exec 3<>/dev/tcp/{}/8080; read -t 3 line <&3; echo $line"
    probes = [
        f"if timeout 4 bash -c {shlex.quote(ask.format(a))} | grep -q 'hello from'; "
        "then echo reached; else echo blocked; fi"
        for a in addresses
    ]
    done = coi("run", "--", "bash", "-c", "; ".join(probes))
    assert done.returncode == 0, done.stderr
    return done.stdout.split(), done.stderr


def _user_allowlist(session_image: str, entries: list[str]) -> None:
    user = user_config_path()
    listed = ", ".join(f'"{e}"' for e in entries)
    user.write_text(
        f'[defaults]\nimage = "{session_image}"\n[network]\nallowed_domains = [{listed}]\n'
    )


def test_an_untrusted_allowlist_that_would_open_a_private_address_stays_restricted(
    workspace: Path, lab: Lab, session_image: str
) -> None:
    """The user lists a private server; an untrusted file switching to allowlist would open
    it (restricted blocks it), so restricted applies, until the user trusts the file."""
    private, public, unlisted = lab.private_address, lab.pub(10), lab.pub(11)
    _user_allowlist(session_image, [private, public])
    (workspace / ".coi.toml").write_text('[network]\nmode = "allowlist"\n')
    reached, err = _reach(private, public, unlisted)
    assert reached == ["blocked", "reached", "reached"]  # restricted: public yes, private no
    warning = [line for line in err.splitlines() if "restricted applies" in line]
    assert len(warning) == 1 and private in warning[0] and "coi trust" in warning[0], err

    assert coi("trust", "--yes").returncode == 0
    reached, err = _reach(private, public, unlisted)
    assert reached == ["reached", "reached", "blocked"]  # the user's allowlist, as trusted
    assert "restricted applies" not in err


def test_an_untrusted_allowlist_of_public_addresses_applies(
    workspace: Path, lab: Lab, session_image: str
) -> None:
    private, public, unlisted = lab.private_address, lab.pub(10), lab.pub(11)
    _user_allowlist(session_image, [public])
    (workspace / ".coi.toml").write_text('[network]\nmode = "allowlist"\n')
    reached, err = _reach(private, public, unlisted)
    assert reached == ["blocked", "reached", "blocked"]  # tighter than restricted: applied
    assert "restricted applies" not in err and "not trusted" not in err

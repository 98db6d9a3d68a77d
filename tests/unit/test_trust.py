"""Trust: what an untrusted .coi.toml may set, the approval store, and load() using both."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coi.config import trust
from coi.config.load import default_layer, load, merge
from coi.core.errors import CoiError, ConfigError

LOWER = merge(
    default_layer().data,
    {
        "limits": {
            "cpu": 4,
            "memory": "4GiB",
            "processes": 500,
            "max_duration": "2h",
            "idle_stop": "1h",
        },
        "tools": {"mine": {"binary": "mine"}},
        "profiles": {"rust": {"image": "coi-rust"}},
    },
)


def screened(project: dict[str, Any], lower: dict[str, Any] = LOWER) -> dict[str, str]:
    """key -> reason of every ignored key."""
    _, ignored = trust.screen(project, lower, "p.toml")
    return {item.key: item.reason for item in ignored}


REFUSED = [
    ({"network": {"mode": "open"}}, "network.mode", "only make the mode stricter"),
    ({"network": {"allowed_domains": ["evil.com"]}}, "network.allowed_domains", "network"),
    ({"network": {"refresh_interval_minutes": 0}}, "network.refresh_interval_minutes", "network"),
    ({"network": {"resolver": "1.1.1.1"}}, "network.resolver", "network"),
    ({"paths": {"storage_dir": "/etc"}}, "paths.storage_dir", "host folders"),
    ({"incus": {"project": "other"}}, "incus.project", "Incus"),
    ({"incus": {"remote": "https://x:8443"}}, "incus.remote", "Incus"),
    ({"defaults": {"mount_claude_config": True}}, "defaults.mount_claude_config", "turned on"),
    ({"profiles": {"evil": {"image": "x"}}}, "profiles.evil.image", "profiles"),
    ({"profiles": {"rust": {"image": "other"}}}, "profiles.rust.image", "profiles"),
    ({"profiles": {"empty": {}}}, "profiles.empty", "profiles"),
    ({"tools": {"evil": {"install": ["curl"]}}}, "tools.evil.install", "code"),
    ({"tools": {"mine": {"install": ["curl"]}}}, "tools.mine.install", "code"),
    ({"tool": {"binary": "/bin/sh"}}, "tool.binary", "binary"),
    ({"tool": {"name": "ghost"}}, "tool.name", "no trusted file defines"),
    ({"build": {"tools": ["claude", "ghost"]}}, "build.tools", "no trusted file defines"),
    ({"certificates": {"files": ["/tmp/ca.pem"]}}, "certificates.files", "CAs"),
    ({"certificates": {"trust_host": False}}, "certificates.trust_host", "CAs"),
    ({"build": {"dns_resolvers": ["9.9.9.9"]}}, "build.dns_resolvers", "DNS"),
    ({"build": {"connectivity_probe": "9.9.9.9"}}, "build.connectivity_probe", "probe"),
    ({"build": {"keep_dns_fix": True}}, "build.keep_dns_fix", "DNS"),
    ({"limits": {"memory": "8GiB"}}, "limits.memory", "not raise it"),
    ({"limits": {"memory": "50%"}}, "limits.memory", "not raise it"),
    ({"limits": {"cpu": 8}}, "limits.cpu", "not raise it"),
    ({"limits": {"cpu": "0-1"}}, "limits.cpu", "not raise it"),
    ({"limits": {"processes": 501}}, "limits.processes", "not raise it"),
    ({"limits": {"max_duration": "3h"}}, "limits.max_duration", "not raise it"),
    ({"limits": {"idle_stop": "1d"}}, "limits.idle_stop", "not raise it"),
    (
        {"defaults": {"environment": {"ANTHROPIC_BASE_URL": "https://evil"}}},
        "defaults.environment.ANTHROPIC_BASE_URL",
        "redirect the tool",
    ),
]


@pytest.mark.parametrize(("project", "key", "reason"), REFUSED)
def test_an_untrusted_file_cannot_weaken_security(
    project: dict[str, Any], key: str, reason: str
) -> None:
    ignored = screened(project)
    assert list(ignored) == [key]
    assert reason in ignored[key]


ALLOWED = [
    {"network": {"mode": "restricted"}},  # the value already in force
    {"network": {"mode": "allowlist"}},  # stricter
    {"defaults": {"mount_claude_config": False}},
    {"defaults": {"image": "coi-rust", "persistent": True, "max_slots": 3}},
    {"tool": {"name": "aider"}},
    {"tool": {"name": "mine"}},  # defined by a trusted file
    {"build": {"base": "debian/13", "tools": ["claude", "mine"]}},
    {"build": {"dns_resolvers": ["8.8.8.8", "8.8.4.4", "1.1.1.1"]}},  # the default restated
    {"limits": {"memory": "1GiB", "cpu": 2, "processes": 100}},
    {"limits": {"max_duration": "1h59m", "idle_stop": "30m"}},  # shorter, or newly set
    {"profiles": {"rust": {"image": "coi-rust"}}},  # restates a trusted profile
    {"network": {}, "defaults": {"environment": {}}},
]


@pytest.mark.parametrize("project", ALLOWED)
def test_an_untrusted_file_keeps_what_is_harmless(project: dict[str, Any]) -> None:
    kept, ignored = trust.screen(project, LOWER, "p.toml")
    assert ignored == ()
    assert kept == project


def test_stricter_modes_in_order() -> None:
    for low, high in [("open", "restricted"), ("restricted", "allowlist"), ("open", "allowlist")]:
        lower = {"network": {"mode": low}}
        assert screened({"network": {"mode": high}}, lower) == {}
        assert list(screened({"network": {"mode": low}}, {"network": {"mode": high}})) == [
            "network.mode"
        ]


def test_a_limit_the_trusted_layers_leave_unset_may_be_added() -> None:
    lower = default_layer().data
    project = {"limits": {"memory": "64GiB", "cpu": "0-31", "processes": 99999}}
    assert screened(project, lower) == {}


def test_cpu_sets_and_memory_units_compare_only_when_alike() -> None:
    assert trust.tighter("cpu", "0-1", "0-3")
    assert not trust.tighter("cpu", "0,4", "0-3")
    assert not trust.tighter("cpu", 2, "0-3")
    assert trust.tighter("memory", "1000MB", "1GiB")
    assert not trust.tighter("memory", "10%", "1GiB")
    assert trust.tighter("memory", "10%", "20%")
    assert not trust.tighter("processes", True, 5)
    assert trust.tighter("max_duration", "90m", "2h")
    assert not trust.tighter("idle_stop", "2h1s", "2h")
    assert not trust.tighter("idle_stop", 60, "2h")  # not a duration: refused


def test_screen_keeps_the_rest_and_never_mutates() -> None:
    project = {
        "defaults": {"image": "x", "mount_claude_config": True},
        "network": {"mode": "open"},
    }
    before = json.dumps(project, sort_keys=True)
    kept, ignored = trust.screen(project, LOWER, "p.toml")
    assert kept == {"defaults": {"image": "x"}}
    assert [i.key for i in ignored] == ["defaults.mount_claude_config", "network.mode"]
    assert ignored[0].value is True
    assert ignored[0].source == "p.toml"
    assert json.dumps(project, sort_keys=True) == before


def test_the_warning_names_every_key_once_and_the_fix(tmp_path: Path) -> None:
    _, ignored = trust.screen(
        {
            "network": {"mode": "open"},
            "profiles": {"evil": {"image": "x", "persistent": True}},
        },
        LOWER,
        "/w/.coi.toml",
    )
    line = trust.warning(ignored, Path("/w s"))
    assert line == (
        "/w/.coi.toml: not trusted, so these keys are ignored: network.mode, profiles.evil; "
        "review the file, then run `coi trust --workspace '/w s'` to apply them"
    )


# --- the store ----------------------------------------------------------------------------------


def test_approve_pins_the_exact_bytes(tmp_path: Path) -> None:
    path = tmp_path / ".coi.toml"
    assert not trust.is_trusted(path, "abc")
    trust.approve(path, "abc", now="2025-01-01T00:00:00+00:00")
    assert trust.is_trusted(path, "abc")
    assert not trust.is_trusted(path, "abd")
    assert not trust.is_trusted(tmp_path / "other" / ".coi.toml", "abc")
    assert trust.approvals()[str(path)].approved_at == "2025-01-01T00:00:00+00:00"


def test_the_store_is_private_json_under_coi_home(isolated_home: Path, tmp_path: Path) -> None:
    trust.approve(tmp_path / ".coi.toml", "d1")
    store = isolated_home / ".coi" / "trust.json"
    assert trust.store_path() == store
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    body = json.loads(store.read_text())
    assert body["version"] == 1
    assert body["files"][str(tmp_path / ".coi.toml")]["sha256"] == "d1"
    assert [p.name for p in store.parent.iterdir() if p.name.startswith(".trust-")] == []


def test_the_key_resolves_the_folder(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    trust.approve(tmp_path / "link" / ".coi.toml", "d")
    assert trust.is_trusted(real / ".coi.toml", "d")


def test_revoke(tmp_path: Path) -> None:
    path = tmp_path / ".coi.toml"
    trust.approve(path, "d")
    assert trust.revoke(path) is True
    assert trust.revoke(path) is False
    assert not trust.is_trusted(path, "d")


def test_a_failed_write_leaves_the_old_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust.approve(tmp_path / "a" / ".coi.toml", "one")

    def broken(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        trust.approve(tmp_path / "b" / ".coi.toml", "two")
    assert list(trust.approvals()) == [str(tmp_path / "a" / ".coi.toml")]
    leftovers = [p for p in trust.store_path().parent.iterdir() if p.name.startswith(".trust-")]
    assert leftovers == []


@pytest.mark.parametrize("body", ["{not json", '{"version": 9, "files": {}}', '{"files": 3}'])
def test_a_broken_store_is_one_clear_error(isolated_home: Path, body: str) -> None:
    store = trust.store_path()
    store.parent.mkdir(parents=True)
    store.write_text(body)
    with pytest.raises(CoiError, match=r"trust\.json: unreadable trust store .*; delete it"):
        trust.approvals()


# --- load() with trust --------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


RISKY = '[defaults]\nmount_claude_config = true\nmax_slots = 4\n[network]\nmode = "open"\n'


def approve_as_is(workspace: Path) -> None:
    path = workspace / ".coi.toml"
    trust.approve(path, trust.digest(path.read_bytes()))


def test_an_untrusted_file_is_screened_with_one_warning(workspace: Path) -> None:
    (workspace / ".coi.toml").write_text(RISKY)
    cfg = load(workspace, environ=dict(os.environ))
    assert cfg.network.mode == "restricted"
    assert cfg.defaults.mount_claude_config is False
    assert cfg.defaults.max_slots == 4  # the rest applies
    assert [i.key for i in cfg.ignored] == ["defaults.mount_claude_config", "network.mode"]
    assert len(cfg.warnings) == 1
    assert "defaults.mount_claude_config, network.mode" in cfg.warnings[0]
    assert f"coi trust --workspace {workspace}" in cfg.warnings[0]
    assert cfg.origins["network.mode"] == "built-in defaults"


def test_after_trust_it_applies_and_an_edit_asks_again(workspace: Path) -> None:
    (workspace / ".coi.toml").write_text(RISKY)
    approve_as_is(workspace)
    cfg = load(workspace, environ=dict(os.environ))
    assert (cfg.network.mode, cfg.defaults.mount_claude_config) == ("open", True)
    assert cfg.ignored == cfg.warnings == ()
    assert cfg.origins["network.mode"] == str(workspace / ".coi.toml")

    with (workspace / ".coi.toml").open("a") as handle:
        handle.write("# one more line\n")
    cfg = load(workspace, environ=dict(os.environ))
    assert cfg.network.mode == "restricted"
    assert len(cfg.warnings) == 1


def test_user_env_and_flag_layers_are_always_trusted(workspace: Path, isolated_home: Path) -> None:
    user = isolated_home / ".config" / "coi" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[network]\nmode = "open"\n[defaults]\nmount_claude_config = true\n')
    assert load(workspace, environ=dict(os.environ)).network.mode == "open"
    environ = {**os.environ, "COI_INCUS_PROJECT": "p2"}
    cfg = load(workspace, environ=environ, flags={"network": "allowlist"})
    assert (cfg.incus.project, cfg.network.mode) == ("p2", "allowlist")


def test_an_untrusted_file_is_compared_with_the_trusted_layers_below(
    workspace: Path, isolated_home: Path
) -> None:
    user = isolated_home / ".config" / "coi" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[network]\nmode = "open"\n')
    (workspace / ".coi.toml").write_text('[network]\nmode = "restricted"\n')
    cfg = load(workspace, environ=dict(os.environ))
    assert cfg.network.mode == "restricted"  # stricter than the user's: kept
    assert cfg.warnings == ()


def test_a_profile_only_an_untrusted_file_defines_is_refused_with_the_fix(
    workspace: Path,
) -> None:
    (workspace / ".coi.toml").write_text('[profiles.evil]\nnetwork = "open"\n')
    with pytest.raises(ConfigError) as caught:
        load(workspace, environ=dict(os.environ), profile="evil")
    message = str(caught.value)
    assert message.startswith("command line: --profile: profile 'evil' is defined only in")
    assert "coi trust" in message
    approve_as_is(workspace)
    assert load(workspace, environ=dict(os.environ), profile="evil").network.mode == "open"


def test_a_broken_project_file_is_still_an_error(workspace: Path) -> None:
    (workspace / ".coi.toml").write_text('[network]\nmode = "strict"\n')
    with pytest.raises(ConfigError, match=r"\.coi\.toml: line 2: network\.mode: 'strict'"):
        load(workspace, environ=dict(os.environ))


def test_the_layer_digest_is_of_the_bytes_parsed(workspace: Path) -> None:
    (workspace / ".coi.toml").write_bytes(b"[defaults]\nmax_slots = 2\n")
    cfg = load(workspace, environ=dict(os.environ))
    project = next(layer for layer in cfg.layers if layer.path == workspace / ".coi.toml")
    assert project.digest == trust.digest(b"[defaults]\nmax_slots = 2\n")


# --- what an untrusted file changed; its allowlist only tightens ---------------------------------


def _user_config(home: Path, text: str) -> None:
    user = home / ".config" / "coi" / "config.toml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(text)


def test_untrusted_keys_name_what_the_file_changed_not_what_it_restated(
    workspace: Path, isolated_home: Path
) -> None:
    _user_config(isolated_home, '[tool]\nname = "claude"\n')
    (workspace / ".coi.toml").write_text('[tool]\nname = "claude"\n[defaults]\nmax_slots = 3\n')
    assert load(workspace, environ=dict(os.environ)).untrusted_keys == ("defaults.max_slots",)
    (workspace / ".coi.toml").write_text('[tool]\nname = "codex"\n')
    cfg = load(workspace, environ=dict(os.environ))
    assert (cfg.tool.name, cfg.untrusted_keys) == ("codex", ("tool.name",))
    approve_as_is(workspace)
    assert load(workspace, environ=dict(os.environ)).untrusted_keys == ()


@pytest.mark.parametrize(
    ("user", "domains", "expected"),
    [
        ("restricted", ["github.com", "1.1.1.1:443"], "allowlist"),  # only public: applies
        ("restricted", ["github.com", "192.168.1.5"], "restricted"),
        ("open", ["10.0.0.7:22"], "restricted"),  # stricter than open, and safe
        ("restricted", ["100.64.3.1"], "restricted"),  # CGNAT
        ("allowlist", ["192.168.1.5"], "allowlist"),  # the user's own choice stands
    ],
)
def test_an_untrusted_allowlist_applies_only_when_it_opens_nothing_restricted_blocks(
    workspace: Path, isolated_home: Path, user: str, domains: list[str], expected: str
) -> None:
    listed = ", ".join(f'"{d}"' for d in domains)
    _user_config(isolated_home, f'[network]\nmode = "{user}"\nallowed_domains = [{listed}]\n')
    (workspace / ".coi.toml").write_text('[network]\nmode = "allowlist"\n')
    cfg = load(workspace, environ=dict(os.environ))
    assert cfg.network.mode == expected
    held = expected == "restricted"
    assert len(cfg.warnings) == (1 if held else 0)
    if held:
        assert "so restricted applies" in cfg.warnings[0] and "coi trust" in cfg.warnings[0]
        assert [i.key for i in cfg.ignored] == ["network.mode"]
    approve_as_is(workspace)
    assert load(workspace, environ=dict(os.environ)).network.mode == "allowlist"


def test_the_allowlist_checked_is_the_final_one(workspace: Path) -> None:
    """A private address from a layer above the project file counts too."""
    (workspace / ".coi.toml").write_text('[network]\nmode = "allowlist"\n')
    environ = {**os.environ, "COI_NETWORK_ALLOWED_DOMAINS": "172.16.0.2"}
    assert load(workspace, environ=environ).network.mode == "restricted"


def test_an_untrusted_file_cannot_let_mcp_secrets_in(workspace: Path) -> None:
    (workspace / ".coi.toml").write_text("[credentials]\nclaude_mcp_env = true\n")
    cfg = load(workspace, environ=dict(os.environ))
    assert cfg.credentials.claude_mcp_env is False
    assert [i.key for i in cfg.ignored] == ["credentials.claude_mcp_env"]
    approve_as_is(workspace)
    assert load(workspace, environ=dict(os.environ)).credentials.claude_mcp_env is True


# --- reading .coi.toml: a regular file, never blocking ------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "outside-link", "folder", "huge"])
def test_a_project_file_that_is_not_a_small_regular_file_is_one_config_error(
    workspace: Path, tmp_path: Path, kind: str
) -> None:
    target = workspace / ".coi.toml"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dev-zero-link":
        target.symlink_to("/dev/zero")
    elif kind == "outside-link":
        (tmp_path / "theirs.toml").write_text("[defaults]\nmax_slots = 2\n")
        target.symlink_to(tmp_path / "theirs.toml")
    elif kind == "folder":
        target.mkdir()
    else:
        target.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    with pytest.raises(ConfigError) as caught:
        load(workspace, environ=dict(os.environ))
    message = str(caught.value)
    assert message.startswith(f"{target}: ") and "\n" not in message
    link = "a symbolic link"
    words = {"fifo": "a FIFO", "dev-zero-link": link, "outside-link": link}
    words.update({"folder": "a folder", "huge": "larger than"})
    assert words[kind] in message


@given(st.integers(0, 99), st.integers(0, 99))
def test_an_untrusted_file_may_shrink_the_warm_pool_but_never_grow_it(
    lower: int, asked: int
) -> None:
    reason = trust.refusal(("pool", "size"), asked, {"pool": {"size": lower}})
    assert (reason is None) == (asked <= lower)
    if reason is not None:
        assert "warm pool" in reason


def test_an_untrusted_pool_over_no_trusted_one_is_refused() -> None:
    assert trust.refusal(("pool", "size"), 2, {}) is not None
    assert trust.refusal(("pool", "size"), 0, {}) is None

"""Config layers, validation errors, profiles, flags and `coi config show`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coi.commands.config import show
from coi.config.files import load_file
from coi.config.load import (
    Config,
    Layer,
    default_layer,
    env_layer,
    flags_layer_from,
    load,
    merge,
    merge_with_origins,
    validate,
)
from coi.core.errors import ConfigError, UsageError

ShowArgs = Callable[..., argparse.Namespace]


def load_here(workspace: Path, **kwargs: Any) -> Config:
    kwargs.setdefault("environ", dict(os.environ))
    return load(workspace, **kwargs)


def error_of(workspace: Path, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_here(workspace, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- defaults and files -------------------------------------------------------------------------


def test_with_no_files_every_value_is_a_built_in_default(
    workspace: Path, isolated_home: Path
) -> None:
    config = load_here(workspace)
    assert config.defaults.image == "coi"
    assert config.defaults.persistent is False
    assert config.defaults.max_slots == 10
    assert config.tool.name == "claude"
    assert config.network.mode == "restricted"
    assert config.incus.project == "default"
    assert config.build.tools == ("claude",)
    assert config.build.dns_resolvers == ("8.8.8.8", "8.8.4.4", "1.1.1.1")
    assert config.certificates.trust_host is True
    assert config.limits.cpu is None
    assert config.paths.storage_dir == isolated_home / ".coi" / "storage"
    assert set(config.origins.values()) == {"built-in defaults"}
    assert config.warnings == ()


def test_the_default_layer_is_valid() -> None:
    validate(default_layer().data, "built-in defaults")


def test_a_missing_file_is_skipped(tmp_path: Path) -> None:
    assert load_file(tmp_path / "absent.toml") is None


def test_a_file_layer_is_labelled_with_its_path(user_file: Path) -> None:
    user_file.write_text('[defaults]\nimage = "mine"\n')
    layer = load_file(user_file)
    assert layer == Layer(str(user_file), {"defaults": {"image": "mine"}}, user_file)


def test_the_readme_example_loads(user_file: Path, workspace: Path) -> None:
    user_file.write_text(
        '[defaults]\nimage = "coi"\npersistent = true\nmount_claude_config = true\n'
        '[tool]\nname = "claude"\n[paths]\nstorage_dir = "~/.coi/storage"\n'
        '[incus]\nproject = "default"\ngroup = "incus-admin"\nclaude_uid = 1000\n'
        '[profiles.rust]\nimage = "coi-rust"\nenvironment = { RUST_BACKTRACE = "1" }\n'
        "persistent = true\n"
    )
    config = load_here(workspace)
    assert config.defaults.persistent is True
    assert config.profiles["rust"].environment == {"RUST_BACKTRACE": "1"}
    assert config.profiles["rust"].tool is None


# --- broken files: one line naming file, line, key and fix --------------------------------------

BROKEN = [
    pytest.param(
        '[network]\nmode = "open\n', "line 2: invalid TOML (", "fix the syntax", id="toml"
    ),
    pytest.param(
        '[network]\nmdoe = "open"\n',
        "line 2: network.mdoe: unknown key; did you mean 'mode'?",
        "known: mode, allowed_domains, refresh_interval_minutes, resolver",
        id="unknown-key",
    ),
    pytest.param(
        '[netwrok]\nmode = "open"\n',
        "line 1: netwrok: unknown section; did you mean 'network'?",
        "known: defaults, tool, tools,",
        id="unknown-section",
    ),
    pytest.param(
        '[defaults]\nimage = "x"\n\n[network]\nrefresh_interval_minutes = "30"\n',
        "line 5: network.refresh_interval_minutes: expected a whole number, got a string ('30')",
        "without quotes",
        id="wrong-type",
    ),
    pytest.param(
        '[defaults]\npersistent = "yes"\n',
        "line 2: defaults.persistent: expected a boolean, got a string ('yes')",
        "write true or false",
        id="wrong-type-bool",
    ),
    pytest.param(
        '[network]\nmode = "strict"\n',
        "line 2: network.mode: 'strict' is not one of restricted, allowlist, open",
        "use one of those",
        id="bad-value",
    ),
    pytest.param(
        "[defaults]\nmax_slots = 0\n",
        "defaults.max_slots: 0 is out of range",
        "from 1 to 99",
        id="out-of-range",
    ),
    pytest.param(
        "[defaults]\nenvironment = { A = 1 }\n",
        "line 2: defaults.environment.A: expected a string, got an integer (1)",
        "quotes",
        id="env-not-string",
    ),
    pytest.param(
        '[network]\nallowed_domains = ["github.com", "http://x"]\n',
        "network.allowed_domains: 'http://x' is not a hostname",
        "port 1-65535",
        id="bad-domain",
    ),
    pytest.param(
        '[incus]\nremote = "http://host"\n',
        "incus.remote: 'http://host' is not valid",
        "https://",
        id="remote-not-https",
    ),
    pytest.param(
        '[incus]\nnetwork = "Coi_Bridge_Too_Long"\n',
        "incus.network: 'Coi_Bridge_Too_Long' is not valid",
        "1-15 lowercase",
        id="incus-network-name",
    ),
    pytest.param(
        '[tools.mytool]\nbinary = "m"\nstate_dir = "../escape"\n',
        "line 3: tools.mytool.state_dir: '../escape' is not a relative path",
        "without '..'",
        id="state-dir-escapes",
    ),
    pytest.param(
        '[tools.mytool]\nargs = ["--x"]\n',
        "line 1: tools.mytool.binary: is missing",
        'add binary = "mytool"',
        id="tool-without-binary",
    ),
    pytest.param(
        '[tool]\nname = "nope"\n',
        "line 2: tool.name: unknown tool 'nope'",
        "claude, codex, opencode, aider, shell",
        id="unknown-tool",
    ),
    pytest.param(
        '[build]\ntools = ["claude", "nope"]\n',
        "build.tools: unknown tool 'nope'",
        "[tools.nope]",
        id="unknown-build-tool",
    ),
    pytest.param(
        '[limits]\nmemory = "lots"\n',
        "limits.memory: 'lots' is not valid",
        '"2GiB"',
        id="bad-memory",
    ),
    pytest.param(
        "[profiles.rust]\npersistent = 1\n",
        "line 2: profiles.rust.persistent: expected a boolean, got an integer (1)",
        "true or false",
        id="profile-wrong-type",
    ),
    pytest.param(
        '[profiles.rust.limits]\ngpu = "1"\n',
        "line 2: profiles.rust.limits.gpu: unknown key",
        "known: cpu, memory, processes",
        id="profile-limits-unknown",
    ),
]


@pytest.mark.parametrize(("text", "problem", "fix"), BROKEN)
def test_a_broken_user_file_names_file_key_line_and_fix(
    user_file: Path, workspace: Path, text: str, problem: str, fix: str
) -> None:
    user_file.write_text(text)
    message = error_of(workspace)
    assert message.startswith(f"{user_file}: ")
    assert problem in message
    assert fix in message.partition("; ")[2]


def test_good_values_of_checked_keys_are_accepted(user_file: Path, workspace: Path) -> None:
    user_file.write_text(
        '[network]\nmode = "allowlist"\nresolver = "1.1.1.1"\n'
        'allowed_domains = ["github.com", "8.8.8.8", "example.com:443", "api.anthropic.com"]\n'
        '[limits]\ncpu = "0-1"\nmemory = "512MiB"\nprocesses = 500\n'
        '[build]\nbase = "images:debian/12"\n'
        '[incus]\nremote = "https://host:8443"\nstorage_pool = "my.pool_1"\n'
    )
    config = load_here(workspace)
    assert config.network.allowed_domains[2] == "example.com:443"
    assert config.limits == type(config.limits)(cpu="0-1", memory="512MiB", processes=500)
    assert config.incus.remote == "https://host:8443"


def test_a_table_meeting_a_value_is_an_error_naming_the_layer() -> None:
    layers = [Layer("low", {"defaults": {"image": "x"}}), Layer("high", {"defaults": 3})]
    with pytest.raises(ConfigError, match=r"^high: defaults: a table in one layer"):
        merge_with_origins(layers)
    with pytest.raises(ConfigError, match=r"defaults.image: a table in one layer"):
        merge({"defaults": {"image": "x"}}, {"defaults": {"image": {"y": 1}}})


# --- layer order --------------------------------------------------------------------------------

LAYERS = ["system", "user", "project", "coi_config", "env", "profile", "flags"]


def write_every_layer(home: Path, workspace: Path, tmp: Path, up_to: str) -> dict[str, Any]:
    """Set defaults.image in every layer up to `up_to`; return load()'s keyword arguments."""
    wanted = LAYERS[: LAYERS.index(up_to) + 1]
    environ = dict(os.environ)
    files = {
        "system": Path(environ["COI_SYSTEM_CONFIG"]),
        "user": home / ".config" / "coi" / "config.toml",
        "project": workspace / ".coi.toml",
        "coi_config": tmp / "named.toml",
    }
    profile = '[profiles.p]\nimage = "from-profile"\n'
    for name, path in files.items():
        if name in wanted:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f'[defaults]\nimage = "from-{name}"\n' + profile * (name == "user"))
    if "coi_config" in wanted:
        environ["COI_CONFIG"] = str(files["coi_config"])
    if "env" in wanted:
        environ["COI_DEFAULTS_IMAGE"] = "from-env"
    return {
        "environ": environ,
        "profile": "p" if "profile" in wanted else None,
        "flags": {"image": "from-flags"} if "flags" in wanted else None,
    }


@pytest.mark.parametrize("highest", LAYERS)
def test_the_highest_layer_that_sets_a_key_wins(
    isolated_home: Path, workspace: Path, tmp_path: Path, highest: str
) -> None:
    kwargs = write_every_layer(isolated_home, workspace, tmp_path, highest)
    config = load(workspace, **kwargs)
    assert config.defaults.image == f"from-{highest}"
    labels = {
        "system": os.environ["COI_SYSTEM_CONFIG"],
        "user": str(isolated_home / ".config" / "coi" / "config.toml"),
        "project": str(workspace / ".coi.toml"),
        "coi_config": str(tmp_path / "named.toml"),
        "env": "environment",
        "profile": "profile p",
        "flags": "command line",
    }
    assert config.origins["defaults.image"] == labels[highest]


def test_a_missing_coi_config_file_is_an_error(workspace: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    message = error_of(workspace, environ={**os.environ, "COI_CONFIG": str(missing)})
    assert message.startswith(f"environment variable COI_CONFIG: {missing}: no such file;")


def test_a_layer_that_omits_a_boolean_keeps_it(user_file: Path, workspace: Path) -> None:
    user_file.write_text("[defaults]\npersistent = true\n[certificates]\ntrust_host = false\n")
    (workspace / ".coi.toml").write_text('[defaults]\nimage = "other"\n')
    config = load_here(workspace, flags={"persistent": None, "image": None, "env": None})
    assert config.defaults.persistent is True
    assert config.certificates.trust_host is False
    assert config.origins["defaults.persistent"] == str(user_file)


def test_environment_tables_merge_per_variable(
    user_file: Path, workspace: Path, tmp_path: Path
) -> None:
    user_file.write_text('[defaults.environment]\nA = "user"\nB = "user"\n')
    named = tmp_path / "named.toml"
    named.write_text('[defaults.environment]\nB = "named"\n')
    environ = {**os.environ, "COI_CONFIG": str(named)}
    config = load(workspace, environ=environ, flags={"env": ["C=flag"]})
    assert config.defaults.environment == {"A": "user", "B": "named", "C": "flag"}
    assert config.origins["defaults.environment.A"] == str(user_file)
    assert config.origins["defaults.environment.C"] == "command line"


def test_lists_are_replaced_not_appended(user_file: Path, workspace: Path, tmp_path: Path) -> None:
    user_file.write_text('[network]\nallowed_domains = ["a.com", "b.com"]\n')
    named = tmp_path / "named.toml"
    named.write_text('[network]\nallowed_domains = ["c.com"]\n')
    environ = {**os.environ, "COI_CONFIG": str(named)}
    assert load(workspace, environ=environ).network.allowed_domains == ("c.com",)


def test_xdg_config_home_is_honoured(isolated_home: Path, workspace: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "xdg"
    (elsewhere / "coi").mkdir(parents=True)
    (elsewhere / "coi" / "config.toml").write_text('[defaults]\nimage = "xdg"\n')
    (isolated_home / ".config" / "coi").mkdir(parents=True)
    (isolated_home / ".config" / "coi" / "config.toml").write_text('[defaults]\nimage = "dot"\n')
    environ = {**os.environ, "XDG_CONFIG_HOME": str(elsewhere)}
    assert load(workspace, environ=environ).defaults.image == "xdg"
    environ.pop("XDG_CONFIG_HOME")
    assert load(workspace, environ=environ).defaults.image == "dot"


def test_tilde_is_expanded_against_home(
    user_file: Path, workspace: Path, isolated_home: Path
) -> None:
    user_file.write_text(
        '[paths]\nstorage_dir = "~/store"\n[incus]\nclient_cert = "~/c.crt"\n'
        '[certificates]\nfiles = ["~/ca.pem", "/etc/ca.pem"]\n'
    )
    config = load_here(workspace)
    assert config.paths.storage_dir == isolated_home / "store"
    assert config.incus.client_cert == isolated_home / "c.crt"
    assert config.certificates.files == (isolated_home / "ca.pem", Path("/etc/ca.pem"))


def test_storage_dir_defaults_under_coi_home(workspace: Path, tmp_path: Path) -> None:
    config = load(workspace, environ={**os.environ, "COI_HOME": str(tmp_path / "ch")})
    assert config.paths.storage_dir == tmp_path / "ch" / "storage"


def test_deprecated_sessions_dir_is_accepted_with_a_warning(
    user_file: Path, workspace: Path
) -> None:
    user_file.write_text('[paths]\nsessions_dir = "~/.coi/sessions"\n')
    config = load_here(workspace)
    assert len(config.warnings) == 1
    assert config.warnings[0].startswith(f"{user_file}: paths.sessions_dir is deprecated")


# --- environment variables ----------------------------------------------------------------------


def test_env_variables_are_parsed_by_kind() -> None:
    layer = env_layer(
        {
            "COI_NETWORK_MODE": "open",
            "COI_DEFAULTS_MAX_SLOTS": " 20 ",
            "COI_DEFAULTS_PERSISTENT": "Yes",
            "COI_NETWORK_ALLOWED_DOMAINS": "github.com, pypi.org,,",
            "COI_LIMITS_CPU": "0-1",
            "COI_LIMITS_PROCESSES": "100",
            "PATH": "/bin",
        }
    )
    assert layer.source == "environment"
    assert layer.data == {
        "network": {"mode": "open", "allowed_domains": ["github.com", "pypi.org"]},
        "defaults": {"max_slots": 20, "persistent": True},
        "limits": {"cpu": "0-1", "processes": 100},
    }


@pytest.mark.parametrize(
    "name",
    [
        "COI_CONFIG",
        "COI_HOME",
        "COI_CONTAINER_PREFIX",
        "COI_SYSTEM_CONFIG",
        "COI_DEBUG",
        "COI_FAULT_LAUNCH",
        "COI_TEST_NETWORK_X",
        "COI_SOMETHING_ELSE",
        "COI_NETWORK",
        "COI_network_mode",
    ],
)
def test_reserved_and_foreign_coi_variables_are_not_config(name: str) -> None:
    assert env_layer({name: "x"}).data == {}


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("COI_NETWORK_MDOE", "open", "network.mdoe: unknown key; did you mean 'mode'?"),
        ("COI_DEFAULTS_PERSISTENT", "maybe", "'maybe' is not a boolean; use 1, 0, true"),
        ("COI_DEFAULTS_MAX_SLOTS", "ten", "'ten' is not a whole number"),
        ("COI_DEFAULTS_MAX_SLOTS", "100", "100 is out of range"),
        ("COI_NETWORK_MODE", "strict", "'strict' is not one of restricted, allowlist, open"),
        ("COI_DEFAULTS_ENVIRONMENT", "A=1", "a table is not settable from here"),
        ("COI_PROFILES_RUST", "x", "not settable from the environment"),
    ],
)
def test_a_bad_env_variable_is_an_error_naming_it(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        env_layer({name: value})
    assert str(caught.value).startswith(f"environment variable {name}: ")
    assert expected in str(caught.value)


# --- profiles and flags -------------------------------------------------------------------------


def test_a_profile_maps_its_keys_onto_sections(user_file: Path, workspace: Path) -> None:
    user_file.write_text(
        '[tools.mytool]\nbinary = "mt"\n'
        '[profiles.rust]\nimage = "coi-rust"\npersistent = true\ntool = "mytool"\n'
        'network = "open"\nenvironment = { RUST_BACKTRACE = "1" }\n'
        '[profiles.rust.limits]\ncpu = 2\nmemory = "2GiB"\n'
    )
    config = load_here(workspace, profile="rust")
    assert config.profile == "rust"
    assert config.defaults.image == "coi-rust"
    assert config.defaults.persistent is True
    assert config.defaults.environment == {"RUST_BACKTRACE": "1"}
    assert config.tool.name == "mytool"
    assert config.network.mode == "open"
    assert (config.limits.cpu, config.limits.memory) == (2, "2GiB")
    assert config.origins["limits.cpu"] == "profile rust"


def test_an_unknown_profile_lists_the_known_ones(user_file: Path, workspace: Path) -> None:
    user_file.write_text('[profiles.rust]\nimage = "r"\n[profiles.go]\nimage = "g"\n')
    message = error_of(workspace, profile="python")
    assert message == "command line: --profile: unknown profile 'python'; known profiles: go, rust"


def test_an_unknown_profile_says_when_none_are_defined(workspace: Path) -> None:
    assert "no profiles are defined" in error_of(workspace, profile="python")


def test_a_profile_can_come_from_the_environment_named_file(
    workspace: Path, tmp_path: Path
) -> None:
    named = tmp_path / "named.toml"
    named.write_text('[profiles.ci]\nnetwork = "allowlist"\n')
    config = load(workspace, environ={**os.environ, "COI_CONFIG": str(named)}, profile="ci")
    assert config.network.mode == "allowlist"


def test_flags_map_onto_sections() -> None:
    layer = flags_layer_from(
        {"image": "img", "persistent": False, "network": "open", "tool": "codex", "slot": 3}
    )
    assert layer.source == "command line"
    assert layer.data == {
        "defaults": {"image": "img", "persistent": False},
        "network": {"mode": "open"},
        "tool": {"name": "codex"},
    }


def test_env_flags_split_on_the_first_equals_only_and_keep_commas() -> None:
    layer = flags_layer_from({"env": ["LIST=a,b,c", "EXPR=x=y", "EMPTY=", "LIST2=1,2"]})
    assert layer.data["defaults"]["environment"] == {
        "LIST": "a,b,c",
        "EXPR": "x=y",
        "EMPTY": "",
        "LIST2": "1,2",
    }


@pytest.mark.parametrize("item", ["NOVALUE", "=value"])
def test_an_env_flag_without_a_key_and_equals_is_a_usage_error(item: str) -> None:
    with pytest.raises(UsageError, match=r"^command line: --env .*expected KEY=VALUE"):
        flags_layer_from({"env": [item]})


def test_a_bad_flag_value_names_the_command_line() -> None:
    with pytest.raises(ConfigError, match=r"^command line: network.mode: 'strict' is not one"):
        flags_layer_from({"network": "strict"})


# --- user-defined tools -------------------------------------------------------------------------


def test_a_user_tool_gets_derived_defaults(user_file: Path, workspace: Path) -> None:
    user_file.write_text(
        '[tool]\nname = "mytool"\n[build]\ntools = ["claude", "mytool"]\n'
        '[tools.mytool]\nbinary = "mt"\ncredential_files = ["auth.json"]\ninstall = ["pip x"]\n'
    )
    config = load_here(workspace)
    tool = config.tools["mytool"]
    assert (tool.name, tool.binary, tool.state_dir) == ("mytool", "mt", ".mytool")
    assert tool.version_command == ("mt", "--version")
    assert tool.credential_files == ("auth.json",)
    assert config.origins["tools.mytool.state_dir"] == "built-in defaults"
    assert config.origins["tools.mytool.binary"] == str(user_file)


# --- to_dict and `coi config show` --------------------------------------------------------------


def test_to_dict_is_json_ready(user_file: Path, workspace: Path) -> None:
    user_file.write_text('[certificates]\nfiles = ["~/ca.pem"]\n[tools.t]\nbinary = "t"\n')
    tree = load_here(workspace).to_dict()
    assert json.loads(json.dumps(tree)) == tree
    assert list(tree)[:3] == ["defaults", "tool", "tools"]
    assert tree["certificates"]["files"] == [str(Path.home() / "ca.pem")]
    assert "name" not in tree["tools"]["t"]


@pytest.fixture
def show_args(workspace: Path) -> ShowArgs:
    """Build the Namespace `coi config show` gets; the workspace is an empty temporary one."""

    def build(**overrides: Any) -> argparse.Namespace:
        values = {"origin": False, "format": "text", "workspace": str(workspace), "profile": None}
        return argparse.Namespace(**{**values, **overrides})

    return build


def test_show_prints_one_toml_line_per_value(
    show_args: ShowArgs, capsys: pytest.CaptureFixture[str]
) -> None:
    assert show(show_args()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == 'defaults.image = "coi"'
    assert "defaults.persistent = false" in lines
    assert 'build.dns_resolvers = ["8.8.8.8", "8.8.4.4", "1.1.1.1"]' in lines
    assert not any(line.startswith("incus.remote") for line in lines)  # unset
    sections = [line.split(".")[0].split(" ")[0] for line in lines]
    order = ["defaults", "tool", "tools", "paths", "incus", "network", "build", "certificates"]
    order += ["credentials"]
    expected = [*order, "sessions", "checkpoints", "pool", "mounts", "profiles", "security"]
    assert sorted(set(sections), key=sections.index) == expected


def test_show_with_origin_names_each_source(
    user_file: Path, show_args: ShowArgs, capsys: pytest.CaptureFixture[str]
) -> None:
    user_file.write_text('[network]\nmode = "open"\n')
    show(show_args(origin=True, env=["A=1,2"]))
    lines = capsys.readouterr().out.splitlines()
    assert f'network.mode = "open"  # {user_file}' in lines
    assert 'defaults.environment.A = "1,2"  # command line' in lines
    assert 'defaults.image = "coi"  # built-in defaults' in lines


def test_show_json(
    show_args: ShowArgs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COI_NETWORK_MODE", "allowlist")
    show(show_args(format="json", image="img", persistent=True))
    tree = json.loads(capsys.readouterr().out)
    assert tree["network"]["mode"] == "allowlist"
    assert tree["defaults"]["image"] == "img"
    assert tree["defaults"]["persistent"] is True
    assert tree["incus"]["remote"] is None


def test_show_json_with_origin(show_args: ShowArgs, capsys: pytest.CaptureFixture[str]) -> None:
    show(show_args(format="json", origin=True, tool="codex"))
    shown = json.loads(capsys.readouterr().out)
    assert set(shown) == {"config", "origins", "ignored"}
    assert shown["ignored"] == []
    assert shown["config"]["tool"]["name"] == "codex"
    assert shown["origins"]["tool.name"] == "command line"


def test_show_warns_on_stderr(
    user_file: Path, show_args: ShowArgs, capsys: pytest.CaptureFixture[str]
) -> None:
    user_file.write_text('[paths]\nsessions_dir = "~/.coi/sessions"\n')
    show(show_args())
    captured = capsys.readouterr()
    assert "coi: warning: " in captured.err
    assert "paths.sessions_dir is deprecated" in captured.err
    assert "paths.sessions_dir = " in captured.out


def test_show_reads_the_workspace_and_profile(
    user_file: Path, workspace: Path, show_args: ShowArgs, capsys: pytest.CaptureFixture[str]
) -> None:
    user_file.write_text('[profiles.r]\nimage = "coi-rust"\n')
    (workspace / ".coi.toml").write_text("[defaults]\nmax_slots = 3\n")
    show(show_args(profile="r"))
    out = capsys.readouterr().out
    assert "defaults.max_slots = 3" in out
    assert 'defaults.image = "coi-rust"' in out


def test_show_defaults_the_workspace_to_the_current_folder(
    workspace: Path,
    show_args: ShowArgs,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (workspace / ".coi.toml").write_text("[defaults]\nmax_slots = 4\n")
    monkeypatch.chdir(workspace)
    show(argparse.Namespace(origin=True, format="text"))
    lines = capsys.readouterr().out.splitlines()
    assert f"defaults.max_slots = 4  # {workspace / '.coi.toml'}" in lines


def test_importing_config_stays_cheap() -> None:
    code = "import sys, coi.config.load, coi.commands.config; print(' '.join(sys.modules))"
    root = Path(__file__).resolve().parents[2]  # the autouse fixture moved cwd away from it
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=root)
    loaded = set(done.stdout.split())
    assert not loaded & {"yaml", "pylxd", "requests", "tomllib", "difflib"}

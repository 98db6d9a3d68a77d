"""devcontainer.json as a config layer: each key it reads, trust, and a crafted file's attacks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from coi.commands.cli import main
from coi.config import devcontainer, jsonc, trust
from coi.config.load import Config, load
from coi.core.errors import ConfigError, UsageError

FILE = ".devcontainer/devcontainer.json"


def write(workspace: Path, doc: dict[str, Any] | str, rel: str = FILE) -> Path:
    path = workspace / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def trusted(workspace: Path, doc: dict[str, Any] | str, rel: str = FILE) -> Config:
    """load() with the file written and its bytes approved."""
    path = write(workspace, doc, rel)
    trust.approve(path, trust.digest(path.read_bytes()))
    return load(workspace)


# --- one test per key read --------------------------------------------------------------------


def test_container_env_sets_the_environment_with_the_file_as_its_origin(workspace: Path) -> None:
    cfg = trusted(workspace, {"containerEnv": {"GREETING": "hi", "EQ": "a=b c"}})
    assert cfg.defaults.environment == {"GREETING": "hi", "EQ": "a=b c"}
    assert cfg.origins["defaults.environment.GREETING"] == str(workspace / FILE)
    assert cfg.devcontainer is not None and cfg.devcontainer.trusted
    assert ("containerEnv.GREETING", "defaults.environment.GREETING") in cfg.devcontainer.applied


def test_remote_env_wins_over_container_env(workspace: Path) -> None:
    cfg = trusted(workspace, {"containerEnv": {"A": "c", "B": "c"}, "remoteEnv": {"A": "r"}})
    assert cfg.defaults.environment == {"A": "r", "B": "c"}


def test_env_variables_are_not_substituted_and_bad_names_are_left_out(workspace: Path) -> None:
    doc = {
        "containerEnv": {"HOSTHOME": "${localEnv:HOME}", "1BAD": "x", "NUL": "a\0b", "OK": "1"},
        "remoteEnv": {"NL": "a\nb", "CR": "a\rb", "OK2": "2"},
    }
    cfg = trusted(workspace, doc)
    assert cfg.defaults.environment == {"OK": "1", "OK2": "2"}
    assert cfg.devcontainer is not None
    left = dict(cfg.devcontainer.ignored)
    assert "not substituted" in left["containerEnv.HOSTHOME"]
    assert "not a variable name" in left["containerEnv.1BAD"]
    for key in ("containerEnv.NUL", "remoteEnv.NL", "remoteEnv.CR"):
        assert "line break or NUL" in left[key]
    assert len([w for w in cfg.warnings if "not applied" in w]) == 1


def test_forward_ports_become_network_forward_ports(workspace: Path) -> None:
    cfg = trusted(workspace, {"forwardPorts": [3000, "8080", "localhost:5000"]})
    assert cfg.network.forward_ports == ("3000", "8080", "5000")
    assert cfg.origins["network.forward_ports"] == str(workspace / FILE)


def test_privileged_and_other_hosts_ports_are_not_forwarded(workspace: Path) -> None:
    cfg = trusted(workspace, {"forwardPorts": [80, "db:5432", 70000, True, 4000]})
    assert cfg.network.forward_ports == ("4000",)
    note = [w for w in cfg.warnings if "not applied" in w]
    assert len(note) == 1
    assert (
        "forwardPorts 80 (a privileged port" in note[0] and "coi port add NAME 8080 80" in note[0]
    )
    assert "forwardPorts \"db:5432\" (a port of 'db'" in note[0]


def test_post_create_and_post_start_commands_join_pre_launch(
    workspace: Path, user_file: Path
) -> None:
    user_file.write_text('[tool]\npre_launch = ["echo mine"]\n')
    doc = {"postCreateCommand": ["npm", "install", "a b"], "postStartCommand": "make dev"}
    cfg = trusted(workspace, doc)
    assert cfg.tool.pre_launch == ("echo mine", "npm install 'a b'", "make dev")
    assert cfg.origins["tool.pre_launch"] == str(workspace / FILE)


def test_the_object_form_of_a_command_is_left_out(workspace: Path) -> None:
    cfg = trusted(workspace, {"postCreateCommand": {"a": "x", "b": "y"}})
    assert cfg.tool.pre_launch == ()
    assert cfg.devcontainer is not None
    assert "parallel commands" in dict(cfg.devcontainer.ignored)["postCreateCommand"]


def test_bind_mounts_join_the_mounts_of_lower_layers(workspace: Path, user_file: Path) -> None:
    user_file.write_text('[[mounts]]\nsource = "/srv/a"\ntarget = "/a"\n')
    doc = {
        "mounts": [
            "source=${localWorkspaceFolder}/../data,target=/data,type=bind,readonly",
            {"source": "/srv/b", "target": "/b", "type": "bind"},
            "source=vol,target=/v,type=volume",
            "source=${localEnv:SECRET},target=/s,type=bind",
        ]
    }
    cfg = trusted(workspace, doc)
    assert list(cfg.mounts) == [
        {"source": "/srv/a", "target": "/a"},
        {"source": f"{workspace}/../data", "target": "/data", "readonly": True},
        {"source": "/srv/b", "target": "/b", "readonly": False},
    ]
    assert cfg.devcontainer is not None
    left = dict(cfg.devcontainer.ignored)
    assert "type=bind" in left["mounts.2"] and "substituted" in left["mounts.3"]


@pytest.mark.parametrize(
    ("source", "target"),
    [("${localEnv:HOME}/.ssh", "/s"), ("/etc", "/e"), ("${localEnv:HOME}", "/h"),
     ("${localWorkspaceFolder}/..", "/workspace/x"), ("${localWorkspaceFolder}/..", "/usr/x")],
)  # fmt: skip
def test_mounts_pointing_at_credentials_or_system_folders_are_refused_at_start(
    workspace: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch, source: str, target: str
) -> None:
    """The same checks as [[mounts]]: a session with such a mount does not start."""
    from coi.sessions.plan import extra_mounts

    (isolated_home / ".ssh").mkdir()
    monkeypatch.setattr(Path, "home", lambda: isolated_home)
    cfg = trusted(workspace, {"mounts": [f"source={source},target={target},type=bind"]})
    assert len(cfg.mounts) == 1
    with pytest.raises(UsageError, match=r"mount (source|target)"):
        extra_mounts(cfg, [])


def test_features_are_refused_in_one_line_naming_them(workspace: Path) -> None:
    doc = {"features": {"ghcr.io/devcontainers/features/node:1": {}, "ghcr.io/x/go:1": {}}}
    cfg = trusted(workspace, doc)
    lines = [w for w in cfg.warnings if "features" in w]
    assert len(lines) == 1
    assert "ghcr.io/devcontainers/features/node:1, ghcr.io/x/go:1" in lines[0]
    assert "not installed" in lines[0]


def test_other_keys_are_ignored_and_config_show_names_them(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trusted(workspace, {"name": "x", "image": "mcr.microsoft.com/x", "containerEnv": {"A": "1"}})
    assert main(["config", "show", "--origin", "--workspace", str(workspace)]) == 0
    out = capsys.readouterr().out
    assert f'defaults.environment.A = "1"  # {workspace / FILE}' in out
    assert f"# {workspace / FILE}: containerEnv.A -> defaults.environment.A" in out
    assert f"# ignored: name  # {workspace / FILE}: coi does not read this key" in out
    assert f"# ignored: image  # {workspace / FILE}" in out
    assert main(["config", "show", "--origin", "--format", "json"]) == 0


def test_dot_devcontainer_json_counts_when_the_folder_has_none(workspace: Path) -> None:
    cfg = trusted(workspace, {"containerEnv": {"A": "top"}}, ".devcontainer.json")
    assert cfg.defaults.environment == {"A": "top"}


def test_coi_toml_wins_over_devcontainer_json(workspace: Path) -> None:
    (workspace / ".coi.toml").write_text('[defaults.environment]\nA = "toml"\n')
    raw = (workspace / ".coi.toml").read_bytes()
    trust.approve(workspace / ".coi.toml", trust.digest(raw))
    cfg = trusted(workspace, {"containerEnv": {"A": "json", "B": "json"}})
    assert cfg.defaults.environment == {"A": "toml", "B": "json"}


# --- trust ------------------------------------------------------------------------------------


def test_an_untrusted_file_changes_nothing_and_warns_once(workspace: Path) -> None:
    doc = {"containerEnv": {"A": "1"}, "forwardPorts": [3000], "postCreateCommand": "x"}
    write(workspace, doc)
    cfg = load(workspace)
    assert cfg.defaults.environment == {} and cfg.network.forward_ports == ()
    assert cfg.tool.pre_launch == ()
    assert len(cfg.warnings) == 1
    assert cfg.warnings[0].startswith(f"{workspace / FILE}: not trusted, so it is ignored (")
    assert "coi trust --workspace" in cfg.warnings[0]


def test_a_large_untrusted_file_is_not_parsed_to_name_its_keys(workspace: Path) -> None:
    pad = " " * devcontainer.WARN_PARSE_BYTES
    write(workspace, '{"containerEnv": {"A": "1"}}' + pad)
    (warning,) = load(workspace).warnings
    assert warning.startswith(f"{workspace / FILE}: not trusted, so it is ignored; review")


def test_an_edit_after_approval_makes_it_untrusted_again(workspace: Path) -> None:
    assert trusted(workspace, {"containerEnv": {"A": "1"}}).defaults.environment == {"A": "1"}
    write(workspace, {"containerEnv": {"A": "2"}})
    cfg = load(workspace)
    assert cfg.defaults.environment == {} and "not trusted" in cfg.warnings[0]


def test_coi_trust_approves_the_devcontainer_bytes_and_untrust_withdraws(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(workspace, {"containerEnv": {"A": "1"}, "features": {"x": {}}})
    assert main(["trust", "--yes", "--workspace", str(workspace)]) == 0
    err = capsys.readouterr().err
    assert "containerEnv.A -> defaults.environment.A" in err and "features x: refused" in err
    assert trust.is_trusted(path, trust.digest(path.read_bytes()))
    assert main(["trust", "--list", "--format", "json", "--workspace", str(workspace)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "trusted"
    assert main(["untrust", "--workspace", str(workspace)]) == 0
    assert not trust.is_trusted(path, trust.digest(path.read_bytes()))


def test_coi_trust_refuses_a_file_it_cannot_parse(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(workspace, '{"containerEnv": {"A": "1"}')
    assert main(["trust", "--yes", "--workspace", str(workspace)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid JSON with comments" in err


def test_an_untrusted_coi_toml_cannot_forward_ports(workspace: Path) -> None:
    (workspace / ".coi.toml").write_text('[network]\nforward_ports = ["3000"]\n')
    cfg = load(workspace)
    assert cfg.network.forward_ports == ()
    assert "network.forward_ports" in cfg.warnings[0]


def test_a_privileged_forward_port_in_toml_is_a_config_error(user_file: Path) -> None:
    user_file.write_text('[network]\nforward_ports = ["80"]\n')
    with pytest.raises(ConfigError, match=r"network\.forward_ports: '80' is not a port from 1024"):
        load(Path.cwd())


# --- a crafted file -----------------------------------------------------------------------------


def test_a_link_to_a_host_file_is_not_read(workspace: Path, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.json"
    secret.write_text('{"containerEnv": {"SECRET": "host"}}')
    (workspace / ".devcontainer").mkdir()
    (workspace / FILE).symlink_to(secret)
    trust.approve(workspace / FILE, trust.digest(secret.read_bytes()))  # even if approved
    cfg = load(workspace)
    assert cfg.defaults.environment == {}
    assert cfg.warnings == (
        f"{workspace / FILE}: ignored: a symbolic link (or one on the way), not a regular file; "
        "make it a small regular file in the workspace, or remove it",
    )


def test_a_linked_devcontainer_folder_is_not_followed(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "devcontainer.json").write_text('{"containerEnv": {"SECRET": "host"}}')
    (workspace / ".devcontainer").symlink_to(outside)
    found = devcontainer.read(workspace)
    assert found is not None and isinstance(found[1], str) and "symbolic link" in found[1]


def test_a_huge_file_is_not_read_past_its_bound(workspace: Path) -> None:
    path = workspace / FILE
    path.parent.mkdir()
    with path.open("wb") as handle:
        handle.truncate(jsonc.MAX_BYTES + 1)  # sparse: costs nothing to make
    found = devcontainer.read(workspace)
    assert found is not None and found[1] == f"larger than {jsonc.MAX_BYTES} bytes"
    assert "ignored: larger than" in load(workspace).warnings[0]


def test_a_fifo_does_not_block_the_read(workspace: Path) -> None:
    (workspace / ".devcontainer").mkdir()
    os.mkfifo(workspace / FILE)
    found = devcontainer.read(workspace)
    assert found is not None and found[1] == "not a regular file"


def test_crafted_names_are_shown_escaped(workspace: Path) -> None:
    doc = {"features": {"\x1b[2Kfake\nline": {}}, "x\ry": 1, "containerEnv": {"\x1b]0;t": "v"}}
    cfg = trusted(workspace, doc)
    assert cfg.devcontainer is not None
    said = "\n".join([*cfg.warnings, *devcontainer.summary(cfg.devcontainer)])
    assert "\x1b" not in said and "\r" not in said
    assert len(cfg.warnings) == 2  # features, and the variable left out: one line each
    assert '"\\u001b[2Kfake\\nline"' in cfg.warnings[0]


def test_deep_nesting_is_refused_before_decoding(workspace: Path) -> None:
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(ConfigError, match="nested deeper than"):
        devcontainer.parse(deep.encode(), "f")


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as the owner is a root process's step")
def test_root_reads_the_file_as_the_workspace_owner(tmp_path: Path) -> None:
    """A file the workspace's owner cannot read is not read by root's coi either."""
    ws = tmp_path / "ws"
    (ws / ".devcontainer").mkdir(parents=True)
    (ws / FILE).write_text('{"containerEnv": {"A": "1"}}')
    os.chmod(ws / FILE, 0o600)  # root's, unreadable to the owner below
    os.chown(ws, 65534, 65534)
    os.chown(ws / ".devcontainer", 65534, 65534)
    os.chmod(tmp_path, 0o755)
    found = devcontainer.read(ws)
    assert found is not None and found[1] == "cannot be read (Permission denied)"
    os.chown(ws / FILE, 65534, 65534)
    found = devcontainer.read(ws)
    assert found is not None and found[1] == b'{"containerEnv": {"A": "1"}}'

"""Protected paths: the list, git's entries, the mount plan, the survey and the clean-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coi.boundary import protect, protect_host, protect_survey
from coi.boundary.protect import DIR, FILE, LINK, MISSING, Entry, Survey
from coi.config import trust
from coi.config.load import default_layer, load, merge
from coi.core.errors import CoiError, ConfigError, UsageError
from coi.launch import executor
from coi.launch.spec import LaunchSpec, instance_config


def test_the_default_list_covers_what_runs_on_the_host() -> None:
    listed = protect.paths()
    for rel in (".git/hooks", ".git/config", ".git/commondir", ".husky", ".vscode", ".envrc"):
        assert rel in listed
    assert ".coi.toml" in listed and ".claude/settings.json" in listed and ".mcp.json" in listed


def test_writable_paths_take_defaults_off_and_protected_paths_add() -> None:
    listed = protect.paths(protected=["secrets/", "./.env"], writable=[".git", ".vscode/"])
    assert not [p for p in listed if p.startswith((".git", ".vscode"))]
    assert "secrets" in listed and ".env" in listed
    # a path both listed and made writable stays protected: adding wins
    assert ".envrc" in protect.paths(protected=[".envrc"], writable=[".envrc"])


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "~/x", "../up", "a/../../b", ".", "a\nb"])
def test_paths_outside_the_workspace_are_refused(bad: str) -> None:
    assert protect.check_path(bad) is not None


def test_config_names_the_file_and_key_of_a_bad_path(workspace: Path, user_file: Path) -> None:
    user_file.write_text('[security]\nprotected_paths = ["../elsewhere"]\n')
    with pytest.raises(ConfigError) as caught:
        load(workspace, environ=dict(os.environ))
    assert "security.protected_paths" in str(caught.value) and "'..'" in str(caught.value)


def test_protected_paths_join_across_layers_and_writable_needs_trust(
    workspace: Path, user_file: Path
) -> None:
    user_file.write_text('[security]\nprotected_paths = ["a"]\nwritable_paths = [".vscode"]\n')
    (workspace / ".coi.toml").write_text(
        '[security]\nprotected_paths = ["b"]\nwritable_paths = [".vscode", ".envrc"]\n'
    )
    cfg = load(workspace, environ=dict(os.environ))
    assert cfg.security.protected_paths == ("a", "b")  # the untrusted file adds
    assert cfg.security.writable_paths == (".vscode",)  # but cannot open .envrc
    assert [i.key for i in cfg.ignored] == ["security.writable_paths"]


def test_an_untrusted_file_may_shorten_writable_paths() -> None:
    lower = merge(default_layer().data, {"security": {"writable_paths": [".vscode", ".envrc"]}})
    kept, ignored = trust.screen({"security": {"writable_paths": [".envrc"]}}, lower, "p")
    assert kept == {"security": {"writable_paths": [".envrc"]}} and not ignored
    kept, ignored = trust.screen({"security": {"writable_paths": [".git"]}}, lower, "p")
    assert not kept and "trusted" in ignored[0].reason


def test_a_workspace_without_git_protects_git_itself() -> None:
    assert ".git" in protect.targets(protect.paths(), Survey())
    assert not [t for t in protect.targets(protect.paths(), Survey()) if t.startswith(".git/")]


def test_a_repository_protects_its_worktrees_and_submodules() -> None:
    survey = Survey(
        kinds={".git": DIR},
        worktrees=(".git/worktrees/w",),
        modules=(".git/modules/m",),
    )
    found = protect.targets(protect.paths(), survey)
    assert ".git/worktrees/w/commondir" in found and ".git/worktrees/w/config.worktree" in found
    assert ".git/modules/m/hooks" in found and ".git/modules/m/config" in found


def test_a_git_file_is_kept_and_its_git_dir_followed_only_inside() -> None:
    inside = Survey(
        kinds={".git": FILE}, git_pointer="repo/.git", commondirs={"repo/.git": "common"}
    )
    found = protect.targets([".git/hooks", ".git/config"], inside)
    assert set(found) == {".git", "common/hooks", "common/config", "repo/.git/hooks"} | {
        "repo/.git/config"
    }
    outside = Survey(kinds={".git": FILE}, git_pointer=None)
    assert set(protect.targets([".git/hooks", ".envrc"], outside)) == {".git", ".envrc"}


def test_the_plan_pins_the_folders_on_the_way_and_makes_placeholders() -> None:
    survey = Survey(kinds={".git": DIR, ".git/hooks": DIR, ".claude": MISSING})
    plan = protect.plan([".git/hooks", ".git/commondir", ".claude/settings.json"], survey)
    assert plan == (
        Entry(".claude", DIR, readonly=False, placeholder=b""),
        Entry(".git", DIR, readonly=False),
        Entry(".claude/settings.json", FILE, readonly=True, placeholder=b"{}\n"),
        Entry(".git/commondir", FILE, readonly=True, placeholder=b".\n"),
        Entry(".git/hooks", DIR, readonly=True),
    )


def test_a_protected_link_is_refused_with_the_fix() -> None:
    with pytest.raises(UsageError) as caught:
        protect.plan([".vscode"], Survey(kinds={".vscode": LINK}))
    assert "symbolic link" in str(caught.value) and "writable_paths" in str(caught.value)


def test_a_file_on_the_way_to_a_protected_path_is_refused() -> None:
    with pytest.raises(UsageError):
        protect.plan([".claude/settings.json"], Survey(kinds={".claude": FILE}))


def test_the_survey_reads_the_workspace_without_following_links(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".git" / "hooks").mkdir(parents=True)
    (ws / ".git" / "worktrees" / "w").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (ws / ".vscode").symlink_to(tmp_path / "elsewhere")
    survey = protect_survey.survey(ws, protect.paths())
    assert survey.kind(".git") == DIR and survey.kind(".git/hooks") == DIR
    assert survey.kind(".vscode") == LINK and survey.kind(".envrc") == MISSING
    assert survey.worktrees == (".git/worktrees/w",)


def test_the_survey_finds_nested_submodules_and_not_a_link(tmp_path: Path) -> None:
    """Submodules' git dirs under .git/modules, nested ones and names with '/' included;
    a folder that holds nothing of a git dir is looked through; a link is never entered."""
    ws = tmp_path / "ws"
    modules = ws / ".git" / "modules"
    for gitdir in ("a", "a/modules/b", "lib/c"):
        (modules / gitdir).mkdir(parents=True)
        (modules / gitdir / "HEAD").write_text("ref: refs/heads/main\n")
    (modules / "a" / "refs" / "config").mkdir(parents=True)  # inside a git dir: not looked at
    (tmp_path / "elsewhere" / "x").mkdir(parents=True)
    (tmp_path / "elsewhere" / "x" / "config").write_text("")
    (modules / "linked").symlink_to(tmp_path / "elsewhere")
    survey = protect_survey.survey(ws, protect.paths())
    assert sorted(survey.modules) == [".git/modules/a", ".git/modules/a/modules/b",
                                      ".git/modules/lib/c"]  # fmt: skip
    found = protect.targets(protect.paths(), survey)
    assert ".git/modules/a/modules/b/config" in found and ".git/modules/lib/c/hooks" in found


def test_a_worktrees_own_dir_is_a_git_dir_too() -> None:
    survey = Survey(kinds={".git": DIR}, worktrees=(".git/worktrees/w",))
    found = protect.targets(protect.paths(), survey)
    for entry in protect.GIT_ENTRIES:
        assert f".git/worktrees/w/{entry}" in found


def test_the_shared_git_dirs_view_keeps_its_submodules_read_only(tmp_path: Path) -> None:
    from coi.launch import worktrees

    common = tmp_path / "repo" / ".git"
    for gitdir in ("modules/sub", "modules/sub/modules/deep", "worktrees/w"):
        (common / gitdir).mkdir(parents=True)
        (common / gitdir / "HEAD").write_text("ref: refs/heads/main\n")
    listed = worktrees.listed(common)
    for gitdir in ("modules/sub", "modules/sub/modules/deep"):
        assert {f"{gitdir}/{e}" for e in protect.GIT_ENTRIES} <= set(listed)
    assert {f"worktrees/w/{e}" for e in (*protect.GIT_ENTRIES, "gitdir")} <= set(listed)
    assert len(listed) == len(set(listed))
    plan = protect.plan(listed, protect_survey.survey(common, listed))
    pins = {e.rel for e in plan if not e.readonly}
    assert {"modules", "modules/sub", "modules/sub/modules/deep"} <= pins  # none renamed away


def test_the_survey_follows_a_git_file_only_inside_the_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "main" / ".git").mkdir(parents=True)
    (ws / ".git").write_text(f"gitdir: {ws}/main/.git\n")
    assert protect_survey.survey(ws, protect.paths()).git_pointer == "main/.git"
    (ws / ".git").write_text("gitdir: ../../outside\n")
    assert protect_survey.survey(ws, protect.paths()).git_pointer is None


def test_only_unchanged_placeholders_are_removed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".claude").mkdir(parents=True)
    (ws / ".claude" / "settings.json").write_text("{}\n")
    (ws / ".envrc").write_text("changed by the user meanwhile\n")
    (ws / ".vscode").mkdir()
    (ws / ".vscode" / "mine.json").write_text("{}")
    created = [
        (".claude", DIR),
        (".claude/settings.json", FILE),
        (".envrc", FILE),
        (".vscode", DIR),
        (".gone", FILE),
    ]
    left = protect_host.remove_placeholders(ws, created)
    assert sorted(left) == [".envrc", ".vscode"]
    assert sorted(p.name for p in ws.iterdir()) == [".envrc", ".vscode"]


def test_a_yaml_placeholder_of_an_earlier_coi_is_removed_too(tmp_path: Path) -> None:
    """Before `{}` an earlier coi made .aider.conf.yml empty: a session it left running and
    this coi releases must not leave that empty file (host aider refuses it)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".aider.conf.yml").write_bytes(b"")
    (ws / "lefthook.yml").write_bytes(b"{}\n")
    (ws / ".pre-commit-config.yaml").write_text("repos: []\n")  # the user's, meanwhile
    created = [(".aider.conf.yml", FILE), ("lefthook.yml", FILE), (".pre-commit-config.yaml", FILE)]
    assert protect_host.remove_placeholders(ws, created) == [".pre-commit-config.yaml"]
    assert [p.name for p in ws.iterdir()] == [".pre-commit-config.yaml"]


def test_the_workspace_disk_is_the_locked_view_when_coi_can_build_it() -> None:
    spec = LaunchSpec(name="c1", image="coi", workspace=Path("/w"), locked_view=True)
    disk = instance_config(spec)["devices"]["workspace"]
    assert disk["source"] == str(protect.view_path("c1")) and disk["recursive"] == "true"
    for plain in (
        LaunchSpec(name="c1", image="coi", workspace=Path("/w"), locked_view=False),
        LaunchSpec(name="c1", image="coi", workspace=Path("/w"), protected_paths=()),
    ):
        disk = instance_config(plain)["devices"]["workspace"]
        assert disk["source"] == "/w" and "recursive" not in disk


def test_without_root_or_the_view_helper_coi_refuses_the_start(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    spec = LaunchSpec(name="c1", image="coi", workspace=ws, locked_view=False)
    with pytest.raises(CoiError, match="sudo coi setup") as refused:
        executor.protect_workspace(spec)
    assert "\n" not in str(refused.value)
    assert list(ws.iterdir()) == []  # nothing created in the workspace


def test_a_missing_config_file_gets_an_empty_mapping_its_tool_can_read() -> None:
    """aider refuses an empty .aider.conf.yml (YAML null, not a mapping): the stand-in of
    a missing YAML or JSON config is an empty mapping, of any other file nothing."""
    import json

    import yaml

    for rel in (".aider.conf.yml", ".pre-commit-config.yaml", "opencode.json", "x.jsonc"):
        text = protect.placeholder(rel).decode()
        assert (yaml.safe_load(text) if "yml" in rel or "yaml" in rel else json.loads(text)) == {}
    assert protect.placeholder(".envrc") == b""

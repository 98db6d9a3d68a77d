"""The docs stay whole: a short README, every page the site's nav names, and a generated
reference that names every command and config key (docs/gen.py, without MkDocs)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def load_gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("coi_docs_gen", DOCS / "gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nav_pages(nav: Any) -> list[str]:
    """Every page path the mkdocs nav names, however deep."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    raise AssertionError(f"unexpected nav entry {nav!r}")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    load_gen().generate(out)
    return out


def test_the_readme_is_under_200_lines() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines: move sections to docs/"


def test_every_page_the_nav_names_exists_and_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    named = nav_pages(config["nav"])
    assert len(named) == len(set(named)), "a page is named twice in the nav"
    generated = set(load_gen().OUTPUTS)
    for page in named:
        assert (DOCS / page).is_file() or page in generated, f"nav names {page}: no such page"
    written = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")} - generated
    assert written <= set(named), f"pages missing from the nav: {written - set(named)}"


def test_the_generated_pages_are_ignored_by_git() -> None:
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    for page in load_gen().OUTPUTS:
        assert f"docs/{page}" in ignored


def test_the_reference_names_every_command_of_the_table(generated: Path) -> None:
    text = (generated / "reference" / "commands.md").read_text(encoding="utf-8")
    paths = load_gen().command_paths()
    assert len(paths) > 60  # the whole table, groups and their subcommands
    for words in paths:
        title = " ".join(("coi", *words))
        assert re.search(rf"^#+ `{re.escape(title)}`$", text, re.M), f"{title} is missing"
        assert f"usage: {title}" in text.replace("\n ", " ")


def test_the_reference_shows_each_commands_real_flags(generated: Path) -> None:
    text = (generated / "reference" / "commands.md").read_text(encoding="utf-8")
    shutdown = text.split("### `coi shutdown`", 1)[1].split("\n### ", 1)[0]
    assert "`--timeout TIMEOUT` | seconds before forcing (60); default `60`" in shutdown
    rollback = text.split("### `coi rollback`", 1)[1].split("\n### ", 1)[0]
    assert "--workspace" in rollback and "--image" not in rollback  # only flags it reads


def test_the_config_reference_names_every_key_with_its_trust_rule(generated: Path) -> None:
    from coi.config import schema

    text = (generated / "reference" / "config.md").read_text(encoding="utf-8")
    for section, keys in schema.SECTIONS.items():
        body = text.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
        for name in keys:
            assert f"| `{name}` |" in body, f"{section}.{name} is missing"
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if "| `" in line}
    assert "ignored: host folders are set by trusted files only" in rows["`storage_dir`"]
    assert "`COI_POOL_SIZE`" in rows["`size`"] and "shrink the warm pool" in rows["`size`"]
    assert "`20` | `COI_CHECKPOINTS_KEEP` | applies" in rows["`keep`"]


def test_the_security_page_is_security_md(generated: Path) -> None:
    page = (generated / "security.md").read_text(encoding="utf-8")
    assert page.endswith((REPO / "SECURITY.md").read_text(encoding="utf-8"))


def test_the_readme_links_only_to_pages_that_exist() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    generated = set(load_gen().OUTPUTS)
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        page = target.removeprefix("docs/")
        assert (REPO / target).exists() or page in generated, f"README links to {target}"

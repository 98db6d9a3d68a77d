"""Every `paths:` pattern of every workflow names files of the tree (issue 26): after the
package move, images.yml watched coi/images*.py, coi/dnsfix.py... and a change to the image
code never ran it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))


def pattern(glob: str) -> re.Pattern[str]:
    """GitHub's filter pattern as a regex: `**` any characters, `*` any but `/`, `?` the
    preceding character or none (docs.github.com: "Filter pattern cheat sheet")."""
    out = ""
    for token in re.findall(r"\*\*|\*|\?|[^*?]", glob):
        if token == "**":
            out += ".*"
        elif token == "*":
            out += "[^/]*"
        elif token == "?":
            out += "?"
        else:
            out += re.escape(token)
    return re.compile(out)


def tracked() -> list[str]:
    """The repository's files as git lists them (what a push or pull request changes)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [p for p in done.stdout.decode().split("\0") if p]


def path_filters(workflow: Path) -> list[tuple[str, str]]:
    """(event, pattern) of each paths/paths-ignore entry; `on:` reads as True in YAML 1.1."""
    doc: dict[Any, Any] = yaml.safe_load(workflow.read_text())
    events = doc.get("on", doc.get(True)) or {}
    if not isinstance(events, dict):
        return []
    found = []
    for event, spec in events.items():
        for key in ("paths", "paths-ignore"):
            for glob in (spec or {}).get(key, []) if isinstance(spec, dict) else []:
                found.append((f"{event}.{key}", str(glob).removeprefix("!")))
    return found


def test_the_pattern_reads_as_github_does() -> None:
    assert pattern("coi/**").fullmatch("coi/images/build.py")
    assert pattern("coi/*.py").fullmatch("coi/testing.py")
    assert not pattern("coi/*.py").fullmatch("coi/images/build.py")
    assert not pattern("images/**").fullmatch("images")  # a symbolic link is one file


def test_there_are_workflows_with_path_filters() -> None:
    assert any(path_filters(w) for w in WORKFLOWS)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_every_path_filter_matches_a_file_of_the_tree(workflow: Path) -> None:
    files = tracked()
    dead = [
        f"{event}: {glob}"
        for event, glob in path_filters(workflow)
        if not any(pattern(glob).fullmatch(f) for f in files)
    ]
    assert dead == [], f"{workflow.name} watches paths that do not exist"


@pytest.mark.parametrize("event", ["push.paths", "pull_request.paths"])
def test_the_images_workflow_runs_for_a_change_to_the_image_code(event: str) -> None:
    filters = [g for e, g in path_filters(REPO / ".github/workflows/images.yml") if e == event]
    for changed in ("coi/images/build.py", "coi/images/dnsfix.py", "coi/config/tools.py"):
        assert any(pattern(g).fullmatch(changed) for g in filters), changed

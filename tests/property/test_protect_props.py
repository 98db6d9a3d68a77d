"""Properties of protected paths: the list only grows from protected_paths, and the mount plan
covers every target, parents first, with a placeholder exactly where nothing exists."""

from __future__ import annotations

from pathlib import PurePosixPath

from hypothesis import assume, given
from hypothesis import strategies as st

from coi.boundary import protect
from coi.core.errors import UsageError
from tests.strategies import path_kinds, relative_paths


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


@given(relative_paths, st.sampled_from(["/", "~/", "../", "a/../../"]))
def test_only_paths_inside_the_workspace_pass(path: str, prefix: str) -> None:
    assert protect.check_path(path) is None
    assert protect.check_path(prefix + path) is not None


@given(st.lists(relative_paths, max_size=4), st.lists(relative_paths, max_size=4))
def test_protected_paths_only_add_and_writable_only_removes_defaults(
    protected: list[str], writable: list[str]
) -> None:
    listed = protect.paths(protected, writable)
    assert set(protected) <= set(listed)
    assert len(listed) == len(set(listed))
    for rel in protect.DEFAULT_PATHS:
        opened = any(_under(rel, w) for w in writable)
        assert (rel in listed) == (not opened or rel in protected)


@given(
    st.lists(relative_paths, min_size=1, max_size=5),
    st.dictionaries(relative_paths, path_kinds, max_size=12),
)
def test_the_plan_covers_every_target_parents_first(
    listed: list[str], kinds: dict[str, str]
) -> None:
    survey = protect.Survey(kinds={".git": "dir", **kinds})
    try:
        plan = protect.plan(listed, survey)
    except UsageError:  # a file on the way to a protected path: refused, never half-done
        assume(False)
        return
    rels = [e.rel for e in plan]
    assert len(rels) == len(set(rels))
    for i, entry in enumerate(plan):
        for parent in PurePosixPath(entry.rel).parents[:-1]:
            if parent.as_posix() in rels:
                assert rels.index(parent.as_posix()) < i
        assert (entry.placeholder is not None) == (survey.kind(entry.rel) == "missing")
    readonly = [e.rel for e in plan if e.readonly]
    for target in protect.targets(listed, survey):
        assert any(_under(target, r) for r in readonly)
    for pin in (e.rel for e in plan if not e.readonly):
        assert any(_under(t, pin) and t != pin for t in protect.targets(listed, survey))


_git_dir_names = st.lists(st.sampled_from(["m", "n", "modules", "lib"]), min_size=1, max_size=4)


@given(
    st.lists(_git_dir_names.map(lambda p: ".git/modules/" + "/".join(p)), max_size=4),
    st.lists(st.sampled_from(["w", "x"]).map(lambda n: f".git/worktrees/{n}"), max_size=2),
    st.lists(st.sampled_from(protect.GIT_ENTRIES), min_size=1, unique=True),
)
def test_every_submodule_and_worktree_git_dir_gets_the_git_entries_read_only(
    modules: list[str], worktrees: list[str], entries: list[str]
) -> None:
    """Nested submodules' git dirs and worktrees' own dirs are git dirs like .git: each
    listed git entry is read-only in each, and a worktree's redirects always are."""
    survey = protect.Survey(
        kinds={".git": "dir"}, worktrees=tuple(dict.fromkeys(worktrees)),
        modules=tuple(dict.fromkeys(modules)),
    )  # fmt: skip
    listed = [f".git/{e}" for e in entries]
    plan = protect.plan(listed, survey)
    readonly = [e.rel for e in plan if e.readonly]
    for gitdir in [*modules, *worktrees]:
        for entry in entries:
            assert any(_under(f"{gitdir}/{entry}", r) for r in readonly)
    for gitdir in worktrees:
        for entry in ("commondir", "config.worktree"):
            assert any(_under(f"{gitdir}/{entry}", r) for r in readonly)

"""Protected paths: the workspace entries the container may read but never change.

A hostile container could plant code that the host runs later: a git hook, a
`core.fsmonitor` in `.git/config`, a `.vscode` task, an `.envrc`, a tool's hook settings.
`plan` (pure) turns the workspace's layout (a `Survey`, read by coi/boundary/protect_host.py) and
the configured list into the entries to keep read-only, the folders on their way to pin
(a mount point cannot be renamed, so `mv .git .git-old; mkdir .git` fails) and the
placeholders to create for entries that do not exist yet.

The list: DEFAULT_PATHS, minus what a trusted layer makes writable ([security]
writable_paths), plus what any layer adds ([security] protected_paths: an untrusted
.coi.toml may add, it only tightens). Git entries follow the repository: a workspace
without `.git` gets `.git` itself read-only (`git init` happens on the host); a `.git`
file (a linked worktree or a submodule) is kept read-only, and so are the git dirs it
leads to when they lie inside the workspace (outside, the container cannot reach them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from coi.core.errors import UsageError

# Git: hooks and config run code (core.hooksPath, core.fsmonitor, core.pager, aliases,
# filters); info/attributes names filter and diff drivers; commondir and config.worktree
# redirect or extend the config (git reads $GIT_DIR/commondir whenever it exists).
GIT_ENTRIES = ("hooks", "config", "info/attributes", "commondir", "config.worktree")
# Host tools that run commands from the project: husky, pre-commit and lefthook on a git
# commit; VS Code tasks and dev containers (initializeCommand runs on the host); direnv's
# .envrc; coi's own project file; Claude Code's settings (hooks, statusLine,
# apiKeyHelper), its hook scripts and .mcp.json servers; Codex's project .codex/;
# Aider's config (lint-cmd, test-cmd); OpenCode's config and .opencode/ plugins.
DEFAULT_PATHS: tuple[str, ...] = (
    *(f".git/{entry}" for entry in GIT_ENTRIES),
    ".husky",
    ".pre-commit-config.yaml",
    "lefthook.yml",
    ".lefthook.yml",
    ".vscode",
    ".devcontainer",
    ".envrc",
    ".coi.toml",
    ".claude/settings.json",
    ".claude/settings.local.json",
    ".claude/hooks",
    ".mcp.json",
    ".codex",
    ".aider.conf.yml",
    "opencode.json",
    "opencode.jsonc",
    ".opencode",
)
# Entries created as an empty folder when missing; every other missing entry becomes an
# empty file (either blocks the container from creating anything under that name).
DIRECTORIES = frozenset(
    {".git", ".git/hooks", ".husky", ".vscode", ".devcontainer", ".claude/hooks"}
    | {".codex", ".opencode"}
)
FILE, DIR, MISSING, LINK, OTHER = "file", "dir", "missing", "link", "other"
# Root-owned and on tmpfs: a reboot clears the views, and no `rm -rf` of a user's folder
# (COI_HOME, say) can walk into a mounted workspace.
VIEW_ROOT = Path("/run/coi-protect")


def view_path(name: str) -> Path:
    """Where the locked workspace view of instance `name` is mounted on the host."""
    return VIEW_ROOT / name


@dataclass(frozen=True)
class Survey:
    """What the host's workspace holds at the paths that matter, read without following links.

    kinds maps a workspace-relative path to file, dir, link, other or missing (absent
    paths count as missing). git_pointer is the target of a `.git` file, made relative
    to the workspace (None: outside it, or no such file); commondirs maps a git dir to
    its commondir target, relative too (None: outside); worktrees and modules list the
    git dirs under .git/worktrees and .git/modules (nested submodules' included).
    """

    kinds: Mapping[str, str] = field(default_factory=dict)
    git_pointer: str | None = None
    commondirs: Mapping[str, str | None] = field(default_factory=dict)
    worktrees: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()

    def kind(self, rel: str) -> str:
        """The kind of rel (missing when the survey did not see it)."""
        return self.kinds.get(rel, MISSING)


@dataclass(frozen=True)
class Entry:
    """One mount: a workspace-relative path, file or dir, read-only or a writable pin.

    placeholder holds the bytes of the empty stand-in coi creates when the path is
    missing (None: it exists, nothing to create).
    """

    rel: str
    kind: str
    readonly: bool
    placeholder: bytes | None = None


def check_path(value: str) -> str | None:
    """Why value is not a usable protected path (None: fine): relative, inside, no '..'."""
    parts = PurePosixPath(value).parts
    if not value or value.startswith(("/", "~")) or ".." in parts or not parts:
        return f"{value!r} is not a path inside the workspace; use a relative path without '..'"
    if "\0" in value or "\n" in value:
        return f"{value!r} contains a control character; use a plain relative path"
    return None


def normal(value: str) -> str:
    """The canonical form of a valid path: no './', no doubled or trailing '/'."""
    return PurePosixPath(value).as_posix()


def paths(
    protected: Iterable[str] = (),
    writable: Iterable[str] = (),
    defaults: Sequence[str] = DEFAULT_PATHS,
) -> tuple[str, ...]:
    """The protected list: defaults minus writable (and what lies under it), plus protected."""
    open_ = {normal(w) for w in writable}
    kept = [p for p in defaults if not any(_within(p, w) for w in open_)]
    return tuple(dict.fromkeys([*kept, *(normal(p) for p in protected)]))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def targets(listed: Sequence[str], survey: Survey) -> tuple[str, ...]:
    """The workspace paths to keep read-only: listed, with git entries following the repo."""
    git = [p[len(".git/") :] for p in listed if p.startswith(".git/")]
    found = [p for p in listed if not p.startswith(".git/") and p != ".git"]
    if ".git" in listed:
        found.append(".git")
    elif git:
        found += _git_targets(git, survey)
    return tuple(sorted(dict.fromkeys(found), key=_depth))


def _git_targets(entries: Sequence[str], survey: Survey) -> list[str]:
    kind = survey.kind(".git")
    if kind == MISSING:  # not a repository: nothing may create one (`git init` on the host)
        return [".git"]
    if kind != DIR:  # a gitdir: pointer (or a link): kept as it is
        return [".git", *_gitdir_family(survey.git_pointer, entries, survey)]
    found = _gitdir_family(".git", entries, survey)
    # A worktree's own dir redirects through its commondir (and is a git dir of its own
    # without one); a submodule's (nested ones included) is a whole git dir.
    per_worktree = list(dict.fromkeys([*entries, "commondir", "config.worktree"]))
    for sub in survey.worktrees:
        found += [f"{sub}/{e}" for e in per_worktree]
    for sub in survey.modules:
        found += [f"{sub}/{e}" for e in entries]
    return found


def _gitdir_family(gitdir: str | None, entries: Sequence[str], survey: Survey) -> list[str]:
    """The entries of a git dir inside the workspace, and of the common dir it names."""
    if gitdir is None:  # outside the workspace: not mounted, so out of the container's reach
        return []
    found = [f"{gitdir}/{e}" for e in entries]
    common = survey.commondirs.get(gitdir)
    if common is not None and common != gitdir:
        found += [f"{common}/{e}" for e in entries]
    return found


def _depth(rel: str) -> tuple[int, str]:
    return (len(PurePosixPath(rel).parts), rel)


def plan(listed: Sequence[str], survey: Survey) -> tuple[Entry, ...]:
    """The mounts, parents first: pins for the folders on the way, then the read-only entries.

    Raises UsageError for a protected path (or a folder on its way) that is a link or a
    special file: a mount would follow the link, so coi cannot keep it read-only.
    """
    chosen = targets(listed, survey)
    entries: dict[str, Entry] = {}
    for rel in chosen:
        for parent in reversed(PurePosixPath(rel).parents[:-1]):
            key = parent.as_posix()
            if key not in entries and not any(_within(key, c) for c in chosen if c != rel):
                entries[key] = _entry(key, survey, readonly=False, want=DIR)
        if not any(_within(rel, c) and c != rel for c in chosen):
            entries[rel] = _entry(rel, survey, readonly=True, want=_kind_for(rel))
    return tuple(sorted(entries.values(), key=lambda e: _depth(e.rel)))


def _entry(rel: str, survey: Survey, *, readonly: bool, want: str) -> Entry:
    kind = survey.kind(rel)
    if kind in (FILE, DIR):
        if not readonly and kind != DIR:
            raise UsageError(
                f"workspace path {rel} is not a folder: coi cannot protect what is under it"
            )
        return Entry(rel, kind, readonly)
    if kind == MISSING:
        return Entry(rel, want, readonly, b"" if want == DIR else placeholder(rel))
    fix = "replace it with a plain file or folder, or list it in [security] writable_paths"
    what = "symbolic link" if kind == LINK else "special file"
    raise UsageError(f"workspace path {rel} is a {what}: coi cannot keep it read-only; {fix}")


def _kind_for(rel: str) -> str:
    return DIR if rel in DIRECTORIES or rel.endswith("/hooks") else FILE


def placeholder(rel: str) -> bytes:
    """The stand-in content of a missing file, harmless to the host tool that reads it."""
    name = PurePosixPath(rel).name
    if name == "commondir":
        return b".\n"  # "this git dir is its own common dir": an empty one makes git die
    if name.endswith((".json", ".jsonc")):
        return b"{}\n"
    if name.endswith((".yml", ".yaml")):
        return b"{}\n"  # an empty mapping: aider stops at an empty .aider.conf.yml (a null)
    return b""

"""Git dirs a session planted: when a session ends, every git dir in the folders it could
write loses what would make the host's git run code.

Protected paths keep the workspace repository's own git dir read-only (its config, hooks
and the like, and those of `.git/modules/*` and `.git/worktrees/*`), but `.git/index` and
the rest of `.git` stay writable for commits inside. So the container can make a git dir
anywhere it writes (`.git/evil`, `.git/objects/x`, `.git/modules/new`, a work tree folder),
put `core.fsmonitor = <payload>` in its config, point a folder's `.git` file at it and
`git add` that folder as a submodule: the owner's next `git status` recurses into it and
runs the payload (measured). The sweep looks at the git dir of every submodule the index
names (and, through their own indexes, of nested ones), at every folder under
`.git/modules` and `.git/worktrees` that looks like a git dir, and at the common dir a
worktree's dir names; only the repository's own git dir (with the user's config) is left
to the locked view. It renames a config or `config.worktree` with a key not known to be
inert, a `commondir` other than a worktree's `../..`, a live hooks folder and a submodule's
`.git` link to `NAME.coi-quarantined-<time>`, and says so.

The sweep follows no link: every path is opened from a directory descriptor of a swept
folder without following links (coi/core/safefs.py), and renames go through the parent's
descriptor; configs and indexes are read through such a descriptor and handed to git as
bytes, never by name. It looks at a bounded number of folders and git dirs, and says when
it stopped short. It runs as root, not as the owner: a git dir that root in the container
made belongs to neither, and root's own `git status` with safe.directory would still run it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from coi.core import proc, safefs
from coi.core.errors import CoiError
from coi.workspace import checkpoints

# Keys that never make git run a program (anything else in a planted config is refused:
# core.fsmonitor, core.hooksPath, core.sshCommand, *.textconv, filter.*, include.path...).
INERT = re.compile(
    r"core\.(repositoryformatversion|filemode|bare|logallrefupdates|symlinks|ignorecase"
    r"|precomposeunicode|worktree|autocrlf|eol|safecrlf|sparsecheckout|sparsecheckoutcone"
    r"|untrackedcache|quotepath|checkstat|trustctime)"
    r"|remote\.[^\n]+\.(url|pushurl|fetch|push|tagopt|prune|mirror)"
    r"|branch\.[^\n]+\.(remote|merge|rebase|pushremote)"
    r"|submodule\.[^\n]+\.(url|active|branch)"
    r"|user\.(name|email)|extensions\.(objectformat|worktreeconfig)|init\.defaultbranch"
    r"|pull\.rebase|lfs\.repositoryformatversion",
    re.IGNORECASE,
)
SUFFIX = ".coi-quarantined-"
# A folder holding one of these is taken for a git dir (git itself wants HEAD, objects and
# refs, or a commondir; a config alone is enough to be careful about).
LOOKS = ("HEAD", "config", "commondir")
AREAS = ("modules", "worktrees")  # a git dir's folders of its submodules' and worktrees' dirs
MAX_GIT_DIRS = 256  # git dirs swept in one sweep
MAX_DIRS = 4096  # folders looked at while finding them
MAX_DEPTH = 8  # folders deep under .git/modules, and submodules deep through their indexes
MAX_CONFIG = 1 << 20
FILE, DIR, LINK, OTHER, MISSING = "file", "dir", "link", "other", "missing"


@dataclass(frozen=True)
class Place:
    """A path inside one of the swept folders: its index in the list, and the parts below."""

    root: int
    parts: tuple[str, ...] = ()

    def child(self, *names: str) -> Place:
        return Place(self.root, self.parts + names)

    @property
    def parent(self) -> Place:
        return Place(self.root, self.parts[:-1])


def gitlinks(workspace: Path) -> Iterator[str]:
    """The paths the workspace's index records as submodules (mode 160000)."""
    yield from _parse_stage(checkpoints.git(workspace, "ls-files", "--stage", "-z"))


def _parse_stage(raw: bytes) -> Iterator[str]:
    for record in raw.split(b"\0"):
        head, _, path = record.partition(b"\t")
        if head.startswith(b"160000 "):
            yield os.fsdecode(path)


def config_entries(data: bytes) -> list[tuple[str, str]]:
    """The (key, value) pairs of a config file's bytes, includes not followed; CoiError when
    git cannot read them."""
    raw = _git_bare("config", "--no-includes", "--file", "-", "--list", "-z", input=data)
    pairs = []
    for item in raw.split(b"\0"):
        if item:
            key, _, value = item.partition(b"\n")
            pairs.append((os.fsdecode(key), os.fsdecode(value)))
    return pairs


def _git_bare(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    """git on bytes, outside any repository, reading no user or system config."""
    quiet = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", **(env or {})}
    argv = ["git", *checkpoints.SAFE, *args]
    return proc.run_bytes(argv, cwd=Path("/"), env=quiet, input=input, timeout=60)


def index_gitlinks(index: bytes) -> list[str]:
    """The submodule paths an index file's bytes record (sha1 or sha256); CoiError when
    git cannot read it (a split index, say)."""
    last: CoiError | None = None
    for fmt in ("sha1", "sha256"):
        with tempfile.TemporaryDirectory(prefix="coi-index-") as folder:
            repo, tree = Path(folder, "repo"), Path(folder, "tree")
            for sub in ("objects", "refs"):
                (repo / sub).mkdir(parents=True)
            tree.mkdir()
            (repo / "HEAD").write_text("ref: refs/heads/x\n")
            version = "1" if fmt == "sha256" else "0"
            extra = f"[extensions]\n\tobjectformat = {fmt}\n" if fmt == "sha256" else ""
            (repo / "config").write_text(f"[core]\n\trepositoryformatversion = {version}\n{extra}")
            Path(folder, "index").write_bytes(index)
            env = {"GIT_INDEX_FILE": str(Path(folder, "index"))}
            args = (f"--git-dir={repo}", f"--work-tree={tree}", "ls-files", "--stage", "-z")
            try:
                return list(_parse_stage(_git_bare(*args, env=env)))
            except CoiError as exc:
                last = exc
    assert last is not None
    raise last


def neutralize(workspace: Path, warn: Callable[[str], None]) -> list[Path]:
    """Quarantine what planted git dirs in workspace hold that would run code; what was moved."""
    return sweep([workspace], warn)


def sweep(folders: Sequence[Path], warn: Callable[[str], None]) -> list[Path]:
    """Quarantine what git dirs in the folders a session could write would run on the host
    (a gitlink in one folder may point into another: a worktree's into the shared git dir);
    what was moved."""
    sweeper = _Sweep(safefs.outermost(folders), warn)
    try:
        sweeper.run()
    finally:
        sweeper.close()
    return sweeper.moved


@dataclass
class _Sweep:
    roots: list[Path]
    warn: Callable[[str], None]
    fds: list[int | None] = field(default_factory=list)
    moved: list[Path] = field(default_factory=list)
    done: set[Place] = field(default_factory=set)
    kept: set[Place] = field(default_factory=set)  # the repositories' own git dirs
    spellings: list[set[tuple[str, ...]]] = field(default_factory=list)
    looked: int = 0
    short: bool = False
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))

    def __post_init__(self) -> None:
        self.spellings = [{r.parts, Path(os.path.realpath(r)).parts} for r in self.roots]
        for path in self.roots:
            try:
                self.fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            except OSError:
                self.fds.append(None)

    def close(self) -> None:
        for fd in self.fds:
            if fd is not None:
                os.close(fd)

    # -- the plan ---------------------------------------------------------------------

    def run(self) -> None:
        links: list[tuple[Place, str]] = []
        areas: list[Place] = []
        for i, path in enumerate(self.roots):
            if self.fds[i] is None:
                continue
            top = Place(i)
            if self._is_work_tree(path):  # first: a HEAD planted at the top changes nothing
                links += [(top.child(*PurePosixPath(r).parts), r) for r in self._links(path)]
                own = self._own(top)
                areas += self._own_areas(own) if own is not None else []
            elif (
                self._kind(top.child("HEAD")) != MISSING and self._kind(top.child("objects")) == DIR
            ):
                self.kept.add(top)  # a git dir itself: a worktree session's shared one
                areas += self._own_areas(top)
        for folder, rel in links:
            self._submodule(folder, f"submodule {rel}", 0)
        for area in dict.fromkeys(areas):
            for found in self._scan(area):
                self._git_dir(found, f"git dir {self._show(found)}", None, 0)
        if self.short:
            self.warn(
                f"stopped after {self.looked} folders and {len(self.done)} git dirs: a host "
                "`git status` there may still meet a planted submodule; look before you run it"
            )

    @staticmethod
    def _is_work_tree(path: Path) -> bool:
        try:
            return checkpoints.is_git(path)
        except CoiError:
            return False

    def _own(self, top: Place) -> Place | None:
        """The git dir of a work tree's top: its `.git` folder, or where its `.git` file
        points (None: outside the swept folders). One with the user's config is kept."""
        dotgit = top.child(".git")
        kind = self._kind(dotgit)
        if kind == DIR:
            self.kept.add(dotgit)
            return dotgit
        try:
            target = self._gitfile(dotgit) if kind == FILE else None
        except safefs.Escape:
            return None
        if target is not None and self._kind(target.child("commondir")) == MISSING:
            self.kept.add(target)  # a separate git dir; a worktree's dir is swept instead
        return target

    def _own_areas(self, own: Place) -> list[Place]:
        """Where the git dirs of own's submodules and worktrees live, and its common dir's."""
        found = [own.child(a) for a in AREAS]
        common = self._commondir(own)
        if common is not None and common != own:
            self.kept.add(common)
            found += [common.child(a) for a in AREAS]
        return found

    def _links(self, path: Path) -> list[str]:
        try:
            return [r for r in gitlinks(path) if _plain(r)]
        except CoiError:
            return []

    # -- submodules and git dirs ------------------------------------------------------

    def _submodule(self, folder: Place, label: str, depth: int) -> None:
        """Sweep the git dir a submodule's folder uses: its `.git` folder, or where its
        `.git` file points; a `.git` link (or a file leading through one) goes aside."""
        dotgit = folder.child(".git")
        kind = self._kind(dotgit)
        if kind == DIR:
            self._git_dir(dotgit, label, folder, depth)
        elif kind == LINK:
            self._aside(dotgit, label)
        elif kind == FILE:
            try:
                target = self._gitfile(dotgit)
            except safefs.Escape:
                self._aside(dotgit, label)
                return
            if target is not None and target not in self.kept and self._looks_like(target):
                self._git_dir(target, label, folder, depth)

    def _git_dir(self, gitdir: Place, label: str, tree: Place | None, depth: int) -> None:
        """Quarantine what gitdir holds that runs code; then follow its own submodules."""
        if gitdir in self.kept or gitdir in self.done:
            return
        if len(self.done) >= MAX_GIT_DIRS:
            self.short = True
            return
        self.done.add(gitdir)
        worktree = self._config(gitdir, "config", label)
        self._config(gitdir, "config.worktree", label)
        self._check_commondir(gitdir, label)
        self._check_hooks(gitdir, label)
        if worktree is not None:  # core.worktree: its submodules live there
            try:
                tree = self._locate(gitdir, worktree)
            except safefs.Escape:
                tree = None
        if tree is not None and depth < MAX_DEPTH:
            for rel in self._index_links(gitdir, label):
                self._submodule(tree.child(*PurePosixPath(rel).parts), f"{label}/{rel}", depth + 1)

    def _config(self, gitdir: Place, name: str, label: str) -> str | None:
        """Move a config aside unless it is a plain file of inert keys; its core.worktree."""
        place = gitdir.child(name)
        kind = self._kind(place)
        if kind == MISSING:
            return None
        data = self._read(place, MAX_CONFIG) if kind == FILE else None
        try:
            pairs = config_entries(data) if data is not None else None
        except CoiError:
            pairs = None
        if pairs is None or any(not INERT.fullmatch(k) for k, _ in pairs):
            self._aside(place, label)
            return None
        return next((v for k, v in pairs if k.lower() == "core.worktree"), None)

    def _check_commondir(self, gitdir: Place, label: str) -> None:
        """A worktree's dir may name the git dir it lies in (`../..`: swept too, or the
        repository's own); any other commondir goes aside."""
        place = gitdir.child("commondir")
        kind = self._kind(place)
        if kind == MISSING:
            return
        data = self._read(place, 4096) if kind == FILE else None
        standard = len(gitdir.parts) >= 2 and gitdir.parts[-2] == "worktrees"
        if data is not None and data.strip() == b"../.." and standard:
            common = gitdir.parent.parent
            self._git_dir(common, f"git dir {self._show(common)}", None, MAX_DEPTH)
            return
        self._aside(place, label)

    def _check_hooks(self, gitdir: Place, label: str) -> None:
        place = gitdir.child("hooks")
        kind = self._kind(place)
        live = kind == DIR and any(not n.endswith(".sample") for n in self._list(place))
        if kind == LINK or live:
            self._aside(place, label)

    def _index_links(self, gitdir: Place, label: str) -> list[str]:
        """The submodules gitdir's index names; an index the sweep cannot read goes aside
        (git on the host might read it)."""
        place = gitdir.child("index")
        kind = self._kind(place)
        if kind == MISSING:
            return []
        data = self._read(place, None) if kind == FILE else None
        try:
            if data is not None:
                return [r for r in index_gitlinks(data) if _plain(r)]
        except CoiError:
            pass
        self._aside(place, label)
        return []

    def _commondir(self, gitdir: Place) -> Place | None:
        place = gitdir.child("commondir")
        data = self._read(place, 4096) if self._kind(place) == FILE else None
        if data is None:
            return None
        try:
            return self._locate(gitdir, os.fsdecode(data.strip()))
        except safefs.Escape:
            return None

    def _looks_like(self, place: Place) -> bool:
        return any(self._kind(place.child(n)) != MISSING for n in LOOKS)

    def _scan(self, area: Place) -> Iterator[Place]:
        """The folders under area that look like git dirs, and theirs under modules/ and
        worktrees/ (a folder that does not is looked through: submodule names hold '/')."""
        queue = deque([(area, 0)])
        while queue:
            folder, depth = queue.popleft()
            for name in sorted(self._list(folder)):
                self.looked += 1
                if self.looked > MAX_DIRS:
                    self.short = True
                    return
                sub = folder.child(name)
                if self._kind(sub) != DIR:
                    continue
                if self._looks_like(sub):
                    yield sub
                    queue.extend((sub.child(a), depth + 1) for a in AREAS)
                elif depth < MAX_DEPTH:
                    queue.append((sub, depth + 1))

    # -- paths, never through a link --------------------------------------------------

    def _gitfile(self, dotgit: Place) -> Place | None:
        """Where a `.git` file points, inside a swept folder (None: elsewhere, or no pointer)."""
        data = self._read(dotgit, 4096)
        text = os.fsdecode(data or b"").strip()
        if not text.startswith("gitdir:"):
            return None
        return self._locate(dotgit.parent, text.removeprefix("gitdir:").strip())

    def _locate(self, base: Place, target: str) -> Place | None:
        """target (absolute, or relative to base) as a place in a swept folder; None when
        outside them all. Raises safefs.Escape for a link on the way (git would follow it)."""
        here = list(PurePosixPath(self.roots[base.root], *base.parts).parts)
        if target.startswith("/"):
            here = ["/"]
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if len(here) > 1:
                    here.pop()  # every part popped was checked: the kernel's `..` is the same
                continue
            here.append(part)
            place = self._place(here)
            if place is not None and place.parts and self._kind(place) == LINK:
                raise safefs.Escape(errno.ELOOP, f"a link on the way to {target}", target)
        return self._place(here)

    def _place(self, parts: list[str]) -> Place | None:
        """The place of an absolute path: in the deepest swept folder that holds it."""
        best: tuple[int, int] | None = None
        for i, spellings in enumerate(self.spellings):
            for spelling in spellings:
                inside = tuple(parts[: len(spelling)]) == spelling and self.fds[i] is not None
                if inside and (best is None or len(spelling) > best[1]):
                    best = (i, len(spelling))
        return None if best is None else Place(best[0], tuple(parts[best[1] :]))

    def _show(self, place: Place) -> str:
        return str(PurePosixPath(*place.parts)) if place.parts else "."

    def _opened(self, place: Place, flags: int) -> contextlib.AbstractContextManager[int]:
        """An fd for place (safefs: from the folder's fd, no link on the way or at the end)."""
        root = self.fds[place.root]
        assert root is not None
        return safefs.opened(root, "/".join(place.parts), flags)

    def _kind(self, place: Place) -> str:
        """file, dir, link, other or missing (a link anywhere on the way: link)."""
        root = self.fds[place.root]
        assert root is not None
        try:
            info = safefs.lstat(root, "/".join(place.parts))
        except safefs.Escape:
            return LINK
        except OSError:
            return MISSING
        if info is None:
            return MISSING
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            return LINK
        return DIR if stat.S_ISDIR(mode) else FILE if stat.S_ISREG(mode) else OTHER

    def _read(self, place: Place, limit: int | None) -> bytes | None:
        """A regular file's bytes (None: not one, or longer than limit)."""
        try:
            with self._opened(place, os.O_RDONLY | os.O_NONBLOCK) as fd:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return None
                chunks, total = [], 0
                while chunk := os.read(fd, 1 << 16):
                    chunks.append(chunk)
                    total += len(chunk)
                    if limit is not None and total > limit:
                        return None
                return b"".join(chunks)
        except OSError:
            return None

    def _list(self, place: Place) -> list[str]:
        """The names in a folder reached without links ([] when it is none)."""
        try:
            with self._opened(place, os.O_RDONLY | os.O_DIRECTORY) as fd:
                return os.listdir(fd)
        except OSError:
            return []

    def _aside(self, place: Place, label: str) -> None:
        """Rename place (the entry itself, a link included) out of git's way, and say so."""
        name = place.parts[-1]
        try:
            with self._opened(place.parent, os.O_RDONLY | os.O_DIRECTORY) as parent:
                new = self._rename(parent, name)
        except OSError:
            new = None
        if new is None:
            self.warn(f"{label}: could not move {name} aside; do not run git there")
            return
        self.moved.append(Path(self.roots[place.root], *place.parts[:-1], new))
        self.warn(f"{label}: moved {name} aside, it could make the host's git run code")

    def _rename(self, parent: int, name: str) -> str | None:
        for attempt in range(10):  # a name the container made already is not replaced
            new = f"{name}{SUFFIX}{self.stamp}" + (f"-{attempt}" if attempt else "")
            if safefs.lstat(parent, new) is not None:
                continue
            try:
                os.rename(name, new, src_dir_fd=parent, dst_dir_fd=parent)
            except OSError:
                continue
            return new
        return None


def _plain(rel: str) -> bool:
    """An index path with no empty, '.' or '..' part (git never records one)."""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and not {"", ".", ".."} & set(parts)

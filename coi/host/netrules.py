"""`coi setup`'s helper step: the privileged helpers that let non-root users run coi.

Members of the Incus admin group may run exactly two commands as root without a password:
/usr/local/sbin/coi-netrules (coi's firewall rules: a root-owned copy of coi/network's
helper files) and /usr/local/sbin/coi-view (the locked view of protected paths: a copy of
coi/boundary/view_cli.py, protect_host.py, protect_survey.py, protect.py and the three
coi/core files they use). Each runs with the system Python in isolated mode (-I -S: no
environment, no site-packages), and refuses to start when the interpreter, its standard
library or the copy could be changed by anyone but root; otherwise the sudoers rule would
be a root shell.

Two helpers, not one: the network helper's copy is a package of its own without coi
imports, the view code is coi's own package; each stays small enough to read, carries
its own fingerprint (coi refuses a copy that is not its own) and refuses on its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from coi.boundary import protect_host
from coi.boundary.protect_host import VIEW_HELPER
from coi.core import proc
from coi.core.errors import CoiError
from coi.host.steps import Step
from coi.network.nft_cli import SOURCES

HELPER = Path("/usr/local/sbin/coi-netrules")
LIBDIR = Path("/usr/local/lib/coi-netrules")
PACKAGE = "coi_netrules"
SUDOERS = Path("/etc/sudoers.d/coi")
VIEW_LIBDIR = Path("/usr/local/lib/coi-view")

SYSTEM_PYTHON = Path("/usr/bin/python3")
GROUP = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

# The check runs before the helper imports anything of its own. It is repeated after the
# imports, over every module file then loaded.
WRAPPER = '''#!{python} -IS
"""coi's network helper (installed by `coi setup`; run through sudo by members of {group}).

It only adds or removes coi's own nftables rules for coi containers.
"""
import os
import sys

LIB = {lib!r}


def unsafe(path):
    """The path or a folder above it, when anyone but root could change it."""
    path = os.path.realpath(path)
    while True:
        st = os.stat(path)
        if st.st_uid != 0 or st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != 0):
            return path
        if path == os.path.dirname(path):
            return None
        path = os.path.dirname(path)


def refuse_unsafe(paths):
    for path in paths:
        bad = path and os.path.exists(path) and unsafe(path)
        if bad:
            sys.exit(f"coi-netrules: refusing to run: {{bad}} is writable by non-root users")


def loaded():
    return [getattr(m, "__file__", None) for m in list(sys.modules.values())]


refuse_unsafe([sys.executable, __file__, LIB, *sys.path, *loaded()])
refuse_unsafe(os.path.join(LIB, {package!r}, f) for f in os.listdir(os.path.join(LIB, {package!r})))
sys.path.insert(0, LIB)
from {package}.nft_cli import main  # noqa: E402

refuse_unsafe(loaded())
sys.exit(main())
'''

# The view helper: the same checks before anything of its own is imported, then again.
VIEW_WRAPPER = (
    WRAPPER.replace("coi's network helper (installed", "coi's view helper (installed")
    .replace(
        "It only adds or removes coi's own nftables rules for coi containers.",
        "It only builds and releases the locked view of the caller's own workspaces.",
    )
    .replace("coi-netrules: refusing", "coi-view: refusing")
    .replace(
        "refuse_unsafe(os.path.join(LIB, {package!r}, f) for f in os.listdir(os.path.join(LIB, "
        "{package!r})))",
        "refuse_unsafe(os.path.join(d, f) for d, _, fs in os.walk(LIB) for f in fs)",
    )
    .replace("from {package}.nft_cli import main", "from coi.boundary.view_cli import main")
)

SUDOERS_TEXT = """# Installed by `coi setup`. Members of {group} may run coi's two helpers as root,
# and nothing else: coi-netrules only adds or removes coi's own firewall rules for coi's
# containers; coi-view only builds and releases the locked view of protected paths of
# the caller's own workspaces.
%{group} ALL=(root) NOPASSWD: {helper}
%{group} ALL=(root) NOPASSWD: {view}
"""


def unsafe(path: Path) -> Path | None:
    """The path or a folder above it, when anyone but root could change it."""
    current = Path(os.path.realpath(path))
    while True:
        st = current.stat()
        group_writable = st.st_mode & stat.S_IWGRP and st.st_gid != 0
        if st.st_uid != 0 or st.st_mode & stat.S_IWOTH or group_writable:
            return current
        if current.parent == current:
            return None
        current = current.parent


def interpreter() -> Path:
    """A Python only root can change: the system's, else the one running coi."""
    for candidate in (SYSTEM_PYTHON, Path(sys.executable)):
        if candidate.exists() and unsafe(candidate) is None:
            return candidate
    raise CoiError(
        "no root-owned Python for coi's network helper: install python3 from your "
        "distribution (apt-get install python3)"
    )


def wanted(group: str, python: Path) -> dict[Path, str]:
    """Every file of the helper and its sudoers rule, with its content."""
    if not GROUP.fullmatch(group):
        raise CoiError(f"{group!r} is not a valid group name for the sudoers rule")
    here = Path(__file__).resolve().parents[1] / "network"
    files = {LIBDIR / PACKAGE / "__init__.py": ""}
    for name in SOURCES:
        files[LIBDIR / PACKAGE / name] = (here / name).read_text()
    files[HELPER] = WRAPPER.format(python=python, group=group, lib=str(LIBDIR), package=PACKAGE)
    files.update(view_files(python, group))
    files[SUDOERS] = SUDOERS_TEXT.format(group=group, helper=HELPER, view=VIEW_HELPER)
    return files


def view_files(python: Path, group: str) -> dict[Path, str]:
    """The view helper: coi's own files at their package paths, and its wrapper."""
    top = Path(__file__).resolve().parents[2]
    files = {VIEW_LIBDIR / pkg / "__init__.py": "" for pkg in ("coi", "coi/core", "coi/boundary")}
    for rel in protect_host.SOURCES:
        files[VIEW_LIBDIR / rel] = (top / rel).read_text()
    files[VIEW_HELPER] = VIEW_WRAPPER.format(python=python, group=group, lib=str(VIEW_LIBDIR))
    return files


def view_helper_state() -> str:
    """current, missing or stale (another coi's): the installed view helper's files against
    this coi's (they are world-readable: no root needed to compare)."""
    if not VIEW_HELPER.exists():
        return "missing"
    digest = hashlib.sha256()
    try:
        for rel in protect_host.SOURCES:
            digest.update((VIEW_LIBDIR / rel).read_bytes())
    except OSError:
        return "stale"
    return "current" if digest.hexdigest()[:16] == protect_host.fingerprint() else "stale"


def _current(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def plan(group: str) -> list[Step]:
    """What to install so non-root members of group can apply rules (nothing when current)."""
    steps = []
    if shutil.which("sudo") is None:
        steps.append(Step("sudo", "install sudo (it runs coi's network helper as root)"))
    files = wanted(group, interpreter())
    stale = sorted(str(p) for p, text in files.items() if _current(p) != text)
    if stale:
        steps.append(
            Step(
                "netrules",
                f"install coi's helpers {HELPER} and {VIEW_HELPER} and let {group} run "
                "them via sudo",
                {"group": group},
            )
        )
    return steps


def execute(step: Step) -> None:
    """Carry out one planned step."""
    if step.kind == "sudo":
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        proc.run(["apt-get", "update", "-qq"], env=env, timeout=600)
        proc.run(["apt-get", "install", "-y", "-qq", "sudo"], env=env, timeout=600)
    elif step.kind == "netrules":
        install(step.params["group"])


def install(group: str) -> None:
    """Write the helper and the sudoers rule (checked with visudo), root-owned."""
    files = wanted(group, interpreter())
    for path in files:
        if path.parent != SUDOERS.parent:
            _folders(path.parent)
    for path, text in files.items():
        if path == SUDOERS:
            continue
        _write(path, text, 0o755 if path in (HELPER, VIEW_HELPER) else 0o644)
    _write(
        SUDOERS,
        files[SUDOERS],
        0o440,
        check=lambda tmp: proc.run(["visudo", "-c", "-q", "-f", tmp]),
    )


def _folders(folder: Path) -> None:
    """folder made, it and those above it up to its helper's lib folder root's and 0755."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    for top in (LIBDIR, VIEW_LIBDIR):
        if folder == top or top in folder.parents:
            for each in [folder, *folder.parents][: len(folder.relative_to(top).parts) + 1]:
                os.chown(each, 0, 0)
                os.chmod(each, 0o755)


def _write(path: Path, text: str, mode: int, check: Callable[[str], object] | None = None) -> None:
    """Replace path atomically with a root-owned file of that mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.chown(tmp, 0, 0)
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

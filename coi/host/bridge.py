"""`coi setup`'s network step: the privileged helper that lets non-root users apply rules.

Members of the Incus admin group may run exactly one command as root without a password,
/usr/local/sbin/coi-netrules. It runs a root-owned copy of coi/nft.py and
coi/nft_helper.py with the system Python in isolated mode (-I -S: no environment, no
site-packages), and refuses to start when the interpreter, its standard library or the
copy could be changed by anyone but root; otherwise the sudoers rule would be a root shell.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from coi.core import proc
from coi.core.errors import CoiError
from coi.host.setup import Step

HELPER = Path("/usr/local/sbin/coi-netrules")
LIBDIR = Path("/usr/local/lib/coi-netrules")
PACKAGE = "coi_netrules"
SUDOERS = Path("/etc/sudoers.d/coi")
SOURCES = ("nft.py", "nft_helper.py", "nft_guard.py", "egress.py", "nflog.py")
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
from {package}.nft_helper import main  # noqa: E402

refuse_unsafe(loaded())
sys.exit(main())
'''

SUDOERS_TEXT = """# Installed by `coi setup`. Members of {group} may run coi's network helper
# as root, and nothing else: it only adds or removes coi's own firewall rules for coi's
# containers.
%{group} ALL=(root) NOPASSWD: {helper}
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
    files[SUDOERS] = SUDOERS_TEXT.format(group=group, helper=HELPER)
    return files


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
                f"install coi's network helper {HELPER} and let {group} run it via sudo",
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
    (LIBDIR / PACKAGE).mkdir(parents=True, exist_ok=True, mode=0o755)
    for folder in (LIBDIR, LIBDIR / PACKAGE):
        os.chmod(folder, 0o755)
    for path, text in files.items():
        if path == SUDOERS:
            continue
        _write(path, text, 0o755 if path == HELPER else 0o644)
    _write(
        SUDOERS,
        files[SUDOERS],
        0o440,
        check=lambda tmp: proc.run(["visudo", "-c", "-q", "-f", tmp]),
    )


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

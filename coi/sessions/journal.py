"""The journal of sessions still to finish: `coi run` returns its command's exit code as
soon as the session is saved and leaves the stop and the delete of its container to a
detached finisher (coi/sessions/finisher.py).
Each entry is a file under COI_HOME/finishing that outlives a killed finisher or a stopped
machine; the container's watch lock says whether a live process still owns it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from coi.core import output, paths
from coi.core.errors import CoiError
from coi.core.lock import LockBusy, file_lock

if TYPE_CHECKING:
    from coi.incus.api import IncusAPI

FOLDER = "finishing"
ENDPOINT_FIELDS = ("url", "client_cert", "client_key", "server_cert")
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Entry:
    """A container to tear down (its session saved, itself frozen, its folders swept)."""

    name: str
    project: str
    endpoint: dict[str, str | None]  # adapter.Endpoint's fields
    group: str
    attempts: int = 0


def folder() -> Path:
    """COI_HOME/finishing."""
    return paths.coi_home() / FOLDER


def path_of(project: str, name: str) -> Path:
    """The entry of one container (instance names are unique in a project)."""
    return folder() / f"{project}--{name}.json"


def write(entry: Entry) -> Path:
    """Record an entry (atomically: a reader never sees half of one)."""
    path = path_of(entry.project, entry.name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(entry), out)
        out.flush()
        os.fsync(out.fileno())  # the entry must outlive a machine that stops now
    os.replace(temporary, path)
    return path


def read(path: Path) -> Entry | None:
    """An entry, or None when it is gone or unreadable."""
    try:
        data = json.loads(path.read_text())
        return Entry(**{k: v for k, v in data.items() if k in Entry.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def pending(project: str | None = None) -> list[Path]:
    """Entries of a project (of all, when None), by name (cheap when there are none)."""
    try:
        names = os.listdir(folder())
    except FileNotFoundError:
        return []
    prefix = "" if project is None else f"{project}--"
    return [folder() / n for n in sorted(names) if n.startswith(prefix) and n.endswith(".json")]


def spawn(path: Path, lock_fd: int) -> None:
    """Start the detached finisher of an entry. It inherits lock_fd (the container's watch
    lock), so the lock stays held from this process to it with no gap; it has its own
    session and no terminal, so neither a shell nor a pipe waits for it."""
    import subprocess

    with open(folder() / "finisher.log", "ab") as log:  # what went wrong, if anything
        subprocess.Popen(
            [sys.executable, "-m", "coi.sessions.finisher", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            pass_fds=(lock_fd,),
            start_new_session=True,
            cwd="/",
        )


def finish(path: Path, incus: IncusAPI | None = None) -> str | None:
    """Carry out an entry, the teardown of a saved, frozen and swept container (the caller
    holds its watch lock), and remove it; the container's name, or None when there was
    nothing to do. A failure is counted in the entry, dropped after MAX_ATTEMPTS."""
    from coi.incus.adapter import Endpoint, connect
    from coi.launch import executor

    entry = read(path)
    if entry is None:
        path.unlink(missing_ok=True)
        return None
    try:
        if incus is None or incus.project != entry.project:
            fields = {k: entry.endpoint.get(k) for k in ENDPOINT_FIELDS}
            endpoint = Endpoint(**fields)  # type: ignore[arg-type]
            incus = connect(project=entry.project, group=entry.group, endpoint=endpoint)
        executor.teardown(incus, entry.name)
    except CoiError:
        if entry.attempts + 1 < MAX_ATTEMPTS:
            write(replace(entry, attempts=entry.attempts + 1))
        else:
            path.unlink(missing_ok=True)
        raise
    path.unlink(missing_ok=True)
    return entry.name


def settle(incus: IncusAPI, *, wait: bool = False, timeout: float = 60.0) -> list[str]:
    """Carry out the project's entries that no live process owns; with wait, wait (bounded)
    for the live finishers too. The containers torn down here."""
    done = []
    for path in pending(incus.project):
        entry = read(path)
        if entry is None:
            continue
        lock = paths.watch_lock(entry.name)
        what = f"the finisher of {entry.name}"
        try:
            with file_lock(lock, timeout=timeout if wait else 0, what=what):
                if path.exists() and finish(path, incus):  # its owner is gone
                    done.append(entry.name)
        except LockBusy:
            continue  # a live finisher owns it
        except CoiError as exc:
            output.warn(f"could not finish {entry.name}: {exc}")
    return done

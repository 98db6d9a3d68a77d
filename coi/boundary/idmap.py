"""The host files raw.idmap needs: /etc/subuid and /etc/subgid lines that let Incus map
a host uid into a container (read, checked, appended)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def has_root_range(lines: Iterable[str]) -> bool:
    """True when root owns a subordinate id range large enough for containers."""
    for line in lines:
        user, _, rest = line.partition(":")
        start, _, count = rest.partition(":")
        if user == "root" and start.isdigit() and count.isdigit() and int(count) >= 65536:
            return True
    return False


def subid_lines() -> tuple[str, ...]:
    """Lines present in both /etc/subuid and /etc/subgid."""

    def read(p: str) -> set[str]:
        return set(Path(p).read_text().split()) if Path(p).exists() else set()

    return tuple(sorted(read("/etc/subuid") & read("/etc/subgid")))


def add_subid_lines(lines: Iterable[str]) -> None:
    """Append idmap lines to /etc/subuid and /etc/subgid where they are missing."""
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        present = path.read_text().split() if path.exists() else []
        extra = [line for line in lines if line not in present]
        if extra:
            with open(path, "a") as handle:
                handle.write("".join(f"{line}\n" for line in extra))

"""This process's mount points, read from /proc/self/mountinfo (proc(5)).

A bind mount of a folder on the same filesystem keeps its device number, so
os.path.ismount cannot see it; the kernel's own table can.
"""

from __future__ import annotations

import re
from pathlib import Path

_ESCAPED = re.compile(r"\\([0-7]{3})")  # the kernel writes space, tab, newline, \ as \ooo


def points(text: str | None = None) -> list[str]:
    """Every mount point in a mountinfo text (default: this process's), in table order."""
    if text is None:
        try:
            text = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4:
            found.append(_ESCAPED.sub(lambda m: chr(int(m[1], 8)), fields[4]))
    return found


def below(root: Path | str, text: str | None = None) -> list[str]:
    """The mount points under root (not root itself), deepest first."""
    prefix = str(root).rstrip("/") + "/"
    return sorted((p for p in points(text) if p.startswith(prefix)), key=len, reverse=True)

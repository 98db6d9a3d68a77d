"""Durations as users write them in config ("20s", "30m", "2h", "1h30m", "1d") and as coi
shows them back ("1h05m", "42s"). Pure: no clock is read here.
"""

from __future__ import annotations

import re

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# Units largest first, each at most once: "1h30m" reads one way only, "30m1h" is refused.
_FORM = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
MAX_SECONDS = 366 * 86400  # a year: past it a typo (an extra zero or two), not a limit
RULE = 'a duration like "20s", "30m", "2h" or "1h30m", from 1s to 366d'


def parse(text: str) -> int | None:
    """Whole seconds of a duration like "20s" or "1h30m"; None when malformed, zero or
    longer than MAX_SECONDS."""
    found = _FORM.fullmatch(text) if text else None
    if found is None or not any(found.groups()):
        return None
    amounts = (int(g) if g else 0 for g in found.groups())
    seconds = sum(a * unit for a, unit in zip(amounts, UNITS.values(), strict=True))
    return seconds if 0 < seconds <= MAX_SECONDS else None


def show(seconds: float) -> str:
    """A short reading of a time span, rounded down to the second: "45s", "3m07s",
    "2h05m", "3d04h" (the two largest units; a negative span shows as "0s")."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"

"""A step of host setup: the unit `coi setup` plans, prints and carries out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Step:
    """One thing setup will do: a kind the executor knows, what it says, its params."""

    kind: str
    detail: str
    params: dict[str, Any] = field(default_factory=dict)

"""Rule healing only when a running restricted container could need it
(coi/network/healing.py): open-mode hosts never pay for the nft listing or sudo."""

from __future__ import annotations

import pytest

from coi.network import enforce, healing, nft_helper
from tests.fakes import FakeIncus


@pytest.mark.parametrize(
    ("mode", "status", "nic", "heals"),
    [
        ("open", "Running", True, False),
        ("restricted", "Stopped", True, False),
        ("restricted", "Running", False, False),
        ("restricted", "Running", True, True),
        ("allowlist", "Running", True, True),
    ],
)
def test_healing_runs_only_for_a_running_guarded_container(
    monkeypatch: pytest.MonkeyPatch, mode: str, status: str, nic: bool, heals: bool
) -> None:
    fake = FakeIncus()
    record = {
        "name": "other",
        "status": status,
        "expanded_config": {nft_helper.MODE_KEY: mode},
        "expanded_devices": {"eth0": {"type": "nic"}} if nic else {},
    }
    fake.elsewhere.append(record)  # in another project: healing looks at every project
    called: list[object] = []
    monkeypatch.setattr(enforce, "heal", called.append)
    healing.heal_when_needed(fake)
    assert called == ([fake] if heals else [])

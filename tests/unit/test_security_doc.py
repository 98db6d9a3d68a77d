"""SECURITY.md names, beside each promise, the test that plays the attack: every test it
names must exist, so a renamed or deleted test cannot leave a promise unproven."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"`(?:tests/integration/)?(test_[a-z0-9_]+\.py)::(test_[a-z0-9_]+)`")
FILES = re.compile(r"`(tests/(?:unit|property|integration)/test_[a-z0-9_]+\.py)`")


def test_every_test_security_md_names_exists() -> None:
    text = (REPO / "SECURITY.md").read_text()
    named = NAMED.findall(text)
    assert len(named) >= 20  # each promise has its test
    for module, function in named:
        source = (REPO / "tests" / "integration" / module).read_text()
        assert re.search(rf"^def {function}\(", source, re.M), f"{module}::{function} is gone"
    for path in FILES.findall(text):
        assert (REPO / path).is_file(), f"{path} is gone"


def test_every_section_of_promises_is_written() -> None:
    text = (REPO / "SECURITY.md").read_text()
    sections = re.findall(r"^### (.+)$", text, re.M)
    assert len(sections) >= 7
    for body in re.split(r"^### .+$", text, flags=re.M)[1:]:
        assert "`test_" in body or "tests/unit/" in body, body[:80]

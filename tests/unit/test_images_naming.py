"""Dated aliases, the cleanup plan and build container names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from coi.core.errors import UsageError
from coi.images import naming

WHEN = datetime(2026, 11, 27, 17, 5, 9, tzinfo=UTC)


def test_dated_alias_is_name_and_utc_stamp() -> None:
    assert naming.dated_alias("coi", WHEN) == "coi-20261127-170509"
    local = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert naming.dated_alias("coi", local) == "coi-20261127-170509"


def test_stamp_of_needs_exactly_prefix_and_timestamp() -> None:
    assert naming.stamp_of("coi-20261127-170509", "coi-") == WHEN
    assert naming.stamp_of("coi-rust-20261127-170509", "coi-") is None
    assert naming.stamp_of("coi-20261127-170509-x", "coi-") is None
    assert naming.stamp_of("coi-2026112-170509", "coi-") is None
    assert naming.stamp_of("coi-20261327-170509", "coi-") is None  # month 13
    assert naming.stamp_of("coi", "coi-") is None


def test_cleanup_keeps_the_newest_and_deletes_the_rest() -> None:
    aliases = {
        "coi-20260101-000000": "a",
        "coi-20260102-000000": "b",
        "coi-20260103-000000": "c",
        "coi": "c",
    }
    plan = naming.plan_cleanup(aliases, "coi-", keep=2)
    assert plan.kept == ("coi-20260103-000000", "coi-20260102-000000")
    assert plan.delete == ("a",)
    assert plan.removed == ("coi-20260101-000000",)
    assert plan.protected == {}


def test_cleanup_never_touches_other_prefixes() -> None:
    aliases = {
        "coi-20260101-000000": "a",
        "coi-rust-20250101-000000": "r1",
        "coi-rust-20250102-000000": "r2",
    }
    plan = naming.plan_cleanup(aliases, "coi-", keep=1)
    assert plan.delete == () and plan.kept == ("coi-20260101-000000",)


def test_cleanup_never_deletes_what_a_moving_alias_names() -> None:
    aliases = {
        "coi-20260101-000000": "old",
        "coi-20260102-000000": "new",
        "coi-20260103-000000": "newer",
        "coi": "old",  # moved back to an old build by hand
    }
    plan = naming.plan_cleanup(aliases, "coi-", keep=1)
    assert plan.delete == ("new",)
    assert plan.protected == {"coi-20260101-000000": "coi"}


def test_cleanup_deletes_an_image_once_however_many_aliases() -> None:
    aliases = {"x-20260101-000000": "a", "x-20260101-000001": "a", "x-20260102-000000": "b"}
    plan = naming.plan_cleanup(aliases, "x-", keep=1)
    assert plan.delete == ("a",)
    assert set(plan.removed) == {"x-20260101-000000", "x-20260101-000001"}


@pytest.mark.parametrize("keep", [0, -1])
def test_cleanup_refuses_keep_below_one(keep: int) -> None:
    with pytest.raises(UsageError, match="--keep must be 1 or more"):
        naming.plan_cleanup({}, "coi-", keep)


def test_cleanup_needs_a_prefix() -> None:
    with pytest.raises(UsageError):
        naming.plan_cleanup({}, "", 1)


@pytest.mark.parametrize("alias", ["coi", "my-image.v2", "A_b-1", "x" * 63])
def test_valid_aliases(alias: str) -> None:
    assert naming.check_alias(alias) == alias


@pytest.mark.parametrize("alias", ["", "-x", "a/b", "a b", "x" * 64, "ümlaut"])
def test_invalid_aliases(alias: str) -> None:
    with pytest.raises(UsageError):
        naming.check_alias(alias)


def test_dated_of_lists_newest_first() -> None:
    aliases = {"c-20260101-000000": "a", "c-20260301-000000": "b", "c-x-20260401-000000": "z"}
    assert naming.dated_of("c", aliases) == ["c-20260301-000000", "c-20260101-000000"]


def test_build_container_names_are_valid_instance_names() -> None:
    name = naming.build_container_name("My_Image.v2--", "a1b2c3")
    assert name == "coi-build-my-image-v2-a1b2c3"
    assert len(naming.build_container_name("x" * 63, "a1b2c3")) <= 63

"""Validation and planning as polars expressions: every rule, and the duplicate bookkeeping."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.errors import UsageError
from pipeline.inputs.planning import (
    DUPLICATES_SCHEMA,
    PAIR_HASH,
    IdRules,
    check,
    find_duplicates,
    format_duration,
    plan,
    to_send,
)

RULES = IdRules(r"[A-Za-z0-9_-]+", 64)


def planned(
    contacts: list[str | None], locations: list[str | None], rules: IdRules = RULES
) -> pl.DataFrame:
    rows = pl.DataFrame(
        {"row_index": range(len(contacts)), "contact_id": contacts, "location_id": locations},
        schema={"row_index": pl.Int64, "contact_id": pl.String, "location_id": pl.String},
    )
    return plan(rows.lazy(), rules).collect()


@pytest.mark.parametrize(
    ("contact", "location", "code"),
    [
        (None, "L1", "missing_contact_id"),
        ("c1", None, "missing_location_id"),
        (None, None, "missing_contact_id"),
        ("a/b", "L1", "invalid_contact_id"),
        ("a?b", "L1", "invalid_contact_id"),
        ("a#b", "L1", "invalid_contact_id"),
        ("a%2F", "L1", "invalid_contact_id"),
        ("a b", "L1", "invalid_contact_id"),
        ('a"b', "L1", "invalid_contact_id"),
        ("a\nb", "L1", "invalid_contact_id"),
        ("a\x00b", "L1", "invalid_contact_id"),
        ("caf\u00e9", "L1", "invalid_contact_id"),
        ("bad\ufffd", "L1", "invalid_contact_id"),
        ("x" * 65, "L1", "invalid_contact_id"),
        ("c1", "L/1", "invalid_location_id"),
        ("c1", "y" * 65, "invalid_location_id"),
        (None, "L/1", "missing_contact_id"),
        ("c/1", None, "missing_location_id"),
    ],
)
def test_invalid_rows(contact: str | None, location: str | None, code: str) -> None:
    row = planned([contact], [location]).row(0, named=True)
    assert (row["status"], row["error_code"]) == ("invalid", code)
    assert row["error_message"]


@pytest.mark.parametrize(
    "value", ["tDtDnQdgm2LXpyiqYvZ6", "ve9EPM428kjkvShlRW1KT", "0001", "a_b-c", "x" * 64, "Z"]
)
def test_plausible_ids_are_valid(value: str) -> None:
    row = planned([value], [value]).row(0, named=True)
    assert row["status"] is None and row["error_code"] is None


def test_duplicates_point_at_their_first_occurrence_and_are_not_sent() -> None:
    frame = planned(["a", "b", "a", "a", "a", None], ["L", "L", "L", "M", "L", "L"])
    assert frame["status"].to_list() == [None, None, "duplicate", None, "duplicate", "invalid"]
    assert frame["duplicate_of"].to_list() == [None, None, 0, None, 0, None]
    assert frame["error_code"].to_list()[2] == "duplicate_row"
    assert to_send(frame).collect()["row_index"].to_list() == [0, 1, 3]


def test_an_invalid_row_is_never_the_original_of_a_duplicate() -> None:
    frame = planned(["a/b", "a/b"], ["L", "L"])
    assert frame["status"].to_list() == ["invalid", "invalid"]


def test_pattern_is_a_setting() -> None:
    strict = IdRules(r"[A-Za-z0-9]{20,21}", 21)
    frame = planned(["tDtDnQdgm2LXpyiqYvZ6", "short"], ["tDtDnQdgm2LXpyiqYvZ6"] * 2, strict)
    assert frame["error_code"].to_list() == [None, "invalid_contact_id"]


def test_bad_pattern_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="id-pattern"):
        IdRules("[unclosed", 64)


def _reference_duplicates(pairs: list[tuple[str, str]]) -> dict[int, int]:
    """Row -> the first earlier row with the same pair: the rule, in plain Python."""
    first: dict[tuple[str, str], int] = {}
    found: dict[int, int] = {}
    for index, pair in enumerate(pairs):
        if pair in first:
            found[index] = first[pair]
        else:
            first[pair] = index
    return found


def _checked(pairs: list[tuple[str, str]]) -> pl.LazyFrame:
    rows = pl.DataFrame(
        {
            "row_index": range(len(pairs)),
            "contact_id": [c for c, _ in pairs],
            "location_id": [loc for _, loc in pairs],
        },
        schema={"row_index": pl.Int64, "contact_id": pl.String, "location_id": pl.String},
    )
    return check(rows.lazy(), RULES)


ids = st.text(alphabet="abAB01", min_size=1, max_size=3)


@given(st.lists(st.tuples(ids, st.sampled_from(["L1", "L2", "l1"])), max_size=60))
@settings(max_examples=150, deadline=None)
def test_duplicates_match_the_rule_even_when_every_hash_collides(
    pairs: list[tuple[str, str]],
) -> None:
    expected = _reference_duplicates(pairs)
    collide = pl.col("row_index").cast(pl.UInt64) * 0  # every pair has the same hash
    for key in (PAIR_HASH, collide, pl.col("contact_id").str.len_bytes()):
        found = find_duplicates(_checked(pairs), pair_key=key)
        assert dict(found.iter_rows()) == expected
        assert found["row_index"].is_sorted()


def test_no_duplicates_is_an_empty_table_with_its_schema() -> None:
    found = find_duplicates(_checked([("a", "L"), ("b", "L"), ("a", "M")]))
    assert found.is_empty() and found.schema == pl.Schema(DUPLICATES_SCHEMA)


@pytest.mark.parametrize(
    ("seconds", "written"),
    [(0.4, "0s"), (45, "45s"), (200, "3m20s"), (3600, "1h00m00s"), (7500, "2h05m00s")],
)
def test_durations_as_the_dry_run_and_the_check_write_them(seconds: float, written: str) -> None:
    assert format_duration(seconds) == written


def test_the_plans_figures_in_the_json_summary_are_rounded() -> None:
    """A sum of float seconds is 10.299999999999999: the JSON summary (mailed, notified)
    shows 10.3, under the same keys."""
    import json

    from pipeline.inputs.planning import PlanEstimate

    estimate = PlanEstimate(
        rows=3,
        by_status={"to send": 3},
        requests=3,
        locations=1,
        largest_locations=[("L1", 3)],
        estimated_s=10.299999999999999,
        over_daily_quota=[],
        latency_s=0.1 + 0.2,
        pace=1800.0000000002,
        lookup_wait_s=60.00000000001,
    )
    told = estimate.to_dict()
    assert (told["estimated_s"], told["latency_s"], told["pace"], told["lookup_wait_s"]) == (
        10.3,
        0.3,
        1800.0,
        60.0,
    )
    assert set(told) == {
        "rows", "by_status", "requests", "locations", "largest_locations", "estimated_s",
        "over_daily_quota", "latency_s", "pace", "lookup_wait_s", "lookups",
    }  # fmt: skip
    assert "10.299999" not in json.dumps(told)

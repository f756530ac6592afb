"""Stage 2, validate and plan: decide, per row and as polars expressions, what to do with it.

Every row leaves this stage with a ``status`` that is either null (to be sent) or final:
``invalid`` (with the reason) or ``duplicate`` (an earlier row has the same location and
contact; ``duplicate_of`` names it, so the conversation id can be copied once known). Only
valid first occurrences are ever sent, and each is sent once.

An ID must fully match the ID pattern (a setting, ``[A-Za-z0-9_-]+`` by default) and be at
most ``id_max_length`` characters. The default pattern keeps out everything that would change
a URL or a log line: slashes, ``?``, ``#``, ``%``, spaces, quotes, control characters and
non-ASCII (including the replacement character a non-UTF-8 byte was read as).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from pipeline.core.errors import UsageError, plural
from pipeline.core.outcomes import Code, Status
from pipeline.core.values import PUBLISHED_RATE, Rate

if TYPE_CHECKING:  # the options model; imported only for its type
    from pipeline.app.config import RunConfig


@dataclass(frozen=True, slots=True)
class IdRules:
    id_pattern: str  # --id-pattern
    id_max_length: int  # --id-max-length

    @classmethod
    def of(cls, config: RunConfig) -> IdRules:
        return cls(config.id_pattern, config.id_max_length)

    def __post_init__(self) -> None:
        try:
            re.compile(self.id_pattern)
        except re.error as exc:
            raise UsageError(
                f"--id-pattern {self.id_pattern!r}: not a valid regular expression ({exc})"
            ) from exc
        if self.id_max_length < 1:
            raise UsageError(f"--id-max-length {self.id_max_length}: must be at least 1")

    @property
    def anchored(self) -> str:
        return f"^(?:{self.id_pattern})$"

    def accepts(self, value: str) -> bool:
        return len(value) <= self.id_max_length and re.fullmatch(self.id_pattern, value) is not None

    def describe(self) -> str:
        return f"it must match {self.id_pattern} and be at most {self.id_max_length} characters"


def _id_problem(
    column: str, label: str, missing: Code, invalid: Code, rules: IdRules
) -> tuple[pl.Expr, pl.Expr]:
    """(code, message) expressions for one ID column; null where the ID is fine."""
    value = pl.col(column)
    too_long = value.str.len_chars() > rules.id_max_length
    bad_chars = ~value.str.contains(rules.anchored)
    code = (
        pl.when(value.is_null())
        .then(pl.lit(missing.value))
        .when(too_long | bad_chars)
        .then(pl.lit(invalid.value))
    )
    message = (
        pl.when(value.is_null())
        .then(pl.lit(f"{label} is empty"))
        .when(too_long)
        .then(pl.lit(f"{label} is longer than {rules.id_max_length} characters"))
        .when(bad_chars)
        .then(pl.lit(f"{label} has characters outside {rules.id_pattern}"))
    )
    return code, message


def plan(rows: pl.LazyFrame, rules: IdRules) -> pl.LazyFrame:
    """Add ``status``, ``error_code``, ``error_message`` and ``duplicate_of`` to the rows.

    The duplicates are found here (two streaming passes over ``rows``); the rest stays lazy.
    A large input is first written to a file with ``check`` and planned from there, so that
    each pass re-reads Parquet, not the CSV.
    """
    checked = check(rows, rules)
    return mark(checked, find_duplicates(checked))


def check(rows: pl.LazyFrame, rules: IdRules) -> pl.LazyFrame:
    """Add ``error_code`` and ``error_message`` to the rows whose IDs are unusable.

    Row by row, so it streams in bounded memory however long the input is."""
    contact_code, contact_msg = _id_problem(
        "contact_id", "contactId", Code.MISSING_CONTACT_ID, Code.INVALID_CONTACT_ID, rules
    )
    location_code, location_msg = _id_problem(
        "location_id", "locationId", Code.MISSING_LOCATION_ID, Code.INVALID_LOCATION_ID, rules
    )
    # Contact problems are reported before location problems; missing before malformed.
    invalid_code = pl.coalesce(
        pl.when(pl.col("contact_id").is_null()).then(contact_code),
        pl.when(pl.col("location_id").is_null()).then(location_code),
        contact_code,
        location_code,
    )
    invalid_msg = pl.coalesce(
        pl.when(pl.col("contact_id").is_null()).then(contact_msg),
        pl.when(pl.col("location_id").is_null()).then(location_msg),
        contact_msg,
        location_msg,
    )
    return rows.with_columns(invalid_code.alias("error_code"), invalid_msg.alias("error_message"))


DUPLICATES_SCHEMA = {"row_index": pl.Int64(), "duplicate_of": pl.Int64()}
PAIR_HASH = pl.struct("location_id", "contact_id").hash()


def find_duplicates(checked: pl.LazyFrame, pair_key: pl.Expr = PAIR_HASH) -> pl.DataFrame:
    """``(row_index, duplicate_of)`` for every valid row whose location and contact an
    earlier valid row already has; ``duplicate_of`` is that first row.

    Exact, in memory that grows by 8 bytes a row rather than by the IDs' length: the first
    pass keeps only a 64-bit hash of each row's pair and sorts it to find the hashes that
    occur twice; only the rows with such a hash (the duplicates, and the rare collision)
    are then compared by value. ``pair_key`` is that hash (a test passes a colliding one).
    """
    valid = checked.filter(pl.col("error_code").is_null()).select(
        "row_index", "location_id", "contact_id"
    )
    key = pair_key.alias("_key")
    hashes = valid.select(key).collect(engine="streaming").to_series().sort()
    repeated = hashes.filter(hashes == hashes.shift(1)).unique()
    del hashes
    if repeated.is_empty():
        return pl.DataFrame(schema=DUPLICATES_SCHEMA)
    first = pl.col("row_index").min().over("location_id", "contact_id")
    return (
        valid.filter(key.is_in(repeated.implode()))
        .with_columns(first.alias("duplicate_of"))
        .filter(pl.col("duplicate_of") != pl.col("row_index"))
        .select("row_index", "duplicate_of")
        .sort("row_index")
        .collect(engine="streaming")
    )


def mark(checked: pl.LazyFrame, duplicates: pl.DataFrame) -> pl.LazyFrame:
    """The plan: checked rows with their ``status`` (null: to send), and duplicates marked."""
    is_duplicate = pl.col("duplicate_of").is_not_null()
    return checked.join(
        duplicates.lazy(), on="row_index", how="left", maintain_order="left"
    ).with_columns(
        pl.when(pl.col("error_code").is_not_null())
        .then(pl.lit(Status.INVALID.value))
        .when(is_duplicate)
        .then(pl.lit(Status.DUPLICATE.value))
        .alias("status"),
        pl.when(is_duplicate)
        .then(pl.lit(Code.DUPLICATE_ROW.value))
        .otherwise(pl.col("error_code"))
        .alias("error_code"),
        pl.when(is_duplicate)
        .then(pl.format("same locationId and contactId as row {}", pl.col("duplicate_of")))
        .otherwise(pl.col("error_message"))
        .alias("error_message"),
    )


def to_send(planned: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """The rows to send: valid first occurrences, in input order."""
    return (
        planned.lazy()
        .filter(pl.col("status").is_null())
        .select("row_index", "location_id", "contact_id")
    )


@dataclass(frozen=True, slots=True)
class PlanEstimate:
    """What a run of this plan will do, before it does it (printed by ``--dry-run``)."""

    rows: int
    by_status: dict[str, int]  # "to send", "to look up", "already done", "invalid", "duplicate"
    requests: int
    locations: int
    largest_locations: list[tuple[str, int]]
    estimated_s: float  # with every location in parallel at its own limit
    over_daily_quota: list[tuple[str, int]]  # locations whose rows exceed one day's quota
    latency_s: float = 0.0  # the round trip the estimate assumes
    pace: float | None = None  # the requests a second it assumes this machine sends at most
    lookups: int = 0  # rows whose conversation exists without its id yet: searched only
    lookup_wait_s: float = 0.0  # --lookup-wait: how long an id is looked for

    def to_dict(self) -> dict[str, Any]:
        """The plan in the JSON summary, its figures rounded as a person reads them (a sum
        of float seconds is 10.299999999999999, not 10.3); the keys stay."""
        return {
            **asdict(self),
            "estimated_s": round(self.estimated_s, 1),
            "latency_s": round(self.latency_s, 3),
            "pace": None if self.pace is None else round(self.pace, 1),
            "lookup_wait_s": round(self.lookup_wait_s, 1),
        }

    def render(self) -> str:
        lines = [f"plan: {plural(self.rows, 'row')}"]
        width = max(10, *map(len, self.by_status))  # "already done" is longer than most
        lines += [f"  {name:<{width}} {count:>9}" for name, count in self.by_status.items()]
        lines.append(f"requests to send: {self.requests} over {plural(self.locations, 'location')}")
        if self.lookups:
            lines.append(
                f"ids to look up: {self.lookups} (their conversations exist; searched, "
                "never created)"
            )
        if self.largest_locations:
            lines.append("largest locations:")
            lines += [f"  {loc:<24} {count:>9}" for loc, count in self.largest_locations]
        lines.append(
            f"estimated duration: {format_duration(self.estimated_s)} at the per-location "
            f"limit, assuming {self.latency_s * 1000:.0f} ms a request (pipeline check "
            "measures it)"
            + (f" and at most {self.pace:,.0f} requests/s from this machine" if self.pace else "")
        )
        for loc, over in self.over_daily_quota:
            lines.append(
                f"  {loc}: {plural(over, 'row')} over the daily quota; they wait for the next day"
            )
        lines.append(
            f"an id the search index does not show yet is looked up for up to "
            f"{format_duration(self.lookup_wait_s)} (--lookup-wait)"
        )
        return "\n".join(lines)


# A request's round trip for the dry run's estimate, which cannot measure it (pipeline
# check does): HighLevel from a European or American host is typically 80-150 ms.
ASSUMED_LATENCY_S = 0.1
# Requests a second one sending process carries at most, as measured on a 2-core machine
# with the sandbox on the same cores (BENCHMARKS.md: 1,540-2,000 in "Typical imports",
# 1,982 in benchmark 8). A faster machine sends more; the estimate errs long, not short.
CLIENT_PACE = 1_800.0


def send_seconds(rows: int, limits: Sequence[tuple[int, float]], latency_s: float = 0.0) -> float:
    """Seconds from a location's first request to its last answer, when every one of
    ``limits`` (N requests per T seconds) holds at once: the first request goes alone, then
    N at once, then one more window for each further N, where a window is T plus a round
    trip (a permit rests from its answer); the slowest limit decides. The one estimate of a
    location's sending time: the dry run's (``estimate``) and the check's
    (``location_estimate``) are made of it. It never falls as ``rows`` grow."""
    if rows <= 0:
        return 0.0
    windows = max((0.0, *((math.ceil(rows / n) - 1) * (t + latency_s) for n, t in limits)))
    return windows + latency_s * (1 if rows == 1 else 2)


def run_seconds(
    longest_s: float,
    requests: int,
    *,
    latency_s: float = 0.0,
    max_in_flight: int | None = None,
    pace: float | None = None,
) -> float:
    """A run's sending time: its locations go in parallel, so the longest one's
    (``longest_s``), but no faster than ``max_in_flight`` requests at once carry all the
    ``requests`` (Little's law: requests x latency / in flight), nor than ``pace`` requests
    a second (``CLIENT_PACE``): past a few hundred locations the machine sets the time."""
    if max_in_flight:
        longest_s = max(longest_s, requests * latency_s / max_in_flight)
    if pace:
        longest_s = max(longest_s, requests / pace)
    return longest_s


def sending_seconds(
    rows_per_location: Sequence[int],
    *,
    limits: Sequence[tuple[int, float]],
    daily_quota: int,
    latency_s: float = ASSUMED_LATENCY_S,
    max_in_flight: int | None = None,
    pace: float | None = None,
) -> float:
    """Today's sending time of these rows (one count a location): the plan's estimate
    (``estimate``), and the progress bar's ETA of the rows left. The largest location takes
    longest (``send_seconds`` never falls as rows grow), its rows beyond one day's quota not
    sent today; ``run_seconds`` bounds the whole."""
    largest = max(rows_per_location, default=0)
    longest = send_seconds(min(largest, daily_quota), limits, latency_s)
    return run_seconds(
        longest,
        sum(rows_per_location),
        latency_s=latency_s,
        max_in_flight=max_in_flight,
        pace=pace,
    )


def days_needed(rows: int, daily_remaining: int | None, daily_limit: int) -> int:
    """Calendar days a location's rows span: today takes what is left of today's quota
    (all of it when unknown), each later day a full ``daily_limit``."""
    if rows <= 0:
        return 0
    today = daily_limit if daily_remaining is None else max(0, daily_remaining)
    if rows <= today:
        return 1
    return 1 + math.ceil((rows - today) / daily_limit)


@dataclass(frozen=True, slots=True)
class Estimate:
    seconds: float
    days: int


def location_estimate(
    rows: int,
    *,
    announced: tuple[int, float] | None,
    ceiling: Rate | None,
    daily_remaining: int | None,
    daily_limit: int,
    latency_s: float = 0.0,
) -> Estimate:
    """Sending time and days for one location. ``announced`` is the live limit (N, T
    seconds) from the location's answer; until one is known, HighLevel's published
    100/10 s stands in, as it does for a run's first requests. ``ceiling`` is ``--rate``;
    ``latency_s`` the round trip (``pipeline check`` measures it)."""
    limits = [announced or PUBLISHED_RATE.as_tuple()]
    if ceiling is not None:
        limits.append(ceiling.as_tuple())
    return Estimate(
        send_seconds(rows, limits, latency_s), days_needed(rows, daily_remaining, daily_limit)
    )


def estimate(
    planned: pl.DataFrame | pl.LazyFrame,
    sendable: pl.LazyFrame,
    *,
    limits: Sequence[tuple[int, float]],
    daily_quota: int,
    latency_s: float = ASSUMED_LATENCY_S,
    max_in_flight: int | None = None,
    pace: float | None = None,
    lookups: int = 0,
) -> PlanEstimate:
    """Each location sends its rows as fast as every one of ``limits`` (N requests per T
    seconds, all holding at once) allows, all locations at once (``send_seconds``, at
    ``latency_s`` a request); a location's rows beyond ``daily_quota`` wait for the next day.
    ``max_in_flight`` and ``pace`` bound the whole run too (``run_seconds``).

    ``sendable``: the valid rows earlier runs did not settle, of which ``lookups`` only
    need their id searched; the rest of the valid rows are already done (a resume)."""
    per_location = (
        sendable.group_by("location_id")
        .len()
        .sort(["len", "location_id"], descending=[True, False])
        .collect(engine="streaming")
    )
    requests = int(per_location["len"].sum())
    longest = sending_seconds(
        per_location["len"].to_list(),
        limits=limits,
        daily_quota=daily_quota,
        latency_s=latency_s,
        max_in_flight=max_in_flight,
        pace=pace,
    )
    over = per_location.filter(pl.col("len") > daily_quota).with_columns(
        pl.col("len") - daily_quota
    )
    counts = planned.lazy().group_by("status").len().collect(engine="streaming")
    status_rows = dict(zip(counts["status"].to_list(), counts["len"].to_list(), strict=True))
    done = status_rows.get(None, 0) - requests - lookups
    return PlanEstimate(
        rows=sum(status_rows.values()),
        by_status={
            "to send": requests,
            **({"to look up": lookups} if lookups else {}),
            **({"already done": done} if done > 0 else {}),
            **{
                s: status_rows[s]
                for s in (Status.INVALID.value, Status.DUPLICATE.value)
                if s in status_rows
            },
        },
        requests=requests,
        locations=per_location.height,
        largest_locations=list(per_location.head(10).iter_rows()),
        estimated_s=longest,
        latency_s=latency_s,
        over_daily_quota=list(over.iter_rows()),
        pace=pace,
        lookups=lookups,
    )


def format_duration(seconds: float) -> str:
    """``45s``, ``3m20s``, ``2h05m00s``: a duration as the dry run and the check write it."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"

"""What the HTML report shows, as figures: the limit a run was held to, the rows settled over
time (bucketed, per location), the error codes and the problem rows.

Pure data, computed from a results table (polars expressions) and its run metadata; no HTML
here. ``htmlcharts`` draws these figures and ``htmlreport`` lays out the page, so the numbers
can be tested without reading markup, and the drawing changed without touching the numbers.
Every figure is an aggregation whose size does not grow with the run: at most about
``TARGET_BUCKETS`` time buckets, the busiest ``TOP_SERIES`` locations plus "all others".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from pipeline.core.errors import UsageError
from pipeline.core.outcomes import Code, Status
from pipeline.core.values import PUBLISHED_RATE, parse_rate
from pipeline.observe.run_figures import RunInfo

TOP_SERIES = 8  # locations drawn one by one; the rest are one line
TARGET_BUCKETS = 120  # time buckets on the x axis, about
PROBLEM_STATUSES = (Status.FAILED.value, Status.INVALID.value, Status.SKIPPED.value)

# Bucket widths and axis steps a person reads without arithmetic, in seconds.
NICE_SECONDS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5,
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
# A ``--rate`` at the start of the run's rate label ("50/10s and as announced"), read by
# ``values.parse_rate`` as the option itself was.
_LEADING_RATE = re.compile(r"^\s*\d+\s*/\s*(?:\d+(?:\.\d+)?)?\s*(?:ms|s|m|h)?(?=\s|$)")


@dataclass(frozen=True, slots=True)
class LimitLine:
    """The per-location ceiling drawn on the timeline: ``max_requests`` per ``interval_s``."""

    max_requests: int
    interval_s: float
    label: str


def limit_of(run: RunInfo | None) -> LimitLine:
    """The limit the run was held to. A run with ``--rate`` records it ("50/10s and as
    announced"); a run that followed the announced limit alone did not record the number, so
    HighLevel's default (100 per 10 s) stands in for it, and the label says so."""
    match = _LEADING_RATE.match(run.rate) if run is not None else None
    try:
        rate = parse_rate(match.group()) if match is not None else None
    except UsageError:  # a zero count or interval: no limit to draw
        rate = None
    if rate is not None:
        count, interval = rate.as_tuple()
        return LimitLine(count, interval, f"{count} per {duration(interval)} (--rate)")
    count, interval = PUBLISHED_RATE.as_tuple()
    return LimitLine(count, interval, f"{count} per {duration(interval)} (HighLevel's default)")


def bucket_width_s(span_s: float, target: int = TARGET_BUCKETS) -> float:
    """The narrowest nice width that cuts ``span_s`` into at most ``target`` buckets, so the
    chart has the same number of points whether the run took a second or a day."""
    wanted = max(span_s, 0.0) / max(target, 1)
    for width in NICE_SECONDS:
        if width >= wanted:
            return float(width)
    return float(math.ceil(wanted / 86400) * 86400)


@dataclass(frozen=True, slots=True)
class Series:
    """One line of the timeline: a location, or the mean of all the other locations."""

    name: str
    locations: int  # 1, or how many locations the "all others" line stands for
    rows: int  # rows settled, in all (for "all others", of all those locations)
    cumulative: list[float]  # rows settled by the end of each bucket (per location for others)
    last_s: float  # seconds from the first answer to this series' last one
    others: bool = False  # the line of all the locations not drawn one by one


@dataclass(frozen=True, slots=True)
class Timeline:
    """Rows settled over time, bucketed: at most ``TOP_SERIES + 1`` lines of about
    ``TARGET_BUCKETS`` points each, whatever the size of the run."""

    start: datetime
    bucket_s: float
    span_s: float
    locations: int
    series: list[Series]
    per_bucket: list[int]  # rows settled in each bucket, all locations together

    @property
    def buckets(self) -> int:
        return len(self.per_bucket)


def timeline(frame: pl.DataFrame | pl.LazyFrame, top: int = TOP_SERIES) -> Timeline | None:
    """Bucket the answered rows (those with a ``finished_at``) by time and location. None
    when nothing was answered: a dry run, or results from before ``finished_at`` existed."""
    lf = frame.lazy()
    if "finished_at" not in lf.collect_schema().names():
        return None
    sent = lf.filter(pl.col("finished_at").is_not_null()).select(
        pl.col("location_id").fill_null(""), pl.col("finished_at")
    )
    bounds = sent.select(
        pl.col("finished_at").min().alias("first"),
        pl.col("finished_at").max().alias("last"),
        pl.len().alias("rows"),
    ).collect()
    if bounds["rows"][0] == 0:
        return None
    start, last = bounds["first"][0], bounds["last"][0]
    span_s = (last - start).total_seconds()
    width_s = bucket_width_s(span_s)
    width_us = max(round(width_s * 1_000_000), 1)
    buckets = int(span_s * 1_000_000 // width_us) + 1

    per_location = (
        sent.group_by("location_id")
        .agg(pl.len().alias("rows"), pl.col("finished_at").max().alias("last"))
        .sort(["rows", "location_id"], descending=[True, False])
        .collect()
    )
    busiest = per_location.head(top)
    others = per_location.height - busiest.height
    names = busiest["location_id"].to_list()
    # Series k is the k-th busiest location; series ``top`` is all the others together.
    series_index = (
        pl.col("location_id")
        .replace_strict(names, list(range(len(names))), default=len(names), return_dtype=pl.Int32)
        .alias("series")
    )
    bucket = (
        ((pl.col("finished_at") - pl.lit(start)).dt.total_microseconds() // width_us)
        .cast(pl.Int64)
        .alias("bucket")
    )
    counts = sent.select(series_index, bucket).group_by("series", "bucket").len().collect()
    grid = (
        pl.DataFrame(
            {"series": list(range(len(names) + (others > 0)))}, schema={"series": pl.Int32}
        )
        .join(pl.DataFrame({"bucket": pl.int_range(buckets, eager=True)}), how="cross")
        .join(counts, on=["series", "bucket"], how="left")
        .with_columns(pl.col("len").fill_null(0))
        .sort("series", "bucket")
        .with_columns(pl.col("len").cum_sum().over("series").alias("cumulative"))
    )
    cumulative = grid.group_by("series", maintain_order=True).agg("cumulative")
    lines = dict(
        zip(cumulative["series"].to_list(), cumulative["cumulative"].to_list(), strict=True)
    )
    per_bucket = grid.group_by("bucket").agg(pl.col("len").sum()).sort("bucket")["len"].to_list()

    def seconds(moment: datetime) -> float:
        return float((moment - start).total_seconds())

    series = [
        Series(name, 1, rows, [float(v) for v in lines[i]], seconds(moment))
        for i, (name, rows, moment) in enumerate(busiest.iter_rows())
    ]
    if others:
        rest = per_location.slice(top)
        series.append(
            Series(
                "1 other location" if others == 1 else f"all other {others:,} locations",
                others,
                int(rest["rows"].sum()),
                [v / others for v in lines[len(names)]],
                seconds(rest["last"].max()),  # type: ignore[arg-type]
                others=True,
            )
        )
    return Timeline(start, width_s, span_s, per_location.height, series, per_bucket)


def ideal_seconds(rows: int, limit: LimitLine) -> float:
    """How long a location's rows take from its first answer to its last at the limit:
    one full window per ``max_requests`` rows after the first burst."""
    return max(math.ceil(rows / limit.max_requests) - 1, 0) * limit.interval_s


# -- words for a span of time (the limit's label, and the page's) ---------------------------


def duration(seconds: float) -> str:
    """A duration the way people say it: 0.5 s, 12 s, 2 min 5 s, 1 h 4 min."""
    if seconds < 60:
        return f"{seconds:.3g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(round(seconds) // 60, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


# -- tables -------------------------------------------------------------------------------


def error_codes(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows per error code and status (``forbidden`` is ``failed`` for the request that
    met the 403 and ``skipped`` for the rows of that location never sent), with one of
    their messages as an example."""
    return (
        frame.lazy()
        .filter(pl.col("error_code").is_not_null())
        .group_by("error_code", "status")
        .agg(
            pl.len().alias("rows"),
            pl.col("error_message").drop_nulls().first().alias("example"),
        )
        .sort(["rows", "error_code", "status"], descending=[True, False, False])
        .select("error_code", "status", "rows", "example")
        .collect()
    )


NO_ID_YET = Code.ID_NOT_FOUND_YET.value
LABELS = {NO_ID_YET: "exists, id not found yet"}  # a part of the status bar that is no status


def statuses_shown(by_status: dict[str, int], by_error_code: dict[str, int]) -> dict[str, int]:
    """Rows by status, with the ``exists`` rows whose id was not found yet apart (under
    ``NO_ID_YET``): they are not done, and are drawn as needing attention."""
    no_id = by_error_code.get(NO_ID_YET, 0)
    shown: dict[str, int] = {}
    for status, count in by_status.items():
        if status == Status.EXISTS.value and no_id:
            if count > no_id:
                shown[status] = count - no_id
            shown[NO_ID_YET] = no_id
        else:
            shown[status] = count
    return shown


def needs_attention() -> pl.Expr:
    """A row whose conversation exists but whose id the search index has not shown yet:
    ``exists``, yet not done (a rerun looks it up), so it is shown as a problem."""
    return (pl.col("error_code") == Code.ID_NOT_FOUND_YET.value).fill_null(False)


def problem_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows someone has to look at: failed, invalid, skipped for a reason other than
    a dry run (a dry run's planned rows are its purpose, not a problem), and those whose id
    was not found yet."""
    dry_run = (pl.col("status") == Status.SKIPPED.value) & (
        pl.col("error_code") == Code.DRY_RUN.value
    ).fill_null(False)
    return frame.filter((pl.col("status").is_in(PROBLEM_STATUSES) & ~dry_run) | needs_attention())

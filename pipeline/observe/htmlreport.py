"""The report as one HTML page: ``pipeline report RESULTS --format html -o report.html``.

A page people would rather look at than read, which is also a file they can mail, attach to
a ticket or open on a machine with no network. So everything is inline: the CSS, and the
charts as SVG drawn here in Python. No script runs and nothing is fetched.

The page is built from aggregations (polars expressions), never from one element per row:
the time axis is cut into at most about ``TARGET_BUCKETS`` buckets, the locations into the
busiest ``TOP_SERIES`` plus "all others", and the problem table stops at
``MAX_LISTED_ROWS``. A run of a million rows over a thousand locations gives a page of the
same size as a run of a thousand.

Every string that comes from the data (IDs, messages, trace ids, the file's own path) is
untrusted: it came from a spreadsheet or from an API answer. Each one passes through
``_esc`` before it reaches the page.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from pipeline.core import constants
from pipeline.core.outcomes import Code, Status
from pipeline.observe.report import STATUS_ORDER, SUCCESS_STATUSES, Report, RunInfo, build_report

TOP_SERIES = 8  # locations drawn one by one; the rest are one line
TARGET_BUCKETS = 120  # time buckets on the x axis, about
MAX_LISTED_ROWS = 200  # rows in the problem table
MAX_MESSAGE_CHARS = 160  # of an error message in a table cell (the whole one is its tooltip)
MAX_ID_CHARS = 28  # of an ID in a table cell: HighLevel's are 20; an invalid one may be longer
PROBLEM_STATUSES = (Status.FAILED.value, Status.INVALID.value, Status.SKIPPED.value)

STATUS_COLOURS = {
    Status.CREATED.value: "#2f9e44",
    Status.EXISTS.value: "#74b816",
    Status.DUPLICATE.value: "#94a3b8",
    Status.INVALID.value: "#f59f00",
    Status.FAILED.value: "#e03131",
    Status.SKIPPED.value: "#7950f2",
}
OTHER_COLOUR = "#868e96"
# Tableau 10's first eight: distinct for the common forms of colour blindness, and in print.
SERIES_COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
)
OTHERS_COLOUR = "#6c757d"
LIMIT_COLOUR = "#212529"

# Bucket widths and axis steps a person reads without arithmetic, in seconds.
_NICE_SECONDS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5,
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
_LEADING_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)?(?=\s|$)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _esc(value: object) -> str:
    """Text from the data, made inert: IDs and messages are untrusted."""
    return html.escape("" if value is None else str(value), quote=True)


# -- the pure parts: limits, buckets, series ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limit:
    """The per-location ceiling drawn on the timeline: ``max_requests`` per ``interval_s``."""

    max_requests: int
    interval_s: float
    label: str


def limit_of(run: RunInfo | None) -> Limit:
    """The limit the run was held to. A run with ``--rate`` records it ("50/10s and as
    announced"); a run that followed the announced limit alone did not record the number, so
    HighLevel's default (100 per 10 s) stands in for it, and the label says so."""
    match = _LEADING_RATE.match(run.rate) if run is not None else None
    if match is not None:
        count, amount, unit = match.groups()
        interval = float(amount or 1) * _UNIT_SECONDS[unit or "s"]
        if int(count) > 0 and interval > 0:
            return Limit(int(count), interval, f"{count} per {_duration(interval)} (--rate)")
    default = constants.DEFAULT_RATE_MAX, constants.DEFAULT_RATE_INTERVAL_S
    return Limit(*default, f"{default[0]} per {_duration(default[1])} (HighLevel's default)")


def bucket_width_s(span_s: float, target: int = TARGET_BUCKETS) -> float:
    """The narrowest nice width that cuts ``span_s`` into at most ``target`` buckets, so the
    chart has the same number of points whether the run took a second or a day."""
    wanted = max(span_s, 0.0) / max(target, 1)
    for width in _NICE_SECONDS:
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


def ideal_seconds(rows: int, limit: Limit) -> float:
    """How long a location's rows take from its first answer to its last at the limit:
    one full window per ``max_requests`` rows after the first burst."""
    return max(math.ceil(rows / limit.max_requests) - 1, 0) * limit.interval_s


# -- formatting ---------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    """A duration the way people say it: 0.5 s, 12 s, 2 min 5 s, 1 h 4 min."""
    if seconds < 60:
        return f"{seconds:.3g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(round(seconds) // 60, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def _clock(seconds: float, span_s: float) -> str:
    """An axis label: seconds for a short run, m:ss for a longer one, h:mm past two hours."""
    if span_s < 120:
        return f"{seconds:g} s"
    if span_s < 7200:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes}:{rest:02d}"
    hours, rest = divmod(round(seconds) // 60, 60)
    return f"{hours}:{rest:02d} h"


def _nice_step(span: float, ticks: int) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about ``ticks`` ticks over ``span``."""
    raw = max(span, 1e-9) / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw)


def _time_step(span_s: float, ticks: int = 8) -> float:
    wanted = max(span_s, 1e-3) / ticks
    return next((float(s) for s in _NICE_SECONDS if s >= wanted), _nice_step(span_s, ticks))


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:,.1f}"


def _percent(part: int, whole: int) -> str:
    if whole == 0:
        return "0%"
    share = 100 * part / whole
    return f"{share:.0f}%" if share >= 10 or share == 0 else f"{share:.1f}%"


# -- charts (inline SVG) ------------------------------------------------------------------

_W, _H = 960, 300
_HEADROOM = 1.08  # the y axis goes this far above the highest value
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 64, 24, 16, 36


def _status_bar(by_status: dict[str, int], rows: int) -> str:
    """One bar of the rows by status, each segment its share, with a tooltip."""
    if rows == 0:
        return '<p class="muted">The file has no rows.</p>'
    parts, x = [], 0.0
    for status, count in by_status.items():
        width = 1000 * count / rows
        colour = STATUS_COLOURS.get(status, OTHER_COLOUR)
        parts.append(
            f'<rect x="{x:.2f}" y="0" width="{width:.2f}" height="36" fill="{colour}">'
            f"<title>{_esc(status)}: {count:,} rows ({_percent(count, rows)})</title></rect>"
        )
        x += width
    return (
        '<svg class="chart status-bar" viewBox="0 0 1000 36" preserveAspectRatio="none" '
        f'role="img" aria-label="rows by status">{"".join(parts)}</svg>'
    )


def _axes(
    x_max: float, y_max: float, span_s: float, y_label: str
) -> tuple[list[str], float, float]:
    """Grid lines, tick labels and the scales of a time chart."""
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    sx, sy = plot_w / x_max, plot_h / y_max
    out = []
    step = _nice_step(y_max, 6)
    value = 0.0
    while value <= y_max + 1e-9:
        y = _H - _PAD_B - value * sy
        out.append(
            f'<line class="grid" x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        out.append(f'<text class="tick" x="{_PAD_L - 8}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{_number(value)}</text>")  # fmt: skip
        value += step
    step = _time_step(x_max)
    value = 0.0
    while value <= x_max + 1e-9:
        x = _PAD_L + value * sx
        out.append(f'<line class="tick-mark" x1="{x:.1f}" x2="{x:.1f}" '
                   f'y1="{_H - _PAD_B}" y2="{_H - _PAD_B + 5}"/>')  # fmt: skip
        out.append(f'<text class="tick" x="{x:.1f}" y="{_H - _PAD_B + 20}" text-anchor="middle">'
                   f"{_clock(value, span_s)}</text>")  # fmt: skip
        value += step
    out.append(f'<line class="axis" x1="{_PAD_L}" x2="{_W - _PAD_R}" '
               f'y1="{_H - _PAD_B}" y2="{_H - _PAD_B}"/>')  # fmt: skip
    out.append(f'<text class="axis-label" x="{_PAD_L}" y="{_PAD_T - 4}">{_esc(y_label)}</text>')
    return out, sx, sy


def _svg(body: Iterable[str], label: str, css: str) -> str:
    return (
        f'<svg class="chart {css}" viewBox="0 0 {_W} {_H}" role="img" aria-label="{_esc(label)}">'
        + "".join(body)
        + "</svg>"
    )


def _points(xs: Sequence[float], ys: Sequence[float], sx: float, sy: float) -> str:
    return " ".join(
        f"{_PAD_L + x * sx:.1f},{_H - _PAD_B - y * sy:.1f}" for x, y in zip(xs, ys, strict=True)
    )


def _limit_path(limit: Limit, x_max: float, y_max: float) -> tuple[list[float], list[float]] | None:
    """The most one location may have settled by each moment: its full burst at once, then
    one burst more each window (a staircase), cut at the top of the chart; a straight line
    at that slope once the stairs would be too many to see. None when even the first burst
    is above the chart: no location had enough rows to meet the limit."""
    n, t = limit.max_requests, limit.interval_s
    if n >= y_max:
        return None
    if x_max / t > 200:
        x_end = min(x_max, (y_max / n - 1) * t)
        return [0.0, x_end], [float(n), n * (x_end / t + 1)]
    xs, ys, k = [0.0], [float(n)], 1
    while k * t <= x_max:
        xs += [k * t, k * t]
        ys += [float(k * n), float(min((k + 1) * n, y_max))]
        if (k + 1) * n >= y_max:
            return xs, ys
        k += 1
    return [*xs, x_max], [*ys, ys[-1]]


def _timeline_chart(line: Timeline, limit: Limit) -> str:
    """Rows settled per location, cumulative, against the limit's staircase."""
    x_max = line.buckets * line.bucket_s
    top = max(s.cumulative[-1] for s in line.series)
    y_max = top * _HEADROOM if top > 0 else 1.0
    body, sx, sy = _axes(x_max, y_max, line.span_s, "rows settled, per location")
    stairs = _limit_path(limit, x_max, y_max)
    if stairs is not None:
        body.append(
            f'<polyline class="limit" points="{_points(*stairs, sx, sy)}" '
            f'stroke="{LIMIT_COLOUR}"><title>the limit: {_esc(limit.label)}, per location'
            "</title></polyline>"
        )
    ends = [line.bucket_s * (b + 1) for b in range(line.buckets)]
    for index, series in enumerate(line.series):
        others = series.others
        colour = OTHERS_COLOUR if others else SERIES_COLOURS[index % len(SERIES_COLOURS)]
        what = f"{series.rows:,} rows" + (", per location on average" if others else "")
        body.append(
            f'<polyline class="series{" others" if others else ""}" '
            f'points="{_points([0.0, *ends], [0.0, *series.cumulative], sx, sy)}" '
            f'stroke="{colour}"><title>{_esc(series.name)}: {what}</title></polyline>'
        )
    return _svg(body, "rows settled over time per location, against the limit", "timeline")


def _throughput_chart(line: Timeline) -> str:
    """Rows settled per second in each bucket, all locations together: stalls show as gaps."""
    rates = [count / line.bucket_s for count in line.per_bucket]
    x_max = line.buckets * line.bucket_s
    y_max = max(rates) * 1.08 if max(rates) > 0 else 1.0
    body, sx, sy = _axes(x_max, y_max, line.span_s, "rows settled per second, all locations")
    width = max(line.bucket_s * sx - 1, 0.6)
    for bucket, rate in enumerate(rates):
        if rate == 0:
            continue
        x, height = _PAD_L + bucket * line.bucket_s * sx, rate * sy
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{_H - _PAD_B - height:.1f}" width="{width:.1f}" '
            f'height="{height:.1f}"><title>{_clock(bucket * line.bucket_s, line.span_s)}: '
            f"{line.per_bucket[bucket]:,} rows</title></rect>"
        )
    return _svg(body, "rows settled per second over time", "throughput")


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


def problem_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows someone has to look at: failed, invalid, or skipped for a reason other than
    a dry run (a dry run's planned rows are its purpose, not a problem)."""
    dry_run = (pl.col("status") == Status.SKIPPED.value) & (
        pl.col("error_code") == Code.DRY_RUN.value
    ).fill_null(False)
    return frame.filter(pl.col("status").is_in(PROBLEM_STATUSES) & ~dry_run)


def _message_cell(message: object, trace_id: object = None) -> str:
    """A message, cut to ``MAX_MESSAGE_CHARS`` (the whole one is its tooltip), with the
    trace id HighLevel's support asks for under it."""
    text = "" if message is None else str(message)
    trace = "" if trace_id is None else f'<div class="trace">trace {_esc(trace_id)}</div>'
    if len(text) <= MAX_MESSAGE_CHARS:
        return f'<td class="msg">{_esc(text)}{trace}</td>'
    return f'<td class="msg" title="{_esc(text)}">{_esc(text[:MAX_MESSAGE_CHARS])}…{trace}</td>'


def _id_cell(value: object) -> str:
    """An ID, whole unless it is too long to be one (an invalid row's cell can hold
    anything): then cut, with the whole value as its tooltip."""
    text = "" if value is None else str(value)
    if len(text) <= MAX_ID_CHARS:
        return f'<td class="id">{_esc(text)}</td>'
    return f'<td class="id" title="{_esc(text)}">{_esc(text[: MAX_ID_CHARS - 1])}…</td>'


def _status_pill(status: object) -> str:
    colour = STATUS_COLOURS.get(str(status), OTHER_COLOUR)
    return f'<span class="pill" style="--c:{colour}">{_esc(status)}</span>'


_ROW_COLUMNS = (
    ("row_index", "row", "num"),
    ("contact_id", "contact", "id"),
    ("location_id", "location", "id"),
    ("status", "status", ""),
    ("error_code", "error code", "code"),
    ("http_status", "HTTP", "num"),
    ("attempts", "tries", "num"),
    ("error_message", "message and trace id", ""),
)


def _rows_table(rows: pl.DataFrame, total: int, more_hint: str) -> str:
    columns = [c for c in _ROW_COLUMNS if c[0] in rows.columns]
    head = "".join(f'<th class="{css}">{label}</th>' for _, label, css in columns)
    traces = "trace_id" in rows.columns
    body = []
    for row in rows.select([c[0] for c in columns] + ["trace_id"] * traces).iter_rows(named=True):
        cells = []
        for name, _, css in columns:
            value = row[name]
            if name == "status":
                cells.append(f"<td>{_status_pill(value)}</td>")
            elif name == "error_message":
                cells.append(_message_cell(value, row.get("trace_id")))
            elif css == "id":
                cells.append(_id_cell(value))
            else:
                cells.append(f'<td class="{css}">{"" if value is None else _esc(value)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = ""
    if total > rows.height:
        note = (
            f'<p class="muted">Showing the first {rows.height:,} of {total:,} rows. '
            f"All of them, as CSV: <code>{_esc(more_hint)}</code></p>"
        )
    return (
        f'<div class="scroll"><table class="rows"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{note}"
    )


# -- the page -----------------------------------------------------------------------------


def _card(label: str, value: str, sub: str = "", tone: str = "") -> str:
    sub_html = f'<div class="sub">{sub}</div>' if sub else ""
    return (
        f'<div class="card {tone}"><div class="label">{label}</div>'
        f'<div class="value">{value}</div>{sub_html}</div>'
    )


def _header(report: Report, title: str, dry_run: bool) -> str:
    by = report.by_status
    rows = report.rows
    succeeded = sum(by.get(s.value, 0) for s in SUCCESS_STATUSES)
    run = report.run
    badge = '<span class="badge">dry run</span>' if dry_run else ""
    started = ""
    if run is not None:
        started = f"run started {_esc(run.started_at.replace('T', ' ')[:19])} UTC · "
    cards = [
        _card("rows", f"{rows:,}", f"{report.locations:,} locations"),
        _card(
            "succeeded",
            f"{succeeded:,}",
            " · ".join(
                f"{by.get(s, 0):,} {s}"
                for s in ("created", "exists", "duplicate")
                if by.get(s) or s == "created"
            ),
            "good" if succeeded == rows and rows else "",
        ),
    ]
    for status in PROBLEM_STATUSES:
        count = by.get(status, 0)
        sub = _percent(count, rows) + " of rows"
        if status == Status.SKIPPED.value and dry_run:
            sub = "planned, not sent (dry run)"
        tone = "bad" if count and not (dry_run and status == Status.SKIPPED.value) else ""
        cards.append(_card(status, f"{count:,}", sub, tone))
    if run is not None:
        cards.append(_card("duration", _duration(run.elapsed_s), f"{run.workers} worker(s)"))
        cards.append(
            _card("requests", f"{run.requests:,}", f"{run.requests_per_s:,.1f} per second")
        )
        latency = (
            f"{run.mean_latency_ms:g} ms mean latency" if run.mean_latency_ms is not None else ""
        )
        if latency and run.p50_latency_ms is not None and run.p99_latency_ms is not None:
            latency += f" (p50 {run.p50_latency_ms:g}, p99 {run.p99_latency_ms:g})"
        peak = f"at most {run.peak_in_flight:,} in flight" if run.peak_in_flight else ""
        cards.append(
            _card(
                "throttled (429)",
                f"{run.throttled:,}",
                " · ".join(x for x in (peak, latency) if x),
                "warn" if run.throttled else "",
            )
        )
    verdict = (
        '<p class="verdict good">Every row succeeded.</p>'
        if report.all_succeeded and rows and not dry_run
        else (
            f'<p class="verdict bad">{report.problem_rows:,} rows need attention '
            "(failed, invalid, or skipped).</p>"
            if report.problem_rows
            else ""
        )
    )
    return (
        f'<header><div class="title"><h1>Results report {badge}</h1>'
        f'<div class="path">{_esc(title)}</div>'
        f'<div class="muted">{started}rate {_esc(run.rate if run else "unknown")}</div></div>'
        f"{verdict}</header>"
        f'<section class="cards">{"".join(cards)}</section>'
    )


def _outcomes(report: Report, frame: pl.DataFrame) -> str:
    rows = report.rows
    legend = "".join(
        f'<li><span class="swatch" style="background:{STATUS_COLOURS.get(s, OTHER_COLOUR)}">'
        f'</span>{_esc(s)} <b>{n:,}</b> <span class="muted">{_percent(n, rows)}</span></li>'
        for s, n in report.by_status.items()
    )
    codes = error_codes(frame)
    if codes.height:
        biggest = int(codes["rows"].max())  # type: ignore[arg-type]
        body = "".join(
            f'<tr><td class="code">{_esc(code)}</td><td>{_status_pill(status)}</td>'
            f'<td class="num">{n:,}</td><td class="barcell"><span class="hbar" '
            f'style="width:{100 * n / biggest:.1f}%;background:'
            f'{STATUS_COLOURS.get(str(status), OTHER_COLOUR)}"></span></td>'
            f"{_message_cell(example)}</tr>"
            for code, status, n, example in codes.iter_rows()
        )
        table = (
            '<table class="codes"><thead><tr><th>error code</th><th>status</th>'
            '<th class="num">rows</th><th></th><th>example message</th></tr></thead>'
            f"<tbody>{body}</tbody></table>"
        )
    else:
        table = '<p class="muted">No error codes: every row was created.</p>'
    return (
        '<section class="panel" id="outcomes"><h2>Outcomes</h2>'
        f'{_status_bar(report.by_status, rows)}<ul class="legend">{legend}</ul>'
        f"<h3>By error code</h3>{table}</section>"
    )


def _over_time(frame: pl.DataFrame, run: RunInfo | None) -> str:
    head = '<section class="panel" id="timeline"><h2>Rows settled over time</h2>'
    if "finished_at" not in frame.columns:
        return (
            head + '<p class="muted">This results file has no <code>finished_at</code> column '
            "(an older version wrote it), so there is nothing to draw over time.</p></section>"
        )
    line = timeline(frame)
    if line is None:
        why = "a dry run sends nothing" if run is not None and run.dry_run else "no row was sent"
        return (
            head + f'<p class="muted">No row was answered ({why}): nothing to draw.</p></section>'
        )
    limit = limit_of(run)
    legend_rows = []
    for index, series in enumerate(line.series):
        others = series.others
        colour = OTHERS_COLOUR if others else SERIES_COLOURS[index % len(SERIES_COLOURS)]
        mean = series.rows / series.locations
        ideal = ideal_seconds(math.ceil(mean), limit)
        legend_rows.append(
            f'<tr><td><span class="line-swatch{" dashed" if others else ""}" '
            f'style="--c:{colour}"></span></td>'
            f'<td class="{"" if others else "id"}">{_esc(series.name)}</td>'
            f'<td class="num">{series.rows:,}'
            + (f' <span class="muted">({_number(mean)} each)</span>' if others else "")
            + f'</td><td class="num">{_duration(series.last_s)}</td>'
            f'<td class="num">{_duration(ideal)}</td></tr>'
        )
    top = max(s.cumulative[-1] for s in line.series)
    above = " (above the chart: no location had a full burst of rows)"
    legend_rows.append(
        f'<tr><td><span class="line-swatch limit" style="--c:{LIMIT_COLOUR}"></span></td>'
        f'<td colspan="4">the limit per location: {_esc(limit.label)}'
        f"{above if limit.max_requests >= top * _HEADROOM else ''}</td></tr>"
    )
    rest = line.series[-1]
    shown = (
        f"the busiest {len(line.series) - 1} apart, the other {rest.locations:,} as their "
        "mean per location"
        if rest.others
        else f"{line.locations} location{'s' if line.locations > 1 else ''}"
    )
    return (
        head + f'<p class="muted">Cumulative rows answered since the first answer, per location '
        f"({shown}), in buckets of {_duration(line.bucket_s)}. A line that follows the "
        "staircase ran at the limit; one below it was held back (429s, retries, or the "
        "machine).</p>"
        f'<div class="figure">{_timeline_chart(line, limit)}</div>'
        '<table class="series-legend"><thead><tr><th></th><th>location</th>'
        '<th class="num">rows</th><th class="num">last answer at</th>'
        '<th class="num">at the limit</th></tr></thead>'
        f"<tbody>{''.join(legend_rows)}</tbody></table>"
        f"<h3>Throughput</h3>"
        f'<div class="figure">{_throughput_chart(line)}</div></section>'
    )


def _locations(report: Report) -> str:
    if not report.by_location:
        return ""
    statuses = [s for s in STATUS_ORDER if s in report.by_status]
    daily = report.run.daily_remaining if report.run is not None else {}
    head = "".join(f'<th class="num">{_esc(s)}</th>' for s in statuses)
    body = []
    for row in report.by_location:
        total = int(row["rows"]) or 1
        segments = "".join(
            f'<span style="width:{100 * int(row[s]) / total:.2f}%;'
            f'background:{STATUS_COLOURS.get(s, OTHER_COLOUR)}" title="{_esc(s)}: {row[s]:,}">'
            "</span>"
            for s in statuses
            if row[s]
        )
        left = daily.get(str(row["location_id"]))
        body.append(
            f'<tr><td class="id">{_esc(row["location_id"])}</td>'
            f'<td class="num">{int(row["rows"]):,}</td>'
            f'<td class="barcell"><span class="stack">{segments}</span></td>'
            + "".join(f'<td class="num">{int(row[s]):,}</td>' for s in statuses)
            + (f'<td class="num">{"" if left is None else f"{left:,}"}</td>' if daily else "")
            + "</tr>"
        )
    more = report.locations - len(report.by_location)
    apart = (
        f" {report.rows_without_location:,} rows have no usable location id."
        if report.rows_without_location
        else ""
    )
    note = f"The {len(report.by_location)} largest of {report.locations:,}." if more else ""
    return (
        '<section class="panel" id="locations"><h2>Locations</h2>'
        f'<p class="muted">{note}{apart}</p>'
        '<div class="scroll"><table class="locations"><thead><tr><th>location</th>'
        f'<th class="num">rows</th><th></th>{head}'
        + ('<th class="num">daily quota left</th>' if daily else "")
        + f"</tr></thead><tbody>{''.join(body)}</tbody></table></div></section>"
    )


def _listing(
    frame: pl.DataFrame, title: str, listed: pl.DataFrame | None, listed_label: str | None
) -> str:
    if listed is None:
        rows, heading, label = problem_rows(frame), "Problem rows", "failed,invalid,skipped"
        empty = "No problem rows: nothing failed, was invalid, or was skipped."
    else:
        rows, label = listed, listed_label or "all"
        heading, empty = f"Rows: {label}", "No row has these statuses."
    if rows.height == 0:
        return (
            f'<section class="panel" id="rows"><h2>{_esc(heading)}</h2>'
            f'<p class="verdict good">{_esc(empty)}</p></section>'
        )
    hint = f"pipeline report {title} --rows {label} --format csv -o problems.csv"
    return (
        f'<section class="panel" id="rows"><h2>{_esc(heading)} '
        f'<span class="count">{rows.height:,}</span></h2>'
        f"{_rows_table(rows.head(MAX_LISTED_ROWS), rows.height, hint)}</section>"
    )


def render_html(
    frame: pl.DataFrame,
    run: RunInfo | None,
    *,
    title: str,
    listed: pl.DataFrame | None = None,
    listed_label: str | None = None,
) -> str:
    """The whole page. ``listed`` (``--rows``) replaces the problem rows in the table at the
    end; everything above it always describes the whole file."""
    report = build_report(frame, run)
    # A file without run metadata still tells a dry run by its planned rows' code.
    dry_run = run.dry_run if run is not None else bool(report.by_error_code.get("dry_run"))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Results report: {_esc(title)}</title><style>{_CSS}</style></head><body>"
        '<main id="report">'
        + _header(report, title, dry_run)
        + _outcomes(report, frame)
        + _over_time(frame, run)
        + _locations(report)
        + _listing(frame, title, listed, listed_label)
        + f"<footer>Written by <code>pipeline report</code> on {generated}. One self-contained "
        "file: no scripts, nothing fetched.</footer></main></body></html>\n"
    )


_CSS = """
:root{--ink:#1f2328;--muted:#656d76;--line:#d8dee4;--bg:#f6f8fa;--panel:#fff;
--good:#2f9e44;--bad:#e03131;--warn:#f59f00;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans","DejaVu Sans",sans-serif}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font-size:14px;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:28px 24px 40px}
header{display:flex;justify-content:space-between;align-items:flex-end;gap:16px;flex-wrap:wrap;
margin-bottom:18px}
h1{font-size:24px;margin:0 0 4px;font-weight:650;letter-spacing:-.01em}
h2{font-size:17px;margin:0 0 12px;font-weight:650}
h3{font-size:14px;margin:20px 0 8px;color:var(--muted);font-weight:600;text-transform:uppercase;
letter-spacing:.04em}
code,.id,.code,.path{font-family:ui-monospace,"SFMono-Regular",Menlo,"DejaVu Sans Mono",monospace;
font-size:12.5px}
.path{font-size:14px;word-break:break-all;margin-bottom:2px}
.muted{color:var(--muted)}
.badge{display:inline-block;vertical-align:middle;font-size:12px;font-weight:600;padding:2px 8px;
border-radius:10px;background:#e5dbff;color:#5f3dc4;margin-left:6px}
.verdict{margin:0;padding:8px 14px;border-radius:8px;font-weight:600}
.verdict.good{background:#ebfbee;color:#2b8a3e}
.verdict.bad{background:#fff5f5;color:#c92a2a}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin-bottom:18px}
@media (max-width:760px){.cards{grid-template-columns:repeat(2,1fr)}}
.card{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:12px 14px;
border-top:4px solid var(--line)}
.card.good{border-top-color:var(--good)}.card.bad{border-top-color:var(--bad)}
.card.warn{border-top-color:var(--warn)}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.card .value{font-size:26px;font-weight:650;font-variant-numeric:tabular-nums;margin-top:2px}
.card .sub{color:var(--muted);font-size:12px}
.panel{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:18px 20px;
margin-bottom:18px}
.chart{display:block;width:100%;height:auto}
.status-bar{height:36px;border-radius:6px;overflow:hidden}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:6px 20px;padding:0;margin:10px 0 0}
.swatch{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:6px;
vertical-align:-1px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;border-bottom:1px solid var(--line);
white-space:nowrap}
tbody tr:hover{background:#f6f8fa}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.msg{color:#424a53;max-width:420px;overflow-wrap:anywhere}
td.id,td.code{white-space:nowrap}
td.msg .trace{font-family:ui-monospace,"SFMono-Regular",Menlo,"DejaVu Sans Mono",monospace;
font-size:11px;color:#8c959f;margin-top:2px;white-space:nowrap}
.rows td.msg{min-width:240px}
.barcell{width:22%;min-width:120px;vertical-align:middle}
.hbar{display:block;height:10px;border-radius:5px;min-width:2px}
.stack{display:flex;height:10px;border-radius:5px;overflow:hidden;background:#eaeef2}
.stack span{display:block;height:100%}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
color:var(--c);background:color-mix(in srgb,var(--c) 14%,white);white-space:nowrap}
.figure{margin:6px 0 4px}
.grid{stroke:#eaeef2;stroke-width:1}
.axis{stroke:#8c959f;stroke-width:1}.tick-mark{stroke:#8c959f}
.tick{font-size:11px;fill:#656d76;font-variant-numeric:tabular-nums}
.axis-label{font-size:11px;fill:#656d76}
.series{fill:none;stroke-width:2.2;stroke-linejoin:round}
.series.others{stroke-dasharray:6 4}
.limit{fill:none;stroke-width:1.5;stroke-dasharray:3 3;opacity:.85}
.bar{fill:#4e79a7}
.series-legend{margin-top:8px;width:auto;min-width:60%}
.line-swatch{display:inline-block;width:26px;border-top:3px solid var(--c);vertical-align:middle}
.line-swatch.dashed{border-top-style:dashed}
.line-swatch.limit{border-top:2px dotted var(--c)}
.scroll{overflow-x:auto}
.rows td{font-size:13px}
.count{font-size:13px;font-weight:600;color:#c92a2a;background:#fff5f5;border-radius:10px;
padding:1px 8px;margin-left:6px;vertical-align:2px}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:24px}
@media print{body{background:#fff}.panel,.card{break-inside:avoid}}
"""

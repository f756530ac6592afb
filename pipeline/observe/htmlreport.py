"""The report as one HTML page: ``pipeline report RESULTS --format html -o report.html``.

A page people would rather look at than read, which is also a file they can mail, attach to
a ticket or open on a machine with no network. So everything is inline: the CSS, and the
charts as SVG drawn in Python. No script runs and nothing is fetched.

The page is built from aggregations (polars expressions), never from one element per row:
the time axis is cut into at most about ``TARGET_BUCKETS`` buckets, the locations into the
busiest ``TOP_SERIES`` plus "all others" (both in ``htmlfigures``), and the problem table
stops at ``MAX_LISTED_ROWS``. A run of a million rows over a thousand locations gives a page
of the same size as a run of a thousand.

Every string that comes from the data (IDs, messages, trace ids, the file's own path) is
untrusted: it came from a spreadsheet or from an API answer. Each one passes through
``htmlcharts.esc`` before it reaches the page.

The figures (what the page shows) come from ``htmlfigures``, the drawing (colours, SVG
charts, CSS) from ``htmlcharts``; this module lays out the page and its tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl

from pipeline.core.errors import plural
from pipeline.core.outcomes import Code, Status
from pipeline.observe.htmlcharts import (
    CSS,
    HEADROOM,
    LIMIT_COLOUR,
    OTHER_COLOUR,
    OTHERS_COLOUR,
    SERIES_COLOURS,
    STATUS_COLOURS,
    esc,
    number,
    percent,
    status_bar,
    status_pill,
    throughput_chart,
    timeline_chart,
)
from pipeline.observe.htmlfigures import (
    LABELS,
    NO_ID_YET,
    PROBLEM_STATUSES,
    duration,
    error_codes,
    ideal_seconds,
    limit_of,
    needs_attention,
    problem_rows,
    statuses_shown,
    timeline,
)
from pipeline.observe.report import STATUS_ORDER, Report, build_report
from pipeline.observe.run_figures import RunInfo

MAX_LISTED_ROWS = 200  # rows in the problem table
MAX_MESSAGE_CHARS = 160  # of an error message in a table cell (the whole one is its tooltip)
MAX_ID_CHARS = 28  # of an ID in a table cell: HighLevel's are 20; an invalid one may be longer


# -- tables -------------------------------------------------------------------------------


def _message_cell(message: object, trace_id: object = None) -> str:
    """A message, cut to ``MAX_MESSAGE_CHARS`` (the whole one is its tooltip), with the
    trace id HighLevel's support asks for under it."""
    text = "" if message is None else str(message)
    trace = "" if trace_id is None else f'<div class="trace">trace {esc(trace_id)}</div>'
    if len(text) <= MAX_MESSAGE_CHARS:
        return f'<td class="msg">{esc(text)}{trace}</td>'
    return f'<td class="msg" title="{esc(text)}">{esc(text[:MAX_MESSAGE_CHARS])}…{trace}</td>'


def _id_cell(value: object) -> str:
    """An ID, whole unless it is too long to be one (an invalid row's cell can hold
    anything): then cut, with the whole value as its tooltip."""
    text = "" if value is None else str(value)
    if len(text) <= MAX_ID_CHARS:
        return f'<td class="id">{esc(text)}</td>'
    return f'<td class="id" title="{esc(text)}">{esc(text[: MAX_ID_CHARS - 1])}…</td>'


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
    head = "".join(f'<th class="{css} col-{name}">{label}</th>' for name, label, css in columns)
    extra: list[str] = [c for c in ("trace_id", "error_code") if c in rows.columns]
    body = []
    shown = list(dict.fromkeys([c[0] for c in columns] + extra))
    for row in rows.select(shown).iter_rows(named=True):
        cells = []
        attention = row.get("error_code") == NO_ID_YET
        for name, _, css in columns:
            value = row[name]
            if name == "status":
                cells.append(f"<td>{status_pill(value, attention)}</td>")
            elif name == "error_message":
                cells.append(_message_cell(value, row.get("trace_id")))
            elif css == "id":
                cells.append(_id_cell(value))
            else:
                cells.append(f'<td class="{css}">{"" if value is None else esc(value)}</td>')
        body.append(('<tr class="attention">' if attention else "<tr>") + "".join(cells) + "</tr>")
    note = ""
    if total > rows.height:
        note = (
            f'<p class="muted">Showing the first {rows.height:,} of {total:,} rows. '
            f"All of them, as CSV: <code>{esc(more_hint)}</code></p>"
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


def _done_cards(report: Report, dry_run: bool) -> list[str]:
    """The rows no one has to look at, as separate figures: created, already there, and
    repeats of a row above in the file. Not one "succeeded" sum: a run that created nothing
    says so. Rows that exist without their id yet are a card of their own: not done."""
    by, codes, rows = report.by_status, report.by_error_code, report.rows
    no_id = codes.get(NO_ID_YET, 0)
    known = codes.get(Code.KNOWN_FROM_EARLIER_RUN.value, 0)
    created = by.get(Status.CREATED.value, 0)
    existed = by.get(Status.EXISTS.value, 0) - no_id
    if dry_run:
        made = "a dry run creates nothing"
    else:
        made = f"{percent(created, rows)} of rows" if created else "nothing was created"
    cards = [
        _card("created", f"{created:,}", made, "good" if created else ""),
        _card(
            "already existed",
            f"{existed:,}",
            f"{known:,} known from earlier runs" if known else "had a conversation already",
        ),
        _card(
            "duplicates in file",
            f"{by.get(Status.DUPLICATE.value, 0):,}",
            "repeat a row above: not sent",
        ),
    ]
    if no_id:
        sub = "exist, id not found yet: a retry looks them up"
        cards.append(_card("id not found yet", f"{no_id:,}", sub, "attention"))
    return cards


def _verdict(report: Report, dry_run: bool) -> str:
    by, rows = report.by_status, report.rows
    if report.problem_rows:
        no_id = ", or an id not found yet" if report.by_error_code.get(NO_ID_YET) else ""
        return (
            f'<p class="verdict bad">{report.problem_rows:,} rows need attention '
            f"(failed, invalid, or skipped{no_id}).</p>"
        )
    if not rows or dry_run:
        return ""
    created = by.get(Status.CREATED.value, 0)
    if created == rows:
        return '<p class="verdict good">Every row was created.</p>'
    existed = by.get(Status.EXISTS.value, 0)
    duplicates = by.get(Status.DUPLICATE.value, 0)
    return (
        f'<p class="verdict {"good" if created else "neutral"}">No row needs attention: '
        f"{created:,} created, {existed:,} already existed, {duplicates:,} duplicates in "
        "the file.</p>"
    )


def _header(report: Report, title: str, dry_run: bool) -> str:
    by = report.by_status
    rows = report.rows
    run = report.run
    badge = '<span class="badge">dry run</span>' if dry_run else ""
    started = ""
    if run is not None:
        started = f"run started {esc(run.started_at.replace('T', ' ')[:19])} UTC · "
    cards = [
        _card("rows", f"{rows:,}", plural(report.locations, "location", grouped=True)),
        *_done_cards(report, dry_run),
    ]
    for status in PROBLEM_STATUSES:
        count = by.get(status, 0)
        sub = percent(count, rows) + " of rows"
        if status == Status.SKIPPED.value and dry_run:
            sub = "planned, not sent (dry run)"
        tone = "bad" if count and not (dry_run and status == Status.SKIPPED.value) else ""
        cards.append(_card(status, f"{count:,}", sub, tone))
    if run is not None:
        cards.append(_card("duration", duration(run.elapsed_s), plural(run.workers, "worker")))
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
    return (
        f'<header><div class="title"><h1>Results report {badge}</h1>'
        f'<div class="path">{esc(title)}</div>'
        f'<div class="muted">{started}rate {esc(run.rate if run else "unknown")}</div></div>'
        f"{_verdict(report, dry_run)}</header>"
        f'<section class="cards">{"".join(cards)}</section>'
    )


def _next_steps(advice: Sequence[str]) -> str:
    """What to do next, as the terminal's summary says it (a stopped run: a rejected token,
    a spent quota...): lines computed by the caller, which knows how the run was made."""
    if not advice:
        return ""
    items = "".join(f"<li>{esc(line)}</li>" for line in advice)
    return (
        f'<section class="panel next" id="next"><h2>What to do next</h2><ul>{items}</ul></section>'
    )


def _outcomes(report: Report, frame: pl.DataFrame) -> str:
    rows = report.rows
    statuses = statuses_shown(report.by_status, report.by_error_code)
    legend = "".join(
        f'<li><span class="swatch" style="background:{STATUS_COLOURS.get(s, OTHER_COLOUR)}">'
        f'</span>{esc(LABELS.get(s, s))} <b>{n:,}</b> <span class="muted">'
        f"{percent(n, rows)}</span></li>"
        for s, n in statuses.items()
    )
    codes = error_codes(frame)
    if codes.height:
        biggest = int(codes["rows"].max())  # type: ignore[arg-type]
        body = "".join(
            f'<tr><td class="code">{esc(code)}</td>'
            f"<td>{status_pill(status, code == NO_ID_YET)}</td>"
            f'<td class="num">{n:,}</td><td class="barcell"><span class="hbar" '
            f'style="width:{100 * n / biggest:.1f}%;background:'
            f"{STATUS_COLOURS.get(NO_ID_YET if code == NO_ID_YET else str(status), OTHER_COLOUR)}"
            f'"></span></td>{_message_cell(example)}</tr>'
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
        f'{status_bar(statuses, rows)}<ul class="legend">{legend}</ul>'
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
            f'<td class="{"" if others else "id"}">{esc(series.name)}</td>'
            f'<td class="num">{series.rows:,}'
            + (f' <span class="muted">({number(mean)} each)</span>' if others else "")
            + f'</td><td class="num">{duration(series.last_s)}</td>'
            f'<td class="num">{duration(ideal)}</td></tr>'
        )
    top = max(s.cumulative[-1] for s in line.series)
    above = " (above the chart: no location had a full burst of rows)"
    legend_rows.append(
        f'<tr><td><span class="line-swatch limit" style="--c:{LIMIT_COLOUR}"></span></td>'
        f'<td colspan="4">the limit per location: {esc(limit.label)}'
        f"{above if limit.max_requests >= top * HEADROOM else ''}</td></tr>"
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
        f"({shown}), in buckets of {duration(line.bucket_s)}. A line that follows the "
        "staircase ran at the limit; one below it was held back (429s, retries, or the "
        "machine).</p>"
        f'<div class="figure">{timeline_chart(line, limit)}</div>'
        '<table class="series-legend"><thead><tr><th></th><th>location</th>'
        '<th class="num">rows</th><th class="num">last answer at</th>'
        '<th class="num">at the limit</th></tr></thead>'
        f"<tbody>{''.join(legend_rows)}</tbody></table>"
        f"<h3>Throughput</h3>"
        f'<div class="figure">{throughput_chart(line)}</div></section>'
    )


def _locations(report: Report) -> str:
    if not report.by_location:
        return ""
    statuses = [s for s in STATUS_ORDER if s in report.by_status]
    daily = report.run.daily_remaining if report.run is not None else {}
    head = "".join(f'<th class="num">{esc(s)}</th>' for s in statuses)
    body = []
    for row in report.by_location:
        total = int(row["rows"]) or 1
        segments = "".join(
            f'<span style="width:{100 * int(row[s]) / total:.2f}%;'
            f'background:{STATUS_COLOURS.get(s, OTHER_COLOUR)}" title="{esc(s)}: {row[s]:,}">'
            "</span>"
            for s in statuses
            if row[s]
        )
        left = daily.get(str(row["location_id"]))
        body.append(
            f'<tr><td class="id">{esc(row["location_id"])}</td>'
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
        if not rows.filter(needs_attention()).is_empty():
            label += f",{NO_ID_YET}"
        empty = "No problem rows: nothing failed, was invalid, or was skipped."
    else:
        rows, label = listed, listed_label or "all"
        heading, empty = f"Rows: {label}", "No row has these statuses."
    if rows.height == 0:
        return (
            f'<section class="panel" id="rows"><h2>{esc(heading)}</h2>'
            f'<p class="verdict good">{esc(empty)}</p></section>'
        )
    hint = f"pipeline report {title} --rows {label} --format csv -o problems.csv"
    return (
        f'<section class="panel" id="rows"><h2>{esc(heading)} '
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
    advice: Sequence[str] = (),
) -> str:
    """The whole page. ``listed`` (``--rows``) replaces the problem rows in the table at the
    end; everything above it always describes the whole file. ``advice``: what to do next,
    in lines, as the caller (which knows how runs are made) words it."""
    report = build_report(frame, run)
    # A file without run metadata still tells a dry run by its planned rows' code.
    dry_run = run.dry_run if run is not None else bool(report.by_error_code.get("dry_run"))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Results report: {esc(title)}</title><style>{CSS}</style></head><body>"
        '<main id="report">'
        + _header(report, title, dry_run)
        + _next_steps(advice)
        + _outcomes(report, frame)
        + _over_time(frame, run)
        + _locations(report)
        + _listing(frame, title, listed, listed_label)
        + f"<footer>Written by <code>pipeline report</code> on {generated}. One self-contained "
        "file: no scripts, nothing fetched.</footer></main></body></html>\n"
    )

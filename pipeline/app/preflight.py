"""``pipeline check``: what a run of this input would meet at HighLevel, without creating.

A big migration fails in the dullest ways: a token pasted wrong, a location the token may
not use, a Private Integration Token made without ``conversations.readonly`` (creates
work, "already exists" cannot be resolved), a daily quota half spent by another job. The
check finds each of them before the first create, at the cost of one search request per
location:

- the input is read and validated exactly as a run reads it (``run.load_plan``), and the
  rows a run would send (neither invalid nor duplicate) are counted per location;
- each location gets one ``ConversationsClient.probe`` (``GET /conversations/search`` with
  ``limit=1`` and the location's token), which says whether the token is accepted, may use
  the location and may search, and carries the location's live rate headers;
- a token's first request goes alone, as in a run: if the API rejects the token (401
  ``unauthorized``), its other locations are reported rejected without a request of their
  own, so a wrong token costs one request however many locations it serves;
- the very first request is tried again while no connection can be made, up to the run's
  own bound (``guards.MAX_CONNECT_FAILURES``, three tries); when none can, the check stops
  at once (the API is unreachable: a wrong ``--base-url``).

Per location it estimates the sending time from the limit the API announces and the user's
``--rate`` (both hold at once) and the days the daily quota stretches it over
(``planning.location_estimate``, the arithmetic a dry run's estimate uses too).

The requests are ``probing``'s, the verdicts ``verdicts``'; this module reads the input,
puts them together and renders the report.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import polars as pl
import structlog

from pipeline.app.job import Job
from pipeline.app.probing import probe_all
from pipeline.app.verdicts import Access, CheckReport, judge
from pipeline.auth.tokens import Tokens
from pipeline.core.errors import plural
from pipeline.core.outcomes import Status
from pipeline.inputs.planning import format_duration, to_send

log = structlog.get_logger("pipeline.app.preflight")

# Sendable locations shown in the table besides every location with a problem or warning.
TABLE_OK_LOCATIONS = 15

CheckFormat = Literal["table", "json"]


# -- the check ------------------------------------------------------------------------------


def plan_rows(job: Job) -> tuple[dict[str, int], pl.DataFrame]:
    """Read and validate the input as a run does; the row counts by fate, and the rows to
    send per location (``location_id``, ``rows``; most rows first).

    The working file lives in a temporary folder (a check has no output to put it beside)
    and is gone when this returns."""
    # pipeline.app.run imports the whole sending machinery; a check needs only its reading.
    from pipeline.app.run import load_plan

    with tempfile.TemporaryDirectory(prefix="pipeline-check-") as stage:
        planned = load_plan(job, Path(stage))
        by_status, per_location = pl.collect_all(
            [
                planned.group_by("status").len(),
                to_send(planned)
                .group_by("location_id")
                .agg(pl.len().alias("rows"))
                .sort(["rows", "location_id"], descending=[True, False]),
            ],
            engine="streaming",
        )
    counts = dict(zip(by_status["status"].to_list(), by_status["len"].to_list(), strict=True))
    rows = {
        "total": sum(counts.values()),
        "to_send": counts.get(None, 0),
        "invalid": counts.get(Status.INVALID.value, 0),
        "duplicate": counts.get(Status.DUPLICATE.value, 0),
    }
    given = job.config.location_id
    if given is not None and given.strip() not in per_location["location_id"].to_list():
        # The location named on the command line is checked even with no row to send.
        extra = pl.DataFrame(
            {"location_id": [given.strip()], "rows": [0]}, schema=per_location.schema
        )
        per_location = pl.concat([per_location, extra])
    return rows, per_location


def run_check(job: Job, tokens: Tokens) -> CheckReport:
    """The whole check: read the input, probe every location once, judge each."""
    rows, per_location = plan_rows(job)
    planned: dict[str, int] = dict(
        zip(per_location["location_id"].to_list(), per_location["rows"].to_list(), strict=True)
    )
    no_token = {loc for loc in planned if not tokens.serves(loc)}
    groups: dict[int, list[str]] = {}
    for location in planned:  # most rows first: the biggest location answers for its token
        if location not in no_token:
            groups.setdefault(tokens.key(location), []).append(location)
    probes = asyncio.run(probe_all(job, tokens, list(groups.values())))
    if probes.unreachable is not None:
        log.debug("API unreachable", cause=probes.unreachable.message)
    checks = []
    for location, count in planned.items():
        answer = probes.answers.get(location)
        announced_daily = answer.rate.daily_limit if answer is not None else None
        not_probed: Literal["no_token", "rejected", "unreachable"] | None = None
        note = None
        if location in no_token:
            not_probed = "no_token"
            note = tokens.no_token_message if tokens.oauth is not None else None
        elif location in probes.rejected:
            not_probed = "rejected"
            note = f"401 on {probes.rejected[location]}, which has the same token; not asked"
        elif probes.unreachable is not None:
            not_probed, note = "unreachable", probes.unreachable.message
        checks.append(
            judge(
                location,
                count,
                answer,
                not_probed=not_probed,
                ceiling=job.rate,
                # The API's X-RateLimit-Limit-Daily; without an answer, the setting.
                daily_limit=announced_daily or job.config.daily_quota,
                note=note,
                latency_s=probes.latency_s.get(location),
            )
        )
    for check in checks:
        log.debug(
            "location checked",
            location_id=check.location_id,
            token_state=check.token,
            access=check.access,
            search=check.search,
            http_status=check.http_status,
            trace_id=check.trace_id,
        )
    cause = None
    if probes.unreachable is not None:
        cause = probes.unreachable.message or "no connection could be made"
    return CheckReport(str(job.source), job.config.base_url, rows, checks, cause)


# -- rendering ------------------------------------------------------------------------------


def render(report: CheckReport, fmt: CheckFormat = "table") -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2)
    return _table(report)


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def _time(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def _grouped(notes: Iterable[tuple[str, str | None]], named: int = 3) -> list[str]:
    """One line per distinct text, naming its first locations: one token's fault over
    fifty locations is one line, not fifty."""
    by_text: dict[str, list[str]] = {}
    for location, text in notes:
        if text is not None:
            by_text.setdefault(text, []).append(location)
    lines = []
    for text, locations in by_text.items():
        names = ", ".join(locations[:named])
        more = f" and {len(locations) - named} more" if len(locations) > named else ""
        lines.append(f"  {names}{more}: {text}")
    return lines


def _table(report: CheckReport) -> str:
    rows = report.rows
    lines = [f"{plural(rows['total'], 'row')} -> check against {report.base_url}"]
    lines += [
        f"  {key.replace('_', ' '):<10} {rows[key]:>9}"
        for key in ("to_send", "invalid", "duplicate")
        if rows[key] or key == "to_send"
    ]
    flagged = {
        loc.location_id
        for loc in report.locations
        if loc.problem() is not None or loc.warning() is not None
    }
    fine = [loc.location_id for loc in report.locations if loc.location_id not in flagged]
    shown = flagged | set(fine[:TABLE_OK_LOCATIONS])
    hidden = len(fine) - min(len(fine), TABLE_OK_LOCATIONS)
    lines.append(f"locations: {len(report.locations)}")
    if report.locations:
        lines.append(
            f"  {'location_id':<24} {'rows':>7}  {'token':<9} {'access':<12} {'search':<13} "
            f"{'limit':>8} {'remaining':>9} {'daily left':>10} {'time':>9} {'days':>4}  trace_id"
        )
    for loc in report.locations:
        if loc.location_id not in shown:
            continue
        lines.append(
            f"  {loc.location_id[:24]:<24} {loc.rows:>7}  {loc.token:<9} {loc.access:<12} "
            f"{loc.search:<13} {loc.limit_label:>8} {_cell(loc.rate_remaining):>9} "
            f"{_cell(loc.daily_remaining):>10} {_time(loc.estimated_s):>9} "
            f"{_cell(loc.days):>4}  {loc.trace_id or '-'}"
        )
    if hidden:
        lines.append(f"  ... and {plural(hidden, 'more location')}, all ready")
    problems = _grouped(
        (loc.location_id, loc.problem())
        for loc in report.locations
        if loc.access is not Access.UNREACHABLE
    )
    if report.unreachable is not None:
        problems.insert(0, f"  cannot reach the API: {report.unreachable}; nothing was checked")
    if problems:
        lines.append("problems:")
        lines += problems
    warnings = _grouped((loc.location_id, loc.warning()) for loc in report.locations)
    if warnings:
        lines.append("warnings:")
        lines += warnings
    not_sendable = len(report.locations) - report.sendable
    estimated, days = report.estimated_s, report.days
    lines.append(
        f"ready: {report.sendable} of {plural(len(report.locations), 'location')}"
        + (f" ({not_sendable} not sendable)" if not_sendable else "")
        + (
            "; nothing can be sent"
            if estimated is None or days is None
            else f"; estimated sending time {format_duration(estimated)} over {plural(days, 'day')}"
        )
    )
    return "\n".join(lines)

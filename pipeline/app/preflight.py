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
- the very first request is tried up to three times if no connection can be made; when
  none can, the check stops at once (the API is unreachable: a wrong ``--base-url``).

Per location it estimates the sending time from the limit the API announces and the user's
``--rate`` (both hold at once) and the days the daily quota stretches it over
(``location_estimate``, pure arithmetic).
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import polars as pl
import structlog

from pipeline.app.job import Job
from pipeline.auth.signing import signer_for
from pipeline.auth.tokens import Tokens
from pipeline.core import constants
from pipeline.core.outcomes import RETRYABLE, Code, Status
from pipeline.core.settings import Rate
from pipeline.highlevel.client import Answer, ConversationsClient
from pipeline.inputs.planning import (
    ASSUMED_LATENCY_S,
    CLIENT_PACE,
    format_duration,
    send_seconds,
    to_send,
)

log = structlog.get_logger("pipeline.app.preflight")

# Probes in flight at once: enough to check hundreds of locations in seconds, few enough
# that the check never looks like a burst to anyone watching the API.
PROBE_CONCURRENCY = 16
# Waits before the second and third try of the very first request when no connection could
# be made: a server that is starting gets a moment, a wrong URL costs under two seconds.
CONNECT_RETRY_WAITS_S = (0.5, 1.0)
# Sendable locations shown in the table besides every location with a problem or warning.
TABLE_OK_LOCATIONS = 15

CheckFormat = Literal["table", "json"]


class TokenState(StrEnum):
    ACCEPTED = "accepted"  # an answer below 500 other than 401 unauthorized
    REJECTED = "rejected"  # 401 unauthorized, here or on another location of the token
    NO_TOKEN = "no_token"  # noqa: S105 - the tokens file lists none for the location
    UNKNOWN = "unknown"  # no answer that decides (5xx, timeout, API unreachable)
    # No token could be had (OAuth: the app is not installed there, or the credential's
    # refresh was refused); no request was made.
    UNAVAILABLE = "unavailable"


class Access(StrEnum):
    OK = "ok"
    FORBIDDEN = "forbidden"  # 403: the token may not use this location
    OTHER = "other"  # any other answer; the status and the API's message say which
    NOT_CHECKED = "not checked"  # no answer about the location itself
    UNREACHABLE = "unreachable"


class Search(StrEnum):
    OK = "ok"
    MISSING_SCOPE = "missing scope"  # 401 naming the scope: no conversations.readonly
    NOT_CHECKED = "not checked"


# -- estimate -------------------------------------------------------------------------------


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
    ``latency_s`` the round trip the check measured."""
    limits = [announced or (constants.DEFAULT_RATE_MAX, constants.DEFAULT_RATE_INTERVAL_S)]
    if ceiling is not None:
        limits.append(ceiling.as_tuple())
    return Estimate(
        send_seconds(rows, limits, latency_s), days_needed(rows, daily_remaining, daily_limit)
    )


# -- probing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probes:
    """What the requests found: an answer per location probed, the locations left out
    because their token was rejected on another one (with that one), and the connection
    failure that stopped everything, if one did."""

    answers: dict[str, Answer] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    unreachable: Answer | None = None
    latency_s: dict[str, float] = field(default_factory=dict)  # each answer's round trip


async def probe_locations(
    probe: Callable[[str], Awaitable[Answer]],
    groups: Sequence[Sequence[str]],
    *,
    concurrency: int = PROBE_CONCURRENCY,
    connect_waits: Sequence[float] = CONNECT_RETRY_WAITS_S,
) -> Probes:
    """Probe every location once; ``groups`` holds the locations of each token.

    The very first request goes alone and is tried again (``connect_waits``) while no
    connection can be made at all; if it never can, nothing else is sent. Then each
    token's first request goes alone: only an answer below 500 decides (a 5xx or a timeout
    says nothing about the token, so the token's next location goes alone in turn). A
    rejected token's remaining locations get no request; an accepted one's go together,
    ``concurrency`` requests at most in flight across all tokens.
    """
    tokens = [list(g) for g in groups if g]
    if not tokens:
        return Probes()
    first_location = tokens[0][0]
    first = await probe(first_location)
    for wait in connect_waits:
        if not first.connect_failed:
            break
        log.debug("no connection; trying again", wait_s=wait, cause=first.message)
        await asyncio.sleep(wait)
        first = await probe(first_location)
    if first.connect_failed:
        return Probes(unreachable=first)

    answers: dict[str, Answer] = {first_location: first}
    rejected: dict[str, str] = {}
    slots = asyncio.Semaphore(concurrency)

    async def one(location: str) -> Answer:
        async with slots:
            answer = await probe(location)
        answers[location] = answer
        return answer

    async def token(locations: list[str], last: Answer | None) -> None:
        asked, rest = (locations[0], locations[1:]) if last is not None else ("", locations)
        while (last is None or not last.decisive) and rest:
            asked, rest = rest[0], rest[1:]
            last = await one(asked)
        if last is not None and last.code is Code.UNAUTHORIZED:
            rejected.update(dict.fromkeys(rest, asked))
            return
        await asyncio.gather(*(one(location) for location in rest))

    await asyncio.gather(token(tokens[0], first), *(token(g, None) for g in tokens[1:]))
    return Probes(answers, rejected)


# -- verdicts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocationCheck:
    """One location's verdict; ``rate_*`` and ``daily_remaining`` are the live headers of
    its answer (None where absent), ``daily_limit`` the quota the days are counted with.
    ``estimated_s`` and ``days`` are computed for every location, sendable or not (with
    HighLevel's published limit where no answer announced one): they say what its rows
    need once whatever stops them is fixed."""

    location_id: str
    rows: int
    token: TokenState
    access: Access
    search: Search
    http_status: int | None
    message: str | None
    trace_id: str | None
    rate_max: int | None
    rate_interval_ms: int | None
    rate_remaining: int | None
    daily_remaining: int | None
    daily_limit: int
    estimated_s: float
    days: int

    @property
    def sendable(self) -> bool:
        """A run would send this location's rows today. A missing search scope leaves the
        access unverified (the API refused the search before looking at the location); it
        is a warning, not a stop, because creating does not need that scope."""
        return (
            self.token is TokenState.ACCEPTED
            and self.access in (Access.OK, Access.NOT_CHECKED)
            and self.daily_remaining != 0
        )

    @property
    def limit_label(self) -> str:
        if self.rate_max is None or self.rate_interval_ms is None:
            return "-"
        return f"{self.rate_max}/{self.rate_interval_ms / 1000:g}s"

    def problem(self) -> str | None:
        """Why a run could not send this location, in a line; None when it could."""
        answered = f" (HTTP {self.http_status})" if self.http_status is not None else ""
        detail = f": {self.message}" if self.message else ""
        if self.token is TokenState.NO_TOKEN:
            return "no token for this location in the tokens file"
        if self.token is TokenState.REJECTED:
            return f"token rejected{answered}{detail}"
        if self.token is TokenState.UNAVAILABLE:
            return f"no token can be had{detail}"
        if self.access is Access.UNREACHABLE:
            return f"API unreachable{detail}"
        if self.access is Access.FORBIDDEN:
            return f"the token may not use this location{answered}{detail}"
        if self.access is Access.OTHER:
            return f"unexpected answer{answered}{detail}"
        if self.daily_remaining == 0:
            return "daily quota spent (X-RateLimit-Daily-Remaining: 0); the rows wait for tomorrow"
        return None

    def warning(self) -> str | None:
        if self.search is Search.MISSING_SCOPE:
            return (
                f"the token lacks {constants.SCOPE_READ}: it can create, but a contact that "
                "already has a conversation ends `exists` without its id; access to the "
                "location not verified"
            )
        return None


def judge(
    location_id: str,
    rows: int,
    answer: Answer | None,
    *,
    not_probed: Literal["no_token", "rejected", "unreachable"] | None,
    ceiling: Rate | None,
    daily_limit: int,
    note: str | None = None,
    latency_s: float | None = None,
) -> LocationCheck:
    """Turn a location's probe answer (or the reason it had none, with ``note`` saying
    more) into its verdict."""
    token: TokenState
    access: Access
    search = Search.NOT_CHECKED
    message: str | None = None
    if answer is None:
        message = note
        if not_probed == "no_token":
            token, access = TokenState.NO_TOKEN, Access.NOT_CHECKED
        elif not_probed == "rejected":
            token, access = TokenState.REJECTED, Access.NOT_CHECKED
        else:  # unreachable (or, defensively, no answer for no known reason)
            token, access = TokenState.UNKNOWN, Access.UNREACHABLE
    else:
        message = answer.message
        if not answer.sent and answer.code not in RETRYABLE:
            token, access = TokenState.UNAVAILABLE, Access.NOT_CHECKED
        elif answer.code is Code.UNAUTHORIZED:
            token, access = TokenState.REJECTED, Access.NOT_CHECKED
        elif not answer.decisive:  # 5xx, timeout, dropped connection: nothing decided
            token, access = TokenState.UNKNOWN, Access.OTHER
        elif answer.code is Code.MISSING_SCOPE:
            token, access, search = TokenState.ACCEPTED, Access.NOT_CHECKED, Search.MISSING_SCOPE
        elif answer.code is None and answer.status is Status.EXISTS:
            token, access, search = TokenState.ACCEPTED, Access.OK, Search.OK
        elif answer.code is Code.FORBIDDEN:
            token, access = TokenState.ACCEPTED, Access.FORBIDDEN
        else:  # 400, 404, 422, 429, an unreadable 2xx: the API answered, but not "yes"
            token, access = TokenState.ACCEPTED, Access.OTHER
            if answer.code is not None and not message:
                message = answer.code.value
    rate = answer.rate if answer is not None else None
    announced = (
        (rate.max_requests, rate.interval_ms / 1000)
        if rate is not None and rate.max_requests and rate.interval_ms
        else None
    )
    daily_remaining = rate.daily_remaining if rate is not None else None
    estimate = location_estimate(
        rows,
        announced=announced,
        ceiling=ceiling,
        daily_remaining=daily_remaining,
        daily_limit=daily_limit,
        latency_s=ASSUMED_LATENCY_S if latency_s is None else latency_s,
    )
    return LocationCheck(
        location_id=location_id,
        rows=rows,
        token=token,
        access=access,
        search=search,
        http_status=answer.http_status if answer is not None else None,
        message=message,
        trace_id=answer.trace_id if answer is not None else None,
        rate_max=rate.max_requests if rate is not None else None,
        rate_interval_ms=rate.interval_ms if rate is not None else None,
        rate_remaining=rate.remaining if rate is not None else None,
        daily_remaining=daily_remaining,
        daily_limit=daily_limit,
        estimated_s=estimate.seconds,
        days=estimate.days,
    )


@dataclass(frozen=True, slots=True)
class CheckReport:
    source: str
    base_url: str
    rows: dict[str, int]  # total, to_send, invalid, duplicate
    locations: list[LocationCheck]
    unreachable: str | None = None  # the cause, when no connection could be made at all

    @property
    def sendable(self) -> int:
        return sum(1 for location in self.locations if location.sendable)

    @property
    def ready(self) -> bool:
        """Exit code 0: every location can be sent (warnings allowed)."""
        return self.unreachable is None and self.sendable == len(self.locations)

    @property
    def estimated_s(self) -> float:
        """The run's sending time: locations go in parallel, so the longest one, but no
        faster than this tool's pace (``planning.CLIENT_PACE``) carries all their rows."""
        longest = max((location.estimated_s for location in self.locations), default=0.0)
        return max(longest, sum(location.rows for location in self.locations) / CLIENT_PACE)

    @property
    def days(self) -> int:
        return max((location.days for location in self.locations), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "base_url": self.base_url,
            "rows": self.rows,
            "locations": [
                {**asdict(location), "sendable": location.sendable} for location in self.locations
            ],
            "summary": {
                "locations": len(self.locations),
                "sendable": self.sendable,
                "not_sendable": len(self.locations) - self.sendable,
                "warnings": sum(1 for loc in self.locations if loc.warning() is not None),
                "rows_to_send": sum(location.rows for location in self.locations),
                "estimated_s": self.estimated_s,
                "estimated": format_duration(self.estimated_s),
                "days": self.days,
                "unreachable": self.unreachable,
            },
        }


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
    probes = asyncio.run(_probe(job, tokens, list(groups.values())))
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


async def _probe(job: Job, tokens: Tokens, groups: list[list[str]]) -> Probes:
    if not groups:
        return Probes()
    fixed = job.config.concurrency
    probes_at_once = PROBE_CONCURRENCY if fixed == "auto" else min(PROBE_CONCURRENCY, fixed)
    async with ConversationsClient(
        base_url=job.config.base_url,
        signer=signer_for(
            tokens,
            base_url=job.config.base_url,
            api_version=job.config.api_version,
            timeout=job.config.timeout,
        ),
        api_version=job.config.api_version,
        timeout=job.config.timeout,
        concurrency=probes_at_once,
        http_stack=job.config.http_stack,
    ) as client:
        loop = asyncio.get_running_loop()
        latency: dict[str, float] = {}

        async def timed(location: str) -> Answer:
            sent = loop.time()
            answer = await client.probe(location)
            latency[location] = loop.time() - sent
            return answer

        probes = await probe_locations(timed, groups, concurrency=probes_at_once)
        return replace(probes, latency_s=latency)


# -- rendering ------------------------------------------------------------------------------


def render(report: CheckReport, fmt: CheckFormat = "table") -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2)
    return _table(report)


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


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
    lines = [f"{rows['total']} rows -> check against {report.base_url}"]
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
            f"{_cell(loc.daily_remaining):>10} {format_duration(loc.estimated_s):>9} "
            f"{loc.days:>4}  {loc.trace_id or '-'}"
        )
    if hidden:
        lines.append(f"  ... and {hidden} more locations, all ready")
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
    lines.append(
        f"ready: {report.sendable} of {len(report.locations)} locations"
        + (f" ({not_sendable} not sendable)" if not_sendable else "")
        + f"; estimated sending time {format_duration(report.estimated_s)}"
        + f" over {report.days} day{'s' if report.days != 1 else ''}"
    )
    return "\n".join(lines)

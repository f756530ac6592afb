"""``pipeline check``'s verdicts: what a location's probe answer means for a run.

``judge`` turns one location's answer (or the reason it had none) into a ``LocationCheck``:
whether its token is accepted, whether it may use the location and search it, its live
rate headers, and its sending time and days (``planning.location_estimate``, the estimate a
dry run makes too). ``CheckReport`` is the whole check's: every location's verdict, and
whether a run could send them all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any, Literal

from pipeline.core import constants
from pipeline.core.outcomes import RETRYABLE, Code, Status
from pipeline.core.values import Rate
from pipeline.highlevel.answers import Answer
from pipeline.inputs.planning import (
    ASSUMED_LATENCY_S,
    CLIENT_PACE,
    format_duration,
    location_estimate,
    run_seconds,
)
from pipeline.send.quota import is_spent


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


@dataclass(frozen=True, slots=True)
class LocationCheck:
    """One location's verdict; ``rate_*`` and ``daily_remaining`` are the live headers of
    its answer (None where absent), ``daily_limit`` the quota the days are counted with.
    ``estimated_s`` and ``days`` are the sending time of a sendable location (with
    HighLevel's published limit where no answer announced one); None for a location a run
    could not send: it has no sending time until whatever stops it is fixed."""

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
    estimated_s: float | None
    days: int | None

    @property
    def sendable(self) -> bool:
        """A run would send this location's rows today. A missing search scope leaves the
        access unverified (the API refused the search before looking at the location); it
        is a warning, not a stop, because creating does not need that scope."""
        return (
            self.token is TokenState.ACCEPTED
            and self.access in (Access.OK, Access.NOT_CHECKED)
            and not is_spent(self.daily_remaining)
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
        if self.token is TokenState.NO_TOKEN:  # an OAuth run's says what its file lacks
            return self.message or "no token for this location in the tokens file"
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
        if is_spent(self.daily_remaining):
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
    check = LocationCheck(
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
    return check if check.sendable else replace(check, estimated_s=None, days=None)


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
    def estimated_s(self) -> float | None:
        """The run's sending time (``planning.run_seconds``) for the locations it could
        send: they go in parallel, so the longest one, but no faster than this tool's pace
        (``planning.CLIENT_PACE``). None when it could send none."""
        sendable = [loc for loc in self.locations if loc.estimated_s is not None]
        if not sendable:
            return None
        longest = max(loc.estimated_s or 0.0 for loc in sendable)
        return run_seconds(longest, sum(loc.rows for loc in sendable), pace=CLIENT_PACE)

    @property
    def days(self) -> int | None:
        return max((loc.days for loc in self.locations if loc.days is not None), default=None)

    def to_dict(self) -> dict[str, Any]:
        estimated = self.estimated_s
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
                "estimated_s": estimated,
                "estimated": None if estimated is None else format_duration(estimated),
                "days": self.days,
                "unreachable": self.unreachable,
            },
        }

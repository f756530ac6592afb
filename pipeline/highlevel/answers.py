"""What one request came to: ``Answer`` (one HTTP attempt, classified) and ``RateHeaders`` (what
its headers said about the limits).

Plain data, with no I/O import: the decision modules of ``send`` (``retrying``, ``guards``,
``quota``, ``lookups``, ``watchdog``) reason about answers without pulling in an HTTP stack
(``tests/docs/test_layout.py`` holds them to it). ``client`` makes them; its names are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.outcomes import Code, Status, quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class RateHeaders:
    """What the API said about its limits in one answer's headers (None where absent)."""

    remaining: int | None = None
    max_requests: int | None = None
    interval_ms: int | None = None
    daily_remaining: int | None = None
    daily_limit: int | None = None
    retry_after_s: float | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP attempt, classified."""

    status: Status  # created, exists or failed
    code: Code | None
    conversation_id: str | None = None
    http_status: int | None = None
    message: str | None = None
    rate: RateHeaders = RateHeaders()
    trace_id: str | None = None
    # No HTTP answer because no connection could be made (refused, DNS, TLS, connect
    # timeout): the only failure that can mean the whole API is out of reach.
    connect_failed: bool = False
    sent: bool = True  # False: no request went out (no token could be had for it)

    @property
    def decisive(self) -> bool:
        """An HTTP answer below 500: the API itself looked at the request (and its token)."""
        return self.http_status is not None and self.http_status < 500

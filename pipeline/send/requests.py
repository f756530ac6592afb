"""The request layer of the sender: a permit and a slot, one HTTP request, what it cost.

Every request of a run, a create or a search, goes through ``RequestLayer``: ``take`` a
permit of the location's window (unless the dispatcher already holds one) and then a slot of
the global concurrency (``PrioritySlots``: earlier locations first), ``send`` the request,
and give both back when it ends. While the API is silent (``watchdog``), one request at a
time probes it, one a second (``probe_turn``): a dead host is not hammered by every row's
attempts, and the first answer lets every row go again. Between a row's attempts it holds
nothing (``wait_to_retry``); a 429's pause holds the location's window too.

Around each request it keeps the run's figures: requests made, the peak in flight, each
request's latency (``Latencies``), and the ``InFlightLimit`` that sizes the slots to the
latency, shown on the progress bar's ``Gauge``. What the answer says is for the caller's
``observe`` (the limiter, the guards, the quota); this layer only moves and counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from pipeline.core.outcomes import Code
from pipeline.highlevel.answers import Answer
from pipeline.send.inflight import Gauge, InFlightLimit, watch_loop_lag
from pipeline.send.latencies import Latencies
from pipeline.send.limiter import PrioritySlots
from pipeline.send.retrying import Retry
from pipeline.send.rows import Location, Row
from pipeline.send.watchdog import PROBE_EVERY_S, Watchdog
from pipeline.send.window import TOLERANCE_S

log = structlog.get_logger("pipeline.send.requests")

# Failures with no answer at all: while the API is silent, their rows are told in one line.
NO_ANSWER = frozenset({Code.NETWORK_ERROR, Code.TIMEOUT})

Call = Callable[[str, str], Awaitable[Answer]]


class RequestLayer:
    def __init__(
        self,
        concurrency: int | InFlightLimit,
        *,
        watchdog: Watchdog,
        observe: Callable[[Location, Answer, float], None],
        clock: Callable[[], float] = time.monotonic,
        gauge: Gauge | None = None,
    ) -> None:
        """``concurrency``: requests in flight at most, fixed, or an ``InFlightLimit`` that
        sizes it to the latency as answers come in. ``observe(location, answer, sent_at)``:
        what each answer says, for the caller to act on."""
        if isinstance(concurrency, InFlightLimit):
            self._inflight: InFlightLimit | None = concurrency
            self._slots = PrioritySlots(concurrency.limit)
            # A location never needs more tasks started than could ever be in flight at once.
            self.ceiling = concurrency.ceiling
        else:
            self._inflight = None
            self._slots = PrioritySlots(concurrency)
            self.ceiling = concurrency
        self._watchdog = watchdog
        self._observe = observe
        self._clock = clock
        self._gauge = gauge or Gauge()
        self._request_ended = asyncio.Event()  # probes wait on it while the API is silent
        self._next_probe_at = 0.0
        self.requests = 0  # HTTP requests that went out (a connection made): creates, searches
        self.peak_in_flight = 0
        self.latencies = Latencies()  # those requests' times, for the mean, p50 and p99

    @property
    def in_flight(self) -> int:
        """Requests sent and not ended (slots in use)."""
        return self._slots.in_use

    def helpers(self) -> list[Coroutine[Any, Any, None]]:
        """What runs beside the requests: the event loop's lag feeds the in-flight limit."""
        return [] if self._inflight is None else [watch_loop_lag(self._inflight)]

    async def take(self, location: Location, *, holding_permit: bool = False) -> None:
        """A permit of the location (unless already held), then a global slot (only one
        request in flight while the API is silent: ``watchdog``).

        Nothing is held if cancelled on the way.
        """
        if not holding_permit:
            await location.limiter.acquire()
        try:
            if self._watchdog.silent:
                await self._probe_turn()
            await self._slots.acquire(location.priority)
        except asyncio.CancelledError:
            location.limiter.cancel()
            raise

    async def _probe_turn(self) -> None:
        """While the API answers nothing, one request at a time probes it, one every
        ``PROBE_EVERY_S``: a dead host is not hammered by every row's attempts (it was
        5,000 connections for 1,000 rows), and the first answer lets every row go again."""
        while self._watchdog.silent:
            wait_s = self._next_probe_at - self._clock()
            # A wait shorter than the clock can tell would wake still not due, and spin
            # (it did, in virtual time: a timer 1e-17 s ahead fires without time moving).
            if not self._slots.in_use and wait_s <= TOLERANCE_S:
                self._next_probe_at = self._clock() + PROBE_EVERY_S
                return
            self._request_ended.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._request_ended.wait(), None if self._slots.in_use else wait_s
                )

    async def send(self, row: Row, call: Call) -> Answer:
        """One HTTP request; entered holding a permit and a slot (``take``), which it gives
        back."""
        location = row.location
        row.in_request = True
        sent_at = self._clock()
        sent = True
        cohort = self._inflight.on_send(self._slots.in_use) if self._inflight else None
        try:
            answer = await call(location.location_id, row.contact_id)
            # No connection made, no request out: the API counts none, nor does the summary.
            sent = answer.sent and not answer.connect_failed
        finally:
            in_flight = self._slots.in_use
            self.peak_in_flight = max(self.peak_in_flight, in_flight)
            row.in_request = False
            location.limiter.release()
            self._slots.release()
            self.requests += sent
        latency = self._clock() - sent_at
        if sent:
            self.latencies.add(latency)
        self._request_ended.set()
        if answer.http_status is not None:
            self._watchdog.answered()
        elif answer.code in NO_ANSWER:  # its token's refresh, too, may have found no API
            self._watchdog.failed(answer.message or str(answer.code))
        if self._inflight is not None:  # the in-flight limit follows the latency
            failed = answer.http_status is None
            limit = self._inflight
            moves = limit.cuts + limit.rebases
            limit.on_answer(latency, in_flight=in_flight, failed=failed, cohort=cohort)
            self._slots.resize(limit.limit)
            if limit.cuts + limit.rebases != moves:  # rare: a line for whoever tunes it
                log.debug(
                    "in-flight limit moved",
                    limit=limit.limit,
                    cuts=limit.cuts,
                    rebases=limit.rebases,
                    baseline_ms=round(1000 * limit.baseline_s, 1),
                    failed=failed,
                )
        self._gauge.in_flight, self._gauge.limit = in_flight, self._slots.capacity
        row.last = answer
        self._observe(location, answer, sent_at)
        return answer

    async def wait_to_retry(self, row: Row, answer: Answer, retry: Retry) -> None:
        """Hold nothing until the row's next attempt; a pause the API asked for (a 429)
        holds the whole location, and is no silence for the watchdog."""
        if retry.pause_location:
            row.location.limiter.block_for(retry.delay_s)
        log.debug(
            "retrying",
            row_index=row.row_index,
            location_id=row.location.location_id,
            attempt=row.attempts,
            error_code=answer.code,
            http_status=answer.http_status,
            trace_id=answer.trace_id,
            delay_s=round(retry.delay_s, 3),
        )
        due = self._clock() + retry.delay_s
        if retry.pause_location:
            self._watchdog.waiting_until(due)
        self._gauge.retries_due_at = max(self._gauge.retries_due_at, due)
        await asyncio.sleep(retry.delay_s)

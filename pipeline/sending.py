"""Stage 3, send: every planned row through the API, under the limits, with retries.

Shape of the machinery: one dispatcher per location walks that location's rows in input
order; for each it takes a permit from the location's ``WindowLimiter`` and then a slot from
the global concurrency semaphore, and starts the row's task. Taking the location permit
first means a location that is waiting on its own limit holds no global slot, so a slow or
throttled location never stalls the others. A row's task owns its retries: between attempts
it holds nothing, and each new request takes a permit and a slot again.

What the API says steers the run, not just the row:
- every answer's rate headers tighten that location's limiter; a 429 pauses it;
- a spent daily quota stops that location (its rows become ``daily_quota_exhausted``);
- repeated 403s stop that location (``forbidden``); repeated 401s stop the run
  (``unauthorized``): a rejected token never costs thousands of doomed requests;
- "already exists" is followed by a search for the existing id, so a create whose answer
  was lost and then re-sent still ends with the right conversation id.

``stop()`` (a signal, a rejected token) ends the run gracefully: no new row starts, rows
waiting between attempts end at once, requests in flight get a bounded grace period.

Every row of every batch reaches ``sink`` exactly once, as a ``RowOutcome``: rows the run
never got to (it stopped first) as ``skipped`` with ``stop_code`` as the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from pipeline.backoff import Backoff
from pipeline.client import Answer
from pipeline.limiter import PrioritySlots, WindowLimiter
from pipeline.outcomes import RETRYABLE, SKIP_MESSAGES, Code, RowOutcome, Status
from pipeline.settings import Rate

log = structlog.get_logger("pipeline.sending")

# Waits between searches for an existing conversation: the index may lag a few seconds.
SEARCH_WAITS_S = (0.25, 0.5, 1.0, 2.0, 3.0)
MAX_UNAUTHORIZED = 5  # 401s in one run before the token is taken as rejected
MAX_FORBIDDEN = 3  # 403s for one location before the location is given up


class ConversationsAPI(Protocol):
    async def create_conversation(self, location_id: str, contact_id: str) -> Answer: ...

    async def find_conversation(self, location_id: str, contact_id: str) -> Answer: ...

    def token_key(self, location_id: str) -> int: ...


@dataclass(frozen=True, slots=True)
class LocationBatch:
    """The rows of one location, in input order."""

    location_id: str
    rows: Iterable[tuple[int, str]]  # (row_index, contact_id), consumed once


@dataclass(slots=True)
class _Location:
    location_id: str
    limiter: WindowLimiter
    priority: int  # order of first appearance: earlier locations are served first
    stopped_by: Code | None = None  # daily quota or forbidden: send no more rows here
    forbidden: int = 0

    def still_open(self) -> bool:
        return self.stopped_by is None


@dataclass(slots=True)
class _Row:
    location: _Location
    row_index: int
    contact_id: str
    attempts: int = 0
    last: Answer | None = None
    in_request: bool = field(default=False)


class Sender:
    def __init__(
        self,
        client: ConversationsAPI,
        *,
        rate: Rate,
        concurrency: int,
        max_attempts: int,
        max_total_backoff_s: float,
        sink: Callable[[RowOutcome], None],
        backoff: Backoff | None = None,
        grace_s: float = 10.0,
        search_waits_s: Sequence[float] = SEARCH_WAITS_S,
        record_unstarted: bool = True,
    ) -> None:
        """``record_unstarted``: when the run stops, give every row never started an outcome
        too (``skipped`` with the stop's code). A single process can leave them out (the
        results fill unsent rows with that code, and an interrupted run of millions of rows
        does not write millions of records); a worker must not, because workers may stop
        for different reasons."""
        self._client = client
        self._rate = rate
        self._slots = PrioritySlots(concurrency)
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._max_total_backoff_s = max_total_backoff_s
        self._sink = sink
        self._backoff = backoff or Backoff()
        self._grace_s = grace_s
        self._search_waits_s = tuple(search_waits_s)
        self._record_unstarted = record_unstarted
        self._locations: dict[str, _Location] = {}
        self._dispatchers: list[asyncio.Task[None]] = []
        self._rows: dict[asyncio.Task[None], _Row] = {}
        self._unauthorized: dict[int, int] = {}  # 401s per token
        self.stop_code: Code | None = None
        self.requests = 0  # HTTP requests made, creates and searches

    # -- public -------------------------------------------------------------------------

    def location(self, location_id: str) -> _Location:
        found = self._locations.get(location_id)
        if found is None:
            limiter = WindowLimiter(self._rate.max_requests, self._rate.interval_s)
            found = _Location(location_id, limiter, priority=len(self._locations))
            self._locations[location_id] = found
        return found

    async def run(self, batches: Iterable[LocationBatch]) -> None:
        self._dispatchers = [asyncio.create_task(self._dispatch(batch)) for batch in batches]
        await asyncio.gather(*self._dispatchers, return_exceptions=True)
        while self._rows:
            await asyncio.wait(list(self._rows))

    def stop(self, code: Code) -> None:
        """Start no new row; end rows waiting between attempts; give requests in flight a grace."""
        if self.stop_code is not None:
            return
        self.stop_code = code
        log.warning("stopping", reason=code.value, rows_in_flight=len(self._rows))
        for task in self._dispatchers:
            task.cancel()
        for task, row in list(self._rows.items()):
            if not row.in_request:
                task.cancel()
        asyncio.get_running_loop().call_later(self._grace_s, self._cancel_rows)

    def _cancel_rows(self) -> None:
        for task in list(self._rows):
            task.cancel()

    # -- dispatching --------------------------------------------------------------------

    async def _dispatch(self, batch: LocationBatch) -> None:
        """Start the location's rows as fast as its limiter allows.

        Each row's task is started holding a location permit and then queues for a global
        slot itself, so that a whole burst of a location waits in the slot queue at once,
        under its location's priority (``PrioritySlots``). ``pending`` bounds how many tasks
        one location may have started and not finished: more than the burst or the global
        cap could never run anyway.
        """
        location = self.location(batch.location_id)
        pending = asyncio.Semaphore(min(location.limiter.max_requests, self._concurrency))
        rows = iter(batch.rows)
        for row_index, contact_id in rows:
            row = _Row(location, row_index, contact_id)
            if location.stopped_by is None:
                try:
                    await pending.acquire()
                    await location.limiter.acquire()
                except asyncio.CancelledError:  # the run stopped: the rows left are unsent
                    if self._record_unstarted:
                        code = self.stop_code or Code.INTERRUPTED
                        self._finish(row, self._skipped(code))
                        for row_index, contact_id in rows:
                            skipped = _Row(location, row_index, contact_id)
                            self._finish(skipped, self._skipped(code))
                    raise
                if location.still_open():  # nothing decided while we waited for the permit
                    task = asyncio.create_task(self._send_row(row, holding=True))
                    self._rows[task] = row
                    task.add_done_callback(self._rows.pop)
                    task.add_done_callback(lambda _: pending.release())
                    continue
                location.limiter.cancel()
                pending.release()
            self._finish(row, self._skipped(location.stopped_by or Code.INTERRUPTED))

    async def _take(self, location: _Location, *, holding_permit: bool = False) -> None:
        """A permit of the location (unless already held), then a global slot.

        Nothing is held if cancelled on the way.
        """
        if not holding_permit:
            await location.limiter.acquire()
        try:
            await self._slots.acquire(location.priority)
        except asyncio.CancelledError:
            location.limiter.cancel()
            raise

    # -- one row ------------------------------------------------------------------------

    async def _send_row(self, row: _Row, *, holding: bool) -> None:
        """Send one row until it settles, runs out of attempts, or the run stops.

        ``holding``: started with a location permit already taken (by the dispatcher).
        """
        location = row.location
        waited = 0.0
        answer: Answer
        try:
            while True:
                await self._take(location, holding_permit=holding)
                holding = False
                row.attempts += 1
                answer = await self._request(row, self._client.create_conversation)
                if answer.status is Status.EXISTS:
                    answer = await self._find_existing(row, answer)
                    break
                if answer.code is Code.RATE_LIMITED and answer.rate.daily_remaining == 0:
                    answer = self._skipped(Code.DAILY_QUOTA_EXHAUSTED, answer)
                    break
                if answer.code not in RETRYABLE or row.attempts >= self._max_attempts:
                    break
                if self.stop_code is not None:
                    answer = self._skipped(self.stop_code, answer)
                    break
                delay = self._backoff.delay(row.attempts, answer)
                if waited + delay > self._max_total_backoff_s:
                    break
                if answer.code is Code.RATE_LIMITED:
                    location.limiter.block_for(delay)
                log.debug(
                    "retrying",
                    row_index=row.row_index,
                    location_id=location.location_id,
                    attempt=row.attempts,
                    error_code=answer.code,
                    delay_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                waited += delay
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # this row's story ends here; the run goes on to write it
            answer = self._skipped(self.stop_code or Code.INTERRUPTED, row.last)
        except Exception as exc:  # a bug must cost one row's result, never the run's
            log.exception("row failed unexpectedly", row_index=row.row_index)
            answer = Answer(
                Status.FAILED, Code.INTERNAL_ERROR, message=f"internal error: {type(exc).__name__}"
            )
        self._finish(row, answer)

    async def _request(self, row: _Row, call: Callable[[str, str], Awaitable[Answer]]) -> Answer:
        """One HTTP request; entered holding a permit and a slot, which it gives back."""
        location = row.location
        row.in_request = True
        try:
            answer = await call(location.location_id, row.contact_id)
        finally:
            row.in_request = False
            location.limiter.release()
            self._slots.release()
            self.requests += 1
        row.last = answer
        self._observe(location, answer)
        return answer

    async def _find_existing(self, row: _Row, exists: Answer) -> Answer:
        """After "already exists": search for the id, waiting out the index's lag."""
        for wait in (0.0, *self._search_waits_s):
            if wait:
                await asyncio.sleep(wait)
            if self.stop_code is not None:
                break
            await self._take(row.location)
            found = await self._request(row, self._client.find_conversation)
            if found.conversation_id is not None:
                return Answer(
                    Status.EXISTS,
                    Code.CONVERSATION_EXISTS,
                    found.conversation_id,
                    exists.http_status,
                    exists.message,
                    found.rate,
                )
        return Answer(
            Status.EXISTS,
            Code.CONVERSATION_EXISTS,
            None,
            exists.http_status,
            f"{exists.message} (its id was not found by search)",
            exists.rate,
        )

    def _observe(self, location: _Location, answer: Answer) -> None:
        """Let the answer steer the location and the run."""
        rate = answer.rate
        location.limiter.observe(
            max_requests=rate.max_requests, interval_ms=rate.interval_ms, remaining=rate.remaining
        )
        if rate.daily_remaining == 0 and location.stopped_by is None:
            location.stopped_by = Code.DAILY_QUOTA_EXHAUSTED
            log.warning("daily quota spent", location_id=location.location_id)
        if answer.code is Code.FORBIDDEN:
            location.forbidden += 1
            if location.forbidden >= MAX_FORBIDDEN and location.stopped_by is None:
                location.stopped_by = Code.FORBIDDEN
                log.error("location refused to this token", location_id=location.location_id)
        elif answer.code is Code.UNAUTHORIZED:
            key = self._client.token_key(location.location_id)
            self._unauthorized[key] = self._unauthorized.get(key, 0) + 1
            if self._unauthorized[key] == MAX_UNAUTHORIZED:
                self._token_rejected(key)

    def _token_rejected(self, key: int) -> None:
        """Send nothing more with a rejected token: its locations stop; with one token, the run."""
        log.error("token rejected; no more requests with it", token_index=key)
        users = [
            loc
            for loc in self._locations.values()
            if self._client.token_key(loc.location_id) == key
        ]
        for location in users:
            location.stopped_by = location.stopped_by or Code.UNAUTHORIZED
        if all(loc.stopped_by is not None for loc in self._locations.values()):
            self.stop(Code.UNAUTHORIZED)

    @staticmethod
    def _skipped(code: Code, last: Answer | None = None) -> Answer:
        """A row not (or no longer) sent for a reason of the run; keeps the last HTTP status."""
        return Answer(
            Status.SKIPPED,
            code,
            http_status=last.http_status if last else None,
            message=SKIP_MESSAGES[code],
        )

    def _finish(self, row: _Row, answer: Answer) -> None:
        self._sink(
            RowOutcome(
                row_index=row.row_index,
                status=answer.status,
                conversation_id=answer.conversation_id,
                error_code=answer.code,
                http_status=answer.http_status,
                error_message=answer.message,
                attempts=row.attempts,
            )
        )

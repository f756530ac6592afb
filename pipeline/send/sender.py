"""Stage 3, send: every planned row through the API, under the limits, with retries.

This module is the mechanism; the decisions live beside it as plain state and functions:
``retrying.RetryPolicy`` (after an answer: retry after a delay, look up the existing
conversation, or settle) and ``guards.Guards`` (what an answer says about a token, a
location and the run). ``Sender`` dispatches rows, holds permits and slots, carries the
decisions out and records outcomes.

Shape of the machinery: one dispatcher per location walks that location's rows in input
order; for each it takes a permit from the location's ``LocationLimiter`` (the limit the
location's answers announce and the user's ``--rate``, both at once) and then a slot from
the global concurrency semaphore, and starts the row's task. Taking the location permit
first means a location that is waiting on its own limit holds no global slot, so a slow or
throttled location never stalls the others. A row's task owns its retries: between attempts
it holds nothing, and each new request takes a permit and a slot again.

First requests go alone. A token's first request goes alone: its other locations wait for
the answer, so a wrong token costs one request, not a burst. Then each location's first
request goes alone too, and its burst follows the answer (which may say 403, or announce
the location's real limits). A first request that gets no decisive answer (see ``guards``)
is followed by the next row's, alone in turn.

"Already exists" is followed by a search for the existing id, so a create whose answer was
lost and then re-sent still ends with the right conversation id; a row whose id the index
does not show yet waits in the lookup queue (``lookups``) holding no slot, and is searched
again later. A batch's ``lookups`` (rows an earlier run left without their id) are only
searched, never created.

``stop()`` (a signal, a rejected token, an unreachable API) ends the run gracefully: no new
row starts, rows waiting between attempts end at once, requests in flight get a bounded
grace period.

Every row of every batch reaches ``sink`` exactly once, as a ``RowOutcome``: rows the run
never got to (it stopped first) as ``skipped`` with ``stop_code`` as the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

import structlog

from pipeline.core.outcomes import RETRYABLE, Code, RowOutcome, Status
from pipeline.core.settings import Rate
from pipeline.highlevel.client import Answer
from pipeline.send.guards import Guards, Verdict
from pipeline.send.inflight import Gauge, InFlightLimit, watch_loop_lag
from pipeline.send.latencies import Latencies
from pipeline.send.limiter import DEFAULT_SERVER_LIMIT, LocationLimiter, PrioritySlots
from pipeline.send.lookups import LookupQueue, LookupSchedule, found, not_found_yet, unsearchable
from pipeline.send.peers import REFRESH_S
from pipeline.send.retrying import FindExisting, Retry, RetryPolicy, Settle, unsent
from pipeline.send.rows import (
    Alone,
    ConversationsAPI,
    Location,
    LocationBatch,
    Row,
    SharedLocations,
    TokenTurn,
    not_sent,
)
from pipeline.send.watchdog import CHECK_EVERY_S, PROBE_EVERY_S, Watchdog, bound_for

log = structlog.get_logger("pipeline.send.sender")

# Failures with no answer at all: while the API is silent, their rows are told in one line.
_NO_ANSWER = frozenset({Code.NETWORK_ERROR, Code.TIMEOUT})


class Sender:
    def __init__(
        self,
        client: ConversationsAPI,
        *,
        rate: Rate | None,
        concurrency: int | InFlightLimit,
        policy: RetryPolicy,
        sink: Callable[[RowOutcome], None],
        grace_s: float = 10.0,
        lookup: LookupSchedule | None = None,
        record_unstarted: bool = True,
        clock: Callable[[], float] = time.monotonic,
        gauge: Gauge | None = None,
        daily_reserve: int = 0,
        peers: SharedLocations | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        """``rate``: the user's own per-location ceiling, enforced beside the limit each
        location's answers announce (None: follow the announced limit alone).

        ``daily_reserve``: requests of a location's daily quota kept for the searches and
        retries of rows already started: once what the API says is left today comes down
        to it, the location's rows not yet started end ``skipped`` /
        ``daily_quota_exhausted`` in input order, never sent into a refusal.

        ``record_unstarted``: when the run stops, give every row never started an outcome
        too (``skipped`` with the stop's code). A single process can leave them out (the
        results fill unsent rows with that code, and an interrupted run of millions of rows
        does not write millions of records); a worker must not, because workers may stop
        for different reasons.

        ``lookup``: how long and how often a conversation's id is searched for when the
        index does not show it yet (``lookups``).

        ``concurrency``: requests in flight at most, fixed, or an ``InFlightLimit`` that
        sizes it to the latency as answers come in.

        ``clock``: the limiters' time (tests pass their event loop's virtual clock).
        ``gauge``: where to show the requests in flight and the limit (the progress bar).
        ``peers``: which locations our other runs on this machine send to as well (their
        budget is split from the first answer on; see ``limiter.LocationLimiter``).
        ``watchdog``: stops the run when the API goes silent or the run is stuck
        (``watchdog``)."""
        self._client = client
        self._rate = rate
        if isinstance(concurrency, InFlightLimit):
            self._inflight: InFlightLimit | None = concurrency
            self._slots = PrioritySlots(concurrency.limit)
            # A location never needs more tasks started than could ever be in flight at once.
            self._concurrency = concurrency.ceiling
        else:
            self._inflight = None
            self._slots = PrioritySlots(concurrency)
            self._concurrency = concurrency
        self._policy = policy
        self._daily_reserve = daily_reserve
        self._peers: SharedLocations = peers or Alone()
        self._sink = sink
        self._grace_s = grace_s
        self._clock = clock
        self._watchdog = watchdog or Watchdog(bound_for(30.0), clock)
        if rate is not None:
            self._watchdog.window(rate.interval_s)  # the user's own window is no silence
        self._request_ended = asyncio.Event()  # probes wait on it while the API is silent
        self._next_probe_at = 0.0
        self._quiet_failures = 0  # rows failed with no answer while the API was silent
        self._lookup = lookup or LookupSchedule()
        self._lookups: LookupQueue[Row] = LookupQueue(self._look_up_again, clock=clock)
        self._record_unstarted = record_unstarted
        self._locations: dict[str, Location] = {}
        self._dispatchers: list[asyncio.Task[None]] = []
        self._rows: dict[asyncio.Task[None], Row] = {}
        self._guards = Guards(client.token_key)
        self._turns: dict[int, TokenTurn] = {}  # by token key
        self.stop_code: Code | None = None
        self.stop_detail: str | None = None  # why, in a line, when the run stopped itself
        self.requests = 0  # HTTP requests made, creates and searches
        self.peak_in_flight = 0
        self._gauge = gauge or Gauge()
        self.latencies = Latencies()  # every request's time, for the mean, p50 and p99
        self.throttled = 0  # 429 answers
        # Each location's X-RateLimit-Daily-Remaining, as its last answer said (metrics).
        self.daily_remaining: dict[str, int] = {}

    # -- public -------------------------------------------------------------------------

    def location(self, location_id: str) -> Location:
        found = self._locations.get(location_id)
        if found is None:
            limiter = LocationLimiter(DEFAULT_SERVER_LIMIT, self._rate, clock=self._clock)
            self._guards.add(location_id)
            turn = self._turns.setdefault(self._client.token_key(location_id), TokenTurn())
            found = Location(location_id, limiter, len(self._locations), turn)
            self._locations[location_id] = found
        return found

    def stopped_by(self, location: Location) -> Code | None:
        return self._guards.stopped_by(location.location_id)

    async def run(self, batches: Iterable[LocationBatch]) -> None:
        helpers = [
            asyncio.create_task(self._follow_peers()),
            asyncio.create_task(self._lookups.run()),
            asyncio.create_task(self._watch()),
        ]
        if self._inflight is not None:
            helpers.append(asyncio.create_task(watch_loop_lag(self._inflight)))
        try:
            self._dispatchers = [asyncio.create_task(self._dispatch(b)) for b in batches]
            ended = await asyncio.gather(*self._dispatchers, return_exceptions=True)
            for outcome in ended:
                if isinstance(outcome, Exception):  # a bug: its rows end as the run's stop says
                    log.error("a location's dispatcher failed", exc_info=outcome)
            while self._rows:
                await asyncio.wait(list(self._rows))
            await self._lookups.drained()  # after the last create: the ids still looked up
        finally:
            for helper in helpers:
                helper.cancel()
            if self._quiet_failures:
                log.warning(
                    "rows failed with no answer from the API",
                    rows=self._quiet_failures,
                    error_code=Code.NETWORK_ERROR,
                )

    async def _watch(self) -> None:
        """Stop the run when the API has gone silent or nothing moves (``watchdog``)."""
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            verdict = self._watchdog.check(self._slots.in_use)
            if verdict is not None and self.stop_code is None:
                log.error(
                    "the API is lost; stopping"
                    if verdict.code is Code.UNREACHABLE
                    else "no progress; stopping",
                    reason=verdict.detail,
                    rows_in_flight=len(self._rows),
                    looking_up=len(self._lookups),
                )
                self.stop(verdict.code, verdict.detail)

    async def _follow_peers(self) -> None:
        """Apply our other runs' leases to the locations as they change, between answers
        too: a run that learnt of a new peer only from its next answer could spend a whole
        window's burst first, and the newcomer's requests would meet it as 429s."""
        if isinstance(self._peers, Alone):
            return
        while True:
            await asyncio.sleep(REFRESH_S)
            for name, location in self._locations.items():
                if location.limiter.answers:
                    location.limiter.share(self._peers.sharers(name))

    def stop(self, code: Code, detail: str | None = None) -> None:
        """Start no new row; end rows waiting between attempts; give requests in flight a grace."""
        if self.stop_code is not None:
            return
        self.stop_code = code
        self.stop_detail = detail
        log.warning("stopping", reason=code.value, rows_in_flight=len(self._rows))
        for task in self._dispatchers:
            task.cancel()
        for task, row in list(self._rows.items()):
            if not row.in_request:
                task.cancel()
        self._lookups.stop()  # their rows keep the id_not_found_yet the journal holds
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
        one location may have started and not finished: more than the global cap could
        never run anyway. Until the location has had a decisive answer, its rows go one at
        a time (``_first_answer``).
        """
        location = self.location(batch.location_id)
        pending = asyncio.Semaphore(self._concurrency)
        join_wait = self._peers.join_wait_s(batch.location_id)
        if join_wait > 0:
            await asyncio.sleep(join_wait)
        # The lookups first: the rows an earlier run left without their id.
        rows = itertools.chain(
            ((index, contact, True) for index, contact in batch.lookups),
            ((index, contact, False) for index, contact in batch.rows),
        )
        row: Row | None = None  # a row taken from ``rows`` and not yet started or finished
        try:
            for row_index, contact_id, lookup in rows:
                row = Row(location, row_index, contact_id, lookup=lookup)
                if self._spent_today(location):
                    self._finish(row, not_sent(row, Code.DAILY_QUOTA_EXHAUSTED))
                    row = None
                    continue
                if await self._admit(location, pending):
                    if self._spent_today(location):  # an answer said so while we waited
                        location.limiter.cancel()
                        pending.release()
                        self._finish(row, not_sent(row, Code.DAILY_QUOTA_EXHAUSTED))
                        row = None
                        continue
                    if location.daily_allowance is not None:
                        location.daily_allowance -= 1
                    task = asyncio.create_task(self._send_row(row, holding=True))
                    self._rows[task] = row
                    task.add_done_callback(self._rows.pop)
                    task.add_done_callback(lambda _: pending.release())
                    row = None
                    if not location.decided.is_set():
                        await self._first_answer(location, task)
                else:
                    self._finish(row, not_sent(row, self.stopped_by(location) or Code.INTERRUPTED))
                    row = None
            self._peers.done(location.location_id)  # our other runs may take our share back
        except asyncio.CancelledError:  # the run stopped: the rows left are unsent
            if self._record_unstarted:
                code = self.stop_code or Code.INTERRUPTED
                if row is not None:
                    self._finish(row, not_sent(row, code))
                for row_index, contact_id, lookup in rows:
                    unsent = Row(location, row_index, contact_id, lookup=lookup)
                    self._finish(unsent, not_sent(unsent, code))
            raise

    def _spent_today(self, location: Location) -> bool:
        """No more rows may start at the location today (its daily quota, less the reserve);
        said once in the log when it first happens."""
        spent = location.daily_allowance is not None and location.daily_allowance <= 0
        if spent and not location.told_spent:
            location.told_spent = True
            log.warning(
                "daily quota spent; the location's rows not started are skipped",
                location_id=location.location_id,
                daily_remaining=self.daily_remaining.get(location.location_id),
                reserve=self._daily_reserve,
            )
        return spent

    async def _admit(self, location: Location, pending: asyncio.Semaphore) -> bool:
        """Wait for the token's turn, a pending slot and a location permit; False (holding
        nothing) when the location was stopped meanwhile."""
        if not location.decided.is_set():
            await self._token_turn(location)
        if self.stopped_by(location) is not None:
            return False
        await pending.acquire()
        try:
            await location.limiter.acquire()
        except asyncio.CancelledError:
            pending.release()
            raise
        if self.stopped_by(location) is None:  # nothing decided while we waited for the permit
            return True
        location.limiter.cancel()
        pending.release()
        return False

    async def _token_turn(self, location: Location) -> None:
        """Return once the location's token is accepted, or this location may probe it."""
        name = location.location_id
        location.holds_turn = await location.token.first.take(
            lambda: self._guards.token_accepted(name) or self._guards.stopped_by(name) is not None
        )

    async def _first_answer(self, location: Location, task: asyncio.Task[None]) -> None:
        """Hold the location's other rows until its first request is decided: a decisive
        answer, or its row ended without one (then the next row goes alone in turn)."""
        waiter = asyncio.ensure_future(location.decided.wait())
        try:
            await asyncio.wait((waiter, task), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        undecided = not self._guards.token_accepted(location.location_id)
        if location.holds_turn and undecided:
            # Let the next first request try the token: this one ended without a word on
            # it, with no decisive answer, or decided only for its location (no token could
            # be had there: an agency's app not installed), which says nothing of the token.
            location.holds_turn = False
            location.token.first.give_back()

    async def _take(self, location: Location, *, holding_permit: bool = False) -> None:
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
            if not self._slots.in_use and wait_s <= 0:
                self._next_probe_at = self._clock() + PROBE_EVERY_S
                return
            self._request_ended.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._request_ended.wait(), None if self._slots.in_use else wait_s
                )

    # -- one row ------------------------------------------------------------------------

    async def _send_row(self, row: Row, *, holding: bool) -> None:
        """Send one row until it settles, runs out of attempts, or the run stops.

        ``holding``: started with a location permit already taken (by the dispatcher).
        """
        location = row.location
        waited = 0.0
        answer: Answer | None
        try:
            if row.lookup:
                row.exists_at = self._clock()
                answer = await self._search(row, holding=holding)
                if answer is not None:
                    self._settle(row, answer)
                return
            while True:
                await self._take(location, holding_permit=holding)
                holding = False
                row.attempts += 1
                answer = await self._request(row, self._client.create_conversation)
                if not answer.sent and answer.code not in RETRYABLE:
                    row.attempts -= 1  # no token can be had: no create was made, nor will be
                stopped = self.stop_code or self.stopped_by(location)
                decision = self._policy.after(
                    answer, attempts=row.attempts, waited_s=waited, stopped=stopped
                )
                if isinstance(decision, FindExisting):
                    row.exists, row.exists_at = answer, self._clock()
                    answer = await self._search(row)
                    if answer is None:  # it waits in the lookup queue, recorded
                        return
                    break
                if isinstance(decision, Settle):
                    answer = decision.answer
                    break
                await self._wait_to_retry(row, answer, decision)
                waited += decision.delay_s
                stopped = self.stopped_by(location)
                if stopped is not None:  # decided while this row waited
                    answer = unsent(stopped, answer)
                    break
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # this row's story ends here; the run goes on to write it
            answer = not_sent(row, self.stop_code or Code.INTERRUPTED)
        except Exception as exc:  # a bug must cost one row's result, never the run's
            log.exception("row failed unexpectedly", row_index=row.row_index)
            answer = Answer(
                Status.FAILED, Code.INTERNAL_ERROR, message=f"internal error: {type(exc).__name__}"
            )
        self._settle(row, answer)

    async def _wait_to_retry(self, row: Row, answer: Answer, retry: Retry) -> None:
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
        if retry.pause_location:  # the API asked for the pause: waiting is not silence
            self._watchdog.waiting_until(self._clock() + retry.delay_s)
        await asyncio.sleep(retry.delay_s)

    async def _request(self, row: Row, call: Callable[[str, str], Awaitable[Answer]]) -> Answer:
        """One HTTP request; entered holding a permit and a slot, which it gives back."""
        location = row.location
        row.in_request = True
        sent_at = self._clock()
        sent = True
        cohort = self._inflight.on_send(self._slots.in_use) if self._inflight else None
        try:
            answer = await call(location.location_id, row.contact_id)
            sent = answer.sent
        finally:
            in_flight = self._slots.in_use
            self.peak_in_flight = max(self.peak_in_flight, in_flight)
            row.in_request = False
            location.limiter.release()
            self._slots.release()
            self.requests += sent
        latency = self._clock() - sent_at
        self.latencies.add(latency)
        self._request_ended.set()
        if answer.http_status is not None:
            self._watchdog.answered()
        elif answer.code in _NO_ANSWER:  # its token's refresh, too, may have found no API
            self._watchdog.failed(answer.message or str(answer.code))
        if self._inflight is not None:
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

    # -- looking up an existing conversation's id --------------------------------------------

    async def _search(self, row: Row, *, holding: bool = False) -> Answer | None:
        """One search for the row's conversation id: the row's last answer, or None when
        the index does not show the id yet and the row now waits in the lookup queue (its
        ``id_not_found_yet`` outcome journalled first, so a crash leaves it so).

        A token without ``conversations.readonly`` cannot search: its first search goes
        alone, and when it says so, it is the last one made with that token (the rows end
        ``exists`` without an id, as the API leaves them)."""
        name = row.location.location_id
        if self.stop_code is not None or self._guards.stopped_by(name) is not None:
            if holding:
                row.location.limiter.cancel()
            return not_found_yet(row.exists)
        try:
            first = await row.location.token.search.take(lambda: self._guards.search_known(name))
        except asyncio.CancelledError:
            if holding:
                row.location.limiter.cancel()
            raise
        try:
            if not self._guards.can_search(name):
                if holding:
                    row.location.limiter.cancel()
                return unsearchable(row.exists)
            await self._take(row.location, holding_permit=holding)
            answer = await self._request(row, self._client.find_conversation)
        finally:
            if first:
                row.location.token.search.give_back()
        self._guards.searched(name, answer)
        row.searches += 1
        if answer.conversation_id is not None:
            return found(row.exists, answer)
        if not self._guards.can_search(name):
            return unsearchable(row.exists)
        delay = self._lookup.next_delay(row.searches, self._clock() - row.exists_at)
        spent = answer.code is Code.RATE_LIMITED and answer.rate.daily_remaining == 0
        if delay is None or spent or self.stop_code is not None:
            return not_found_yet(row.exists)
        if not row.recorded:
            self._finish(row, not_found_yet(row.exists))
            row.recorded = True
        self._lookups.add(row, delay)
        self._watchdog.waiting_until(self._clock() + delay)
        self._gauge.looking_up = len(self._lookups)
        return None

    async def _look_up_again(self, row: Row) -> None:
        """A row of the lookup queue, due: search again (``LookupQueue`` calls this)."""
        answer: Answer | None
        try:
            answer = await self._search(row)
        except asyncio.CancelledError:  # the run stopped: the journal holds id_not_found_yet
            answer = not_found_yet(row.exists)
        except Exception:  # a bug must cost one row's id, never the run
            log.exception("looking up an id failed unexpectedly", row_index=row.row_index)
            answer = not_found_yet(row.exists)
        if answer is not None:
            self._settle(row, answer)
        self._gauge.looking_up = len(self._lookups) - 1  # this search is ending

    def _observe(self, location: Location, answer: Answer, sent_at: float) -> None:
        """Let the answer steer the location's limiter, and through the guards its token,
        the locations that wait on it, and the run."""
        rate = answer.rate
        if answer.http_status == 429:
            self.throttled += 1
        limiter = location.limiter
        # The first answer sizes the first burst: a peer that registered by now counts.
        sharers = self._peers.sharers(location.location_id, fresh=not limiter.answers)
        if rate.daily_remaining is not None:
            self.daily_remaining[location.location_id] = rate.daily_remaining
            # Our other requests on their way may not be counted in this figure yet; our
            # other runs sending to the location may each spend their share of it.
            left = rate.daily_remaining - self._daily_reserve - limiter.in_flight
            location.daily_allowance = left // sharers
        if rate.interval_ms:
            self._watchdog.window(rate.interval_ms / 1000)
        limiter.observe(
            max_requests=rate.max_requests,
            interval_ms=rate.interval_ms,
            remaining=rate.remaining,
            sent_at=sent_at,
            refused=answer.http_status == 429,
            sharers=sharers,
        )
        verdict: Verdict = self._guards.observe(location.location_id, answer)
        for name in verdict.decided:
            self._locations[name].decided.set()
        if verdict.token_decided:
            location.token.first.changed.set()  # locations waiting for the token's turn go on
        if verdict.stop_run is not None:
            self.stop(verdict.stop_run, verdict.detail)

    def _settle(self, row: Row, answer: Answer) -> None:
        """The row's last answer: recorded, unless the journal holds it already (a row that
        waited in the lookup queue and ends without its id)."""
        if not (row.recorded and answer.code is Code.ID_NOT_FOUND_YET):
            self._finish(row, answer)

    def _finish(self, row: Row, answer: Answer) -> None:
        silent_failure = answer.http_status is None and answer.code in _NO_ANSWER
        if not silent_failure:
            self._watchdog.progressed()
        if silent_failure and (self._watchdog.silent or self.stop_code is Code.UNREACHABLE):
            self._quiet_failures += 1  # one line for them all (``run``), not one each
        elif answer.status is Status.FAILED:
            log.warning(
                "row failed",
                row_index=row.row_index,
                location_id=row.location.location_id,
                error_code=answer.code,
                http_status=answer.http_status,
                message=answer.message,
                attempts=row.attempts,
                trace_id=answer.trace_id,
            )
        self._sink(
            RowOutcome(
                row_index=row.row_index,
                status=answer.status,
                conversation_id=answer.conversation_id,
                error_code=answer.code,
                http_status=answer.http_status,
                error_message=answer.message,
                attempts=row.attempts,
                trace_id=answer.trace_id,
                finished_at=datetime.now(UTC) if row.attempts or row.searches else None,
            )
        )

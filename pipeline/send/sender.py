"""Stage 3, send: every planned row through the API, under the limits, with retries.

This module is the mechanism; the decisions live beside it as plain state and functions:
``retrying.RetryPolicy`` (after an answer: retry after a delay, look up the existing
conversation, or settle), ``guards.Guards`` (what an answer says about a token, a location
and the run) and ``quota`` (what is left of a location's day). ``Sender`` dispatches rows,
carries the decisions out and stops the run; beneath it, ``requests.RequestLayer`` takes
permits and slots and makes each request, ``looking.IdLookups`` searches the ids of
conversations that exist (and queues a row the index does not show yet), and
``recording.Recorder`` gives each row its outcome.

Shape of the machinery: one dispatcher per location walks that location's rows in input
order; for each it takes a permit from the location's ``LocationLimiter`` (the limit the
location's answers announce and the user's ``--rate``, both at once) and starts the row's
task, which then queues for a slot of the global concurrency. Taking the location permit
first means a location that is waiting on its own limit holds no global slot, so a slow or
throttled location never stalls the others. A row's task owns its retries: between attempts
it holds nothing, and each new request takes a permit and a slot again.

First requests go alone. A token's first request goes alone: its other locations wait for
the answer, so a wrong token costs one request, not a burst. Then each location's first
request goes alone too, and its burst follows the answer (which may say 403, or announce
the location's real limits). A first request that gets no decisive answer (see ``guards``)
is followed by the next row's, alone in turn. A batch's ``lookups`` (rows an earlier run
left without their id) are only searched, never created.

``stop()`` (a signal, a rejected token, an unreachable API) ends the run gracefully: no new
row starts, rows waiting between attempts end at once, requests in flight get a bounded
grace period. Every row of every batch reaches ``sink`` exactly once, as a ``RowOutcome``:
rows the run never got to (it stopped first) as ``skipped`` with ``stop_code`` as the reason.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable

import structlog

from pipeline.core.outcomes import RETRYABLE, Code, RowOutcome, Status
from pipeline.core.values import Rate
from pipeline.highlevel.answers import Answer
from pipeline.send.guards import Guards, Verdict
from pipeline.send.inflight import Gauge, InFlightLimit
from pipeline.send.latencies import Latencies
from pipeline.send.limiter import DEFAULT_SERVER_LIMIT, LocationLimiter
from pipeline.send.looking import IdLookups
from pipeline.send.lookups import LookupSchedule
from pipeline.send.peers import follow
from pipeline.send.quota import DailyAllowance
from pipeline.send.recording import Recorder
from pipeline.send.requests import RequestLayer
from pipeline.send.retrying import FindExisting, RetryPolicy, Settle, unsent
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
from pipeline.send.watchdog import CHECK_EVERY_S, Watchdog, bound_for

log = structlog.get_logger("pipeline.send.sender")


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
        retries of rows already started (``quota.DailyAllowance``).

        ``record_unstarted``: when the run stops, give every row never started an outcome
        too (``skipped`` with the stop's code). A single process can leave them out (the
        results fill unsent rows with that code, and an interrupted run of millions of rows
        does not write millions of records); a worker must not, because workers may stop
        for different reasons.

        ``lookup``: how long and how often an id is searched for (``lookups``).
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
        self._policy = policy
        self._daily_reserve = daily_reserve
        self._peers: SharedLocations = peers or Alone()
        self._grace_s = grace_s
        self._clock = clock
        self._watchdog = watchdog or Watchdog(bound_for(30.0), clock)
        if rate is not None:
            self._watchdog.window(rate.interval_s)  # the user's own window is no silence
        self._layer = RequestLayer(
            concurrency, watchdog=self._watchdog, observe=self._observe, clock=clock, gauge=gauge
        )
        self._guards = Guards(client.token_key)
        self._recorder = Recorder(sink, self._watchdog, lambda: self.stop_code)
        self._finish = self._recorder.finish
        self._ids = IdLookups(
            self._layer,
            client.find_conversation,
            guards=self._guards,
            schedule=lookup or LookupSchedule(),
            watchdog=self._watchdog,
            finish=self._finish,
            stopped=lambda: self.stop_code,
            clock=clock,
            gauge=gauge,
        )
        self._record_unstarted = record_unstarted
        self._locations: dict[str, Location] = {}
        self._dispatchers: list[asyncio.Task[None]] = []
        self._rows: dict[asyncio.Task[None], Row] = {}
        self._turns: dict[int, TokenTurn] = {}  # by token key
        self.stop_code: Code | None = None
        self.stop_detail: str | None = None  # why, in a line, when the run stopped itself
        self.throttled = 0  # 429 answers

    @property
    def requests(self) -> int:  # HTTP requests made, creates and searches
        return self._layer.requests

    @property
    def daily_remaining(self) -> dict[str, int]:
        """Each location's X-RateLimit-Daily-Remaining, as the answer to the request sent
        last said (``DailyAllowance.remaining``): the summary's and the metrics' figure."""
        return {
            location_id: location.quota.remaining
            for location_id, location in self._locations.items()
            if location.quota.remaining is not None
        }

    @property
    def peak_in_flight(self) -> int:
        return self._layer.peak_in_flight

    @property
    def latencies(self) -> Latencies:  # the times of the requests that went out
        return self._layer.latencies

    # -- public -------------------------------------------------------------------------

    def location(self, location_id: str) -> Location:
        found = self._locations.get(location_id)
        if found is None:
            limiter = LocationLimiter(DEFAULT_SERVER_LIMIT, self._rate, clock=self._clock)
            self._guards.add(location_id)
            turn = self._turns.setdefault(self._client.token_key(location_id), TokenTurn())
            allowance = DailyAllowance(self._daily_reserve)
            found = Location(location_id, limiter, len(self._locations), turn, allowance)
            self._locations[location_id] = found
        return found

    def stopped_by(self, location: Location) -> Code | None:
        return self._guards.stopped_by(location.location_id)

    async def run(self, batches: Iterable[LocationBatch]) -> None:
        helpers = [
            asyncio.create_task(self._ids.run()),
            asyncio.create_task(self._watch()),
            *(asyncio.create_task(helper) for helper in self._layer.helpers()),
        ]
        if not isinstance(self._peers, Alone):  # our other runs' shares, between answers too
            helpers.append(asyncio.create_task(follow(self._peers, self._locations)))
        try:
            self._dispatchers = [asyncio.create_task(self._dispatch(b)) for b in batches]
            ended = await asyncio.gather(*self._dispatchers, return_exceptions=True)
            for outcome in ended:
                if isinstance(outcome, Exception):  # a bug: its rows end as the run's stop says
                    log.error("a location's dispatcher failed", exc_info=outcome)
            while self._rows:
                await asyncio.wait(list(self._rows))
            await self._ids.drained()  # after the last create: the ids still looked up
        finally:
            for helper in helpers:
                helper.cancel()
            self._recorder.close()

    async def _watch(self) -> None:
        """Stop the run when the API has gone silent or nothing moves (``watchdog``)."""
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            verdict = self._watchdog.check(self._layer.in_flight)
            if verdict is not None and self.stop_code is None:
                log.error(
                    "the API is lost; stopping"
                    if verdict.code is Code.UNREACHABLE
                    else "no progress; stopping",
                    reason=verdict.detail,
                    rows_in_flight=len(self._rows),
                    looking_up=len(self._ids),
                )
                self.stop(verdict.code, verdict.detail)

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
        self._ids.stop()  # their rows keep the id_not_found_yet the journal holds
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
        pending = asyncio.Semaphore(self._layer.ceiling)
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
                    refused: Code | None = Code.DAILY_QUOTA_EXHAUSTED
                else:
                    refused = await self._admit(location, pending)
                if refused is not None:
                    self._finish(row, not_sent(row, refused))
                    row = None
                    continue
                location.quota.start_one()
                task = asyncio.create_task(self._send_row(row, holding=True))
                self._rows[task] = row
                task.add_done_callback(self._rows.pop)
                task.add_done_callback(lambda _: pending.release())
                row = None
                if not location.decided.is_set():
                    await self._first_answer(location, task)
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
        """No more rows may start at the location today (``quota.DailyAllowance``); said
        once in the log when it first happens."""
        quota = location.quota
        if not quota.spent:
            return False
        if not quota.told:
            quota.told = True
            log.warning(
                "daily quota spent; the location's rows not started are skipped",
                location_id=location.location_id,
                daily_remaining=quota.remaining,
                reserve=self._daily_reserve,
            )
        return True

    async def _admit(self, location: Location, pending: asyncio.Semaphore) -> Code | None:
        """Wait for the token's turn, a pending slot and a location permit: None once they
        are held, else why the row may not start (holding nothing): the location was
        stopped, or its day spent, meanwhile."""
        if not location.decided.is_set():
            await self._token_turn(location)
        if (stopped := self.stopped_by(location)) is not None:
            return stopped
        await pending.acquire()
        try:
            await location.limiter.acquire()
        except asyncio.CancelledError:
            pending.release()
            raise
        # Decided while we waited for the permit: a stop, or an answer spent the day.
        stopped = self.stopped_by(location)
        if stopped is None and self._spent_today(location):
            stopped = Code.DAILY_QUOTA_EXHAUSTED
        if stopped is not None:
            location.limiter.cancel()
            pending.release()
        return stopped

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
                answer = await self._ids.search(row, holding=holding)
                if answer is not None:
                    self._ids.settle(row, answer)
                return
            while True:
                await self._layer.take(location, holding_permit=holding)
                holding = False
                row.attempts += 1
                answer = await self._layer.send(row, self._client.create_conversation)
                if not answer.sent and answer.code not in RETRYABLE:
                    row.attempts -= 1  # no token can be had: no create was made, nor will be
                stopped = self.stop_code or self.stopped_by(location)
                decision = self._policy.after(
                    answer, attempts=row.attempts, waited_s=waited, stopped=stopped
                )
                if isinstance(decision, FindExisting):
                    row.exists, row.exists_at = answer, self._clock()
                    answer = await self._ids.search(row)
                    if answer is None:  # it waits in the lookup queue, recorded
                        return
                    break
                if isinstance(decision, Settle):
                    answer = decision.answer
                    break
                await self._layer.wait_to_retry(row, answer, decision)
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
        self._ids.settle(row, answer)

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
            location.quota.observe(
                rate.daily_remaining, in_flight=limiter.in_flight, sharers=sharers, sent_at=sent_at
            )
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

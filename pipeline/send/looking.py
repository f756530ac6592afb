"""Looking up an existing conversation's id: the searches after "already exists".

``IdLookups`` carries out what ``lookups`` decides (``LookupSchedule``), over the sender's
request layer (``requests.RequestLayer``): one search for a row's id, each taking a permit
of the location's window and a slot like any request; a row whose id the index does not
show yet is journalled ``exists`` / ``id_not_found_yet`` first and then waits in the
``LookupQueue``, holding nothing, until its next search is due.

A token without ``conversations.readonly`` cannot search: its first search goes alone
(``TokenTurn.search``), and when it says so, it is the last one made with that token (the
rows end ``exists`` without an id, as the API leaves them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from pipeline.core.outcomes import Code
from pipeline.highlevel.answers import Answer
from pipeline.send import quota
from pipeline.send.guards import Guards
from pipeline.send.inflight import Gauge
from pipeline.send.lookups import LookupQueue, LookupSchedule, found, not_found_yet, unsearchable
from pipeline.send.requests import Call, RequestLayer
from pipeline.send.rows import Row
from pipeline.send.watchdog import Watchdog

log = structlog.get_logger("pipeline.send.looking")


class IdLookups:
    def __init__(
        self,
        layer: RequestLayer,
        search: Call,
        *,
        guards: Guards,
        schedule: LookupSchedule,
        watchdog: Watchdog,
        finish: Callable[[Row, Answer], None],
        stopped: Callable[[], Code | None],
        clock: Callable[[], float] = time.monotonic,
        gauge: Gauge | None = None,
    ) -> None:
        """``search``: the client's search call; ``finish(row, answer)``: record a row's
        outcome; ``stopped()``: why the run stopped, if it did."""
        self._layer = layer
        self._call = search
        self._guards = guards
        self._schedule = schedule
        self._watchdog = watchdog
        self._finish = finish
        self._stopped = stopped
        self._clock = clock
        self._gauge = gauge or Gauge()
        self._queue: LookupQueue[Row] = LookupQueue(self._look_up_again, clock=clock)

    def __len__(self) -> int:
        """Rows waiting for their next search, or being searched."""
        return len(self._queue)

    async def run(self) -> None:
        """Start each waiting row's search when it is due, until cancelled."""
        await self._queue.run()

    async def drained(self) -> None:
        """Return once no row waits and none is being searched."""
        await self._queue.drained()

    def stop(self) -> None:
        """Search nothing more: the rows waiting keep the ``id_not_found_yet`` the journal
        holds for them."""
        self._queue.stop()

    async def search(self, row: Row, *, holding: bool = False) -> Answer | None:
        """One search for the row's conversation id: the row's last answer, or None when
        the index does not show the id yet and the row now waits in the lookup queue (its
        ``id_not_found_yet`` outcome journalled first, so a crash leaves it so).

        ``holding``: a permit of the location is held already (by the dispatcher)."""
        location = row.location
        name = location.location_id
        handed_over = False  # the held permit (if any) is the request layer's from then on
        try:
            if self._stopped() is not None or self._guards.stopped_by(name) is not None:
                return not_found_yet(row.exists)
            first = await location.token.search.take(lambda: self._guards.search_known(name))
            try:
                if not self._guards.can_search(name):
                    return unsearchable(row.exists)
                handed_over = True
                await self._layer.take(location, holding_permit=holding)
                answer = await self._layer.send(row, self._call)
            finally:
                if first:
                    location.token.search.give_back()
        finally:
            if holding and not handed_over:  # never sent: its permit goes back unused
                location.limiter.cancel()
        self._guards.searched(name, answer)
        row.searches += 1
        if answer.conversation_id is not None:
            return found(row.exists, answer)
        if not self._guards.can_search(name):
            return unsearchable(row.exists)
        delay = self._schedule.next_delay(row.searches, self._clock() - row.exists_at)
        if delay is None or quota.refused(answer) or self._stopped() is not None:
            return not_found_yet(row.exists)
        if not row.recorded:
            self._finish(row, not_found_yet(row.exists))
            row.recorded = True
        self._queue.add(row, delay)
        self._watchdog.waiting_until(self._clock() + delay)
        self._gauge.looking_up = len(self._queue)
        self._gauge.lookups_due_at = self._queue.last_due()
        return None

    async def _look_up_again(self, row: Row) -> None:
        """A row of the lookup queue, due: search again (``LookupQueue`` calls this)."""
        answer: Answer | None
        try:
            answer = await self.search(row)
        except asyncio.CancelledError:  # the run stopped: the journal holds id_not_found_yet
            answer = not_found_yet(row.exists)
        except Exception:  # a bug must cost one row's id, never the run
            log.exception("looking up an id failed unexpectedly", row_index=row.row_index)
            answer = not_found_yet(row.exists)
        if answer is not None:
            self.settle(row, answer)
        self._gauge.looking_up = len(self._queue) - 1  # this search is ending
        self._gauge.lookups_due_at = self._queue.last_due()

    def settle(self, row: Row, answer: Answer) -> None:
        """The row's last answer: recorded, unless the journal holds it already (a row that
        waited in the lookup queue and ends without its id)."""
        if not (row.recorded and answer.code is Code.ID_NOT_FOUND_YET):
            self._finish(row, answer)

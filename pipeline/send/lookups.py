"""Ids found later: rows whose conversation exists but whose id the search does not show yet.

"Already exists" carries no conversation id (HighLevel declined to add it): the id comes from
``GET /conversations/search``, and the search index lags behind creates by an undocumented
amount (right after a create the live API answered ``{"conversations": [], "total": 0}``).
A create whose answer was lost, sent again, meets exactly that: the conversation was made
seconds ago. So a row whose first search finds nothing is not given up: it waits here,
holding no sending slot and no place in its location's queue, and is searched again with
growing waits (``LookupSchedule``) while the run goes on and after its last create, until
found or ``--lookup-wait`` seconds after its "exists" answer. Each search takes a permit of
the location's window and a slot like any request (``looking.IdLookups``), and the daily
reserve (``--daily-reserve``) is there for them.

A row still without an id at the end is ``exists`` / ``id_not_found_yet``; the journal
holds that outcome from the moment the row starts waiting, so a crash or a Ctrl-C leaves
the row in the same state, and ``--resume``, ``pipeline retry`` and ``--known`` look it up
again (a search, never a create).

``LookupSchedule`` is the pure rule (a unit test per case); ``LookupQueue`` the mechanism:
one heap of rows by due time and one task that starts each row's search when it is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pipeline.core.constants import SCOPE_READ
from pipeline.core.outcomes import Code, Status
from pipeline.core.values import DEFAULT_LOOKUP_WAIT_S
from pipeline.highlevel.answers import Answer

T = TypeVar("T")

# Deadlines within this of now are due: the clock of a loop is only so fine.
_TOLERANCE_S = 1e-6


@dataclass(frozen=True, slots=True)
class LookupSchedule:
    """When to search again for a conversation's id.

    The first search follows the "exists" answer at once (most conversations were made long
    ago and are indexed); then the waits double from ``first_wait_s`` up to
    ``longest_wait_s``, the last one cut to end at ``wait_s`` (``--lookup-wait``): with the
    defaults, searches 0.25, 0.75, 1.75, 3.75, 7.75, 15.75, 31.75, 61.75 and 90 s after the
    answer, ten in all. ``max_searches`` caps a row's searches whatever the wait."""

    wait_s: float = DEFAULT_LOOKUP_WAIT_S
    first_wait_s: float = 0.25
    longest_wait_s: float = 30.0
    max_searches: int = 16

    def next_delay(self, searches: int, since_s: float) -> float | None:
        """Seconds until the next search, after ``searches`` of them and ``since_s`` seconds
        since the "exists" answer; None: give up (the wait or the searches are spent)."""
        if searches >= self.max_searches:
            return None
        left = self.wait_s - since_s
        if left <= _TOLERANCE_S:
            return None
        grown = self.first_wait_s * 2.0 ** max(searches - 1, 0)
        return min(grown, self.longest_wait_s, left)

    def searches_at_most(self) -> int:
        """How many searches a row may cost, the first included (for the plan)."""
        searches, since = 1, 0.0
        while (delay := self.next_delay(searches, since)) is not None:
            searches, since = searches + 1, since + delay
        return searches


class LookupQueue(Generic[T]):
    """Rows waiting for their next search, by due time.

    ``search(item)`` is started as a task when an item is due; it searches and either
    settles the row or ``add``s it back with its next delay. The queue counts items waiting
    and being searched (``len``: the progress line's "looking up N ids"), and ``drained``
    returns once there are none. ``stop`` ends the waiting at once and cancels searches in
    flight; the items it hands back were never searched again, and their rows keep the
    outcome the journal already holds for them."""

    def __init__(
        self,
        search: Callable[[T], Coroutine[Any, Any, None]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._search = search
        self._clock = clock
        self._heap: list[tuple[float, int, T]] = []
        self._last_due = 0.0  # the latest due time added while items wait (``last_due``)
        self._order = itertools.count()  # ties by arrival: items are never compared
        self._searching: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._stopped = False

    def __len__(self) -> int:
        return len(self._heap) + len(self._searching)

    def last_due(self) -> float:
        """When the last waiting item is due (the queue's clock); 0.0 when none waits.

        Kept as items are added, not searched for (a rerun can hold 100,000 rows here, and
        this is asked at every add): the latest due is popped last, so while any item waits
        the running maximum is exact."""
        return self._last_due if self._heap else 0.0

    def add(self, item: T, delay_s: float) -> None:
        """Search ``item`` again in ``delay_s`` seconds."""
        if self._stopped:
            return
        due = self._clock() + delay_s
        self._last_due = max(self._last_due, due) if self._heap else due
        heapq.heappush(self._heap, (due, next(self._order), item))
        self._changed.set()

    async def run(self) -> None:
        """Start each item's search when it is due, until cancelled."""
        while True:
            self._changed.clear()
            if not self._heap:
                await self._changed.wait()
                continue
            due = self._heap[0][0] - self._clock()
            if due > _TOLERANCE_S:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), due)
                continue
            _, _, item = heapq.heappop(self._heap)
            task = asyncio.create_task(self._search(item))
            self._searching.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._searching.discard(task)
        self._changed.set()

    async def drained(self) -> None:
        """Return once no item waits and none is being searched."""
        while len(self):
            self._changed.clear()
            await self._changed.wait()

    def stop(self) -> list[T]:
        """Search nothing more: cancel the searches in flight, hand back the waiting items."""
        self._stopped = True
        for task in self._searching:
            task.cancel()
        waiting = [item for _, _, item in self._heap]
        self._heap.clear()
        self._changed.set()
        return waiting


# -- the answers a looked-up row ends with ----------------------------------------------------

_EARLIER = "an earlier run was told that this conversation exists"


def found(exists: Answer | None, search: Answer) -> Answer:
    """The row's conversation id, found: ``exists`` / ``conversation_exists`` with the
    "already exists" answer's status, text and trace id (``exists`` None: a row an earlier run
    left without its id)."""
    if exists is None:
        return Answer(
            Status.EXISTS,
            Code.CONVERSATION_EXISTS,
            search.conversation_id,
            search.http_status,
            f"{_EARLIER}; its id was found by search",
            search.rate,
            search.trace_id,
        )
    return Answer(
        Status.EXISTS,
        Code.CONVERSATION_EXISTS,
        search.conversation_id,
        exists.http_status,
        exists.message,
        search.rate,
        exists.trace_id,
    )


def not_found_yet(exists: Answer | None) -> Answer:
    """No id yet: ``exists`` / ``id_not_found_yet``, which a rerun looks up again."""
    return _without_id(
        exists,
        Code.ID_NOT_FOUND_YET,
        "its id was not found by search yet (the search index lags behind creates); "
        "--resume or pipeline retry looks it up again",
    )


def unsearchable(exists: Answer | None) -> Answer:
    """The token may not search: ``exists`` / ``conversation_exists`` without an id, as the
    API leaves it (no later search with this token can do better)."""
    return _without_id(
        exists,
        Code.CONVERSATION_EXISTS,
        f"its id cannot be looked up: the token lacks {SCOPE_READ}",
    )


def _without_id(exists: Answer | None, code: Code, why: str) -> Answer:
    """``exists`` with ``code`` and no id: the "already exists" answer's status, text (and
    why there is no id) and trace id; ``exists`` None: a row an earlier run left so."""
    if exists is None:
        return Answer(Status.EXISTS, code, message=f"{_EARLIER}; {why}")
    return Answer(
        Status.EXISTS,
        code,
        None,
        exists.http_status,
        f"{exists.message} ({why})",
        exists.rate,
        exists.trace_id,
    )

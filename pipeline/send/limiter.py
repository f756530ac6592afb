"""Per-location rate limiting: the server's announced window and the user's ceiling, and
what the answers say about who else spends the location's budget.

A location is under two limits at once: the one the server announces in its rate headers
(``X-RateLimit-Max`` per ``X-RateLimit-Interval-Milliseconds``), which may go down or up,
and the user's ``--rate``, a fixed ceiling. They are two windows (``window.WindowLimiter``),
never merged into one: 10 per 1 s under a server's 100 per 10 s must run at about 10 a
second, and merging the two into "the smaller count over the longer interval" (10 per 10 s)
would be ten times slower than either. ``LocationLimiter`` holds both and takes a permit of
each for every request, all or none.

``PrioritySlots`` is the global cap on requests in flight, served by location priority.

The arithmetic (``try_acquire``/``release``/``observe``) is synchronous and takes its time
from an injected clock, so it is unit-tested without sleeping; ``acquire`` is the async
wrapper.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable

from pipeline.core.values import Rate
from pipeline.send.window import (
    DEFAULT_SERVER_LIMIT,
    NEVER,
    TOLERANCE_S,
    WindowLimiter,
    acquire_when_free,
)

__all__ = ["DEFAULT_SERVER_LIMIT", "LocationLimiter", "PrioritySlots", "WindowLimiter"]


# How long a location stays careful after the last sign of another client spending its
# budget: long enough to span the window turns where that client's share comes back.
CONTENDED_WINDOWS = 3
# While contended, how long (a share of the interval) after an answer that found the window
# full before one request goes alone to ask what is left: the window frees as the other
# client's requests age out, at a pace no answer tells.
QUIET_FRACTION = 0.2


class LocationLimiter:
    """The limits of one location: the server's announced window and the user's ceiling.

    Both must hold at once, so each is a ``WindowLimiter`` of its own and a request takes a
    permit of every window, atomically: all or none, never holding one window's permit while
    waiting on another's (that would idle a permit the other requests could use). An answer
    gives its permit back to every window, each resting it from the same moment.

    ``server`` is the limit assumed until an answer announces one; ``observe`` then follows
    the announcements both down and up (``WindowLimiter.observe(follow=True)``). The
    ``ceiling`` (the user's ``--rate``) never changes. ``block_for`` holds the whole
    location back (a 429's ``Retry-After``).

    A known limit of following up: an answer announces the limit in force when the server
    received its request, so a slow answer that crossed a change (limit lowered meanwhile)
    can briefly bring the old, higher max back until the next answer. The retired permits
    come back with their rest starts, so this costs no extra burst of permits long idle,
    but it is the reason the ceiling, when one is set, is never loosened.

    **Sharing the budget.** When an answer shows that another client spends this location's
    budget (``WindowLimiter.observe`` rests permits for it), the location is *contended* for
    ``CONTENDED_WINDOWS`` intervals from then: each answer's ``X-RateLimit-Remaining``, less
    our other requests in flight, is the number of requests that may start before the next
    answer. When it is spent, nothing starts until an answer comes, or, with nothing in
    flight, one request goes alone as soon as a permit is free, and its answer says what is
    left. A location alone never becomes contended, and bursts as ever.

    **Our other runs.** While ``n`` runs of ours on this machine send to the location
    (``observe(sharers=n)``, from ``peers.Peers``), each takes a fixed ``1/n`` of the
    announced max as its server window: ``n`` shares fit in the window, so no answer of
    theirs is ever a 429 and none of them needs to be contended. From the headers alone two
    runs do worse: the one that holds the whole window at its turn never sees the other's
    requests (a 429 is not counted), and the other draws a 429 at every try. The share
    follows the count both ways, between answers too (``share``, from the sender's
    periodic look at the leases): a new peer's share is taken at once, and a run that
    ended gives its share back an interval later, once its last requests have left the
    window (taken at once, they met ours as a burst of 429s).

    **The first burst** is all that the first answer says is left, unless the location is
    contended by then: then half of it, because two runs that start at once each read the
    same figure, and each spending all of it would be twice the window (the next answers
    size the rest). So a location alone pays one round trip to learn its budget, its first
    request's.
    """

    def __init__(
        self,
        server: Rate | tuple[int, float] = DEFAULT_SERVER_LIMIT,
        ceiling: Rate | tuple[int, float] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assumed = Rate.of(server)
        self._server = WindowLimiter(assumed.max_requests, assumed.interval_s, clock=clock)
        self._ceiling: WindowLimiter | None = None
        self._windows: tuple[WindowLimiter, ...] = (self._server,)
        if ceiling is not None:
            fixed = Rate.of(ceiling)
            self._ceiling = WindowLimiter(fixed.max_requests, fixed.interval_s, clock=clock)
            self._windows = (self._server, self._ceiling)
        self._clock = clock
        self._blocked_until = NEVER
        self._changed = asyncio.Event()
        self._contended_until = NEVER  # another client spends the budget until then
        # When an answer first showed requests not ours in the window (``_sighted``), and
        # whether the request that asks if they persist is on its way (its send time).
        self._sighted_at = NEVER
        self._asking_since: float | None = None
        self._known_since = math.inf  # the first answer's time: limits known from then on
        self._budget = 0  # while contended: requests that may start before the next answer
        self._budget_sent_at = NEVER  # when the request whose answer set it was sent
        self._answers = 0
        # While contended, after an answer that found the window full: no request goes
        # alone to ask again before this (each such request would be a 429).
        self._quiet_until = NEVER
        self._first_burst = False  # the first burst's budget holds until the next answer
        self._announced: int | None = None  # the server's max as last announced
        self._sharers = 1  # runs of ours sending to the location, as last told
        self._fewer_since: float | None = None  # when we were first told of fewer

    def _headroom(self) -> int:
        """Requests left unspent while contended: the other client's next few arrive while
        ours are on their way, and a slot both reach for is a 429 for one of us."""
        return max(1, self._server.max_requests // 50)

    @property
    def contended(self) -> bool:
        """Whether another client has lately been seen spending this location's budget."""
        return self._clock() < self._contended_until

    @property
    def max_requests(self) -> int:
        """The burst allowed now: the smallest max of the windows."""
        return min(window.max_requests for window in self._windows)

    @property
    def in_flight(self) -> int:
        return self._server.in_flight

    @property
    def answers(self) -> int:
        """Answers observed so far (0: the next one sizes the first burst)."""
        return self._answers

    @property
    def server_limit(self) -> Rate:
        """The server's window as last announced (or assumed)."""
        return Rate(self._server.max_requests, self._server.interval_s)

    @property
    def ceiling(self) -> Rate | None:
        if self._ceiling is None:
            return None
        return Rate(self._ceiling.max_requests, self._ceiling.interval_s)

    def try_acquire(self) -> float | None:
        """Take a permit of every window if each has one free now and return 0.0.

        Otherwise take nothing and return how many seconds until every window has one free
        (and the block, if any, is over), or None when some window has all its permits in
        flight (only an answer can free one).
        """
        now = self._clock()
        wait = self._blocked_until - now
        wait = wait if wait > TOLERANCE_S else 0.0
        for window in self._windows:
            window_wait = window._wait(now)
            if window_wait is None:
                return None
            wait = max(wait, window_wait)
        if wait > 0.0:
            return wait
        asking = self._must_ask(now)
        if asking and self._asking_since is not None:
            return None  # one request asks whether the other client persists
        contended = now < self._contended_until or self._first_burst
        if contended and self._budget <= 0:
            if self._server.in_flight:
                return None  # what is left is spent: the next answer says more
            if self._quiet_until - now > TOLERANCE_S:
                return self._quiet_until - now  # the window was full: ask again later
        for window in self._windows:
            window._take(now)
        if contended:
            self._budget -= 1
        if asking:
            self._asking_since = now
        return 0.0

    def release(self) -> None:
        """The request has been answered (or failed): its permits rest from now."""
        now = self._clock()
        for window in self._windows:
            window._give_back(now)
        self._changed.set()

    def cancel(self) -> None:
        """Permits were taken but no request was sent: every window has its permit back."""
        self._asking_since = None  # it may have been the one asking: let another ask
        for window in self._windows:
            window._give_back(window._cancel_rest_start())
        self._changed.set()

    def observe(
        self,
        *,
        max_requests: int | None,
        interval_ms: int | None,
        remaining: int | None,
        sent_at: float | None = None,
        refused: bool = False,
        sharers: int = 1,
    ) -> None:
        """Follow the server's rate headers (its window only, both ways; see the class).
        ``sent_at``: when the answered request was sent, by this limiter's clock;
        ``refused``: the answer was a 429 (alone, the limiter never draws one: another
        client spends the budget); ``sharers``: how many runs of ours send to the location
        now, this one included (each takes its share of the announced max)."""
        if max_requests is not None and max_requests > 0:
            self._announced = max_requests
        self._sharers = self._sharers_now(sharers)
        share = None if self._announced is None else max(1, self._announced // self._sharers)
        rested = self._server.observe(
            max_requests=share,
            interval_ms=interval_ms,
            remaining=remaining,
            follow=True,
            sent_at=sent_at,
        )
        now = self._clock()
        self._answers += 1
        sent = now if sent_at is None else sent_at
        if self._answers == 1:
            self._known_since = now
        # A 429 to a request sent before any answer announced the limit is our own guess's
        # (the assumed limit was too high), not a sign of another client.
        refused = refused and sent >= self._known_since
        if rested or refused:
            self._sighted(now, sent, refused=refused)
        elif (
            remaining is not None and self._asking_since is not None and sent >= self._asking_since
        ):
            self._sighted_at = NEVER  # asked, and nobody else is there: full bursts again
        if self._asking_since is not None and sent >= self._asking_since:
            self._asking_since = None
        cautious = now < self._contended_until or (rested > 0 and self._answers == 1)
        if self._answers == 1 and remaining is not None and cautious:
            self._first_burst = True
            self._budget = (remaining - self._server.in_flight) // 2
            self._budget_sent_at = now if sent_at is None else sent_at
            self._changed.set()
            return
        self._first_burst = False
        if remaining is not None and now < self._contended_until:
            # What this answer says is left, less ours on the way. Answers come back out of
            # the order their requests arrived in: one sent no later than the answer that
            # last set the budget may be older news, so it can only lower it.
            # Half of it: another client reading the same figure may reach for it too, and
            # two halves fit where two wholes would draw 429s.
            left = (remaining - self._server.in_flight) // 2 - self._headroom()
            sent = now if sent_at is None else sent_at
            if sent > self._budget_sent_at:
                self._budget, self._budget_sent_at = left, sent
            else:
                self._budget = min(self._budget, left)
            if remaining <= self._headroom() or refused:
                self._quiet_until = now + QUIET_FRACTION * self._server.interval_s
        self._changed.set()  # a higher max may have freed permits for a waiter

    def share(self, sharers: int) -> None:
        """``sharers`` runs of ours send to the location now (``peers``): keep to our
        share of the announced max from now on, between answers too."""
        sharers = self._sharers_now(sharers)
        if sharers == self._sharers or self._announced is None:
            return
        self._sharers = sharers
        self._server.adopt(max(1, self._announced // sharers))
        self._changed.set()

    def _sharers_now(self, told: int) -> int:
        """The sharers to keep to: fewer than before only an interval after we were first
        told so. A run that ended has its last requests in the window for up to an
        interval: taking its share back at once would send ours into them as 429s."""
        told = max(1, told)
        if told >= self._sharers:
            self._fewer_since = None
            return told
        now = self._clock()
        if self._fewer_since is None:
            self._fewer_since = now
        if now - self._fewer_since < self._server.interval_s:
            return self._sharers
        self._fewer_since = None
        return told

    def _sighted(self, now: float, sent_at: float, *, refused: bool) -> None:
        """Requests not ours were in the server's window when it counted ours.

        The permits they took are rested either way (``WindowLimiter.observe``); what is
        decided here is whether someone *goes on* spending the budget, which is what makes
        a location contended. Rows sent before the run (a ``pipeline check``, a killed
        run's last burst, another tool's one-off) show once and leave the window within an
        interval: treating them as a client for three windows turned a run after a check
        into single requests two seconds apart. So the location is contended on a 429, or
        on a second sighting in a request sent more than an interval after the first
        (whatever the first saw has left the window by then); while it is contended, each
        sighting extends it. Between the two, the first request of the next window goes
        alone (``_must_ask``) and its answer decides: a burst into a window that another
        client still fills would be a burst of 429s."""
        interval = self._server.interval_s
        contended = now < self._contended_until
        if self._sighted_at + 2 * interval < sent_at:  # none lately: a new first sighting
            self._sighted_at = now
        persists = sent_at >= self._sighted_at + interval - TOLERANCE_S
        if refused or contended or persists:
            self._contended_until = now + CONTENDED_WINDOWS * interval

    def _must_ask(self, now: float) -> bool:
        """Whether a request now must go alone to ask if the other client seen in the
        last window persists (see ``_sighted``)."""
        if self._sighted_at == NEVER or now < self._contended_until:
            return False
        interval = self._server.interval_s
        if now >= self._sighted_at + 2 * interval:  # nothing seen for a whole window
            self._sighted_at = NEVER
            return False
        return now >= self._sighted_at + interval - TOLERANCE_S

    def block_for(self, seconds: float) -> None:
        """Hand out no permit for ``seconds`` (the server said to back off)."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)
        self._changed.set()

    async def acquire(self) -> None:
        """Wait until every window has a permit free and take them."""
        await acquire_when_free(self.try_acquire, self._changed)


class PrioritySlots:
    """A semaphore whose waiters are served lowest priority number first (FIFO within one).

    The global cap on requests in flight. Why priority rather than FIFO: with hundreds of
    locations competing, FIFO hands each location a sliver of the capacity, so every
    location's burst is smeared over many seconds. Serving the locations that started first
    keeps each location's burst compact and its span close to the ideal, and lets early
    locations finish early, while the total throughput is the same.
    """

    def __init__(self, slots: int) -> None:
        self._capacity = slots
        self._in_use = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def capacity(self) -> int:
        return self._capacity

    def resize(self, slots: int) -> None:
        """Allow ``slots`` at once from now on: more wakes waiters at once; fewer takes
        effect as slots come back (nothing in use is taken away)."""
        self._capacity = max(1, slots)
        self._hand_over()

    async def acquire(self, priority: int = 0) -> None:
        if self._in_use < self._capacity and not self._waiters:
            self._in_use += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (priority, self._seq, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            raise

    def release(self) -> None:
        self._in_use -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        """Give free slots straight to the waiters, lowest priority number first."""
        while self._waiters and self._in_use < self._capacity:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                self._in_use += 1
                future.set_result(None)

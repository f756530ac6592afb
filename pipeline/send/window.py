"""One window of a rate limit: never more than N requests in any T seconds.

A window of N per T seconds hands out ``N`` permits. A permit is held while its request is
in flight and, once the answer is in, rests for ``T`` seconds before it can start another
request. Why count from the *answer* rather than from the start: the API counts requests when
they *arrive*, which is somewhere between our send and our receipt of the answer. Two
requests on the same permit therefore arrive more than ``T`` apart, so no window of ``T``
seconds on the server can hold more than ``N`` of them, whatever the network jitter. The cost
is one round trip per window (80 ms in 10 s is 0.8%), and bursting is kept: all ``N`` permits
are free at the start.

The arithmetic is synchronous, O(log n) per permit it moves, and takes its time from an
injected clock, so it is unit-tested without sleeping; ``acquire`` is the async wrapper.
``limiter.LocationLimiter`` drives two of these at once for a location.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
from collections.abc import Callable

from pipeline.core.values import PUBLISHED_RATE

# The rest start of a permit never used: free under any interval.
NEVER = -math.inf
_COMPACT_MIN = 256  # idle runs below which _compact is not worth running
# A wait this short counts as none. Rest starts plus intervals are float sums: a permit due
# "now" can come out 1e-15 s in the future, and a loop whose clock moves in steps (a
# virtual clock in tests, uvloop's millisecond clock) would wake, find it still not due,
# and spin. A microsecond early in a 10 s window is far inside a round trip's margin.
TOLERANCE_S = 1e-6


# What a location is assumed to allow until its first answer says: HighLevel's published
# limit (the one place the sender and the limiter take it from).
DEFAULT_SERVER_LIMIT = PUBLISHED_RATE


class WindowLimiter:
    """One window: at most ``max_requests`` requests per ``interval_s`` seconds.

    Every permit that is not in flight is kept with its *rest start* (the time of the answer
    that last freed it; ``-inf`` if never used), in a heap of ``(rest_start, count)`` runs;
    it is free once ``rest_start + interval_s <= now``, with the interval in force *now*.
    Keeping the rest start rather than the end is what lets the window follow the server:

    - A changed interval applies to every permit not in flight, each measured from its own
      rest start: a shorter one frees resting permits at ``rest_start + new`` (never
      earlier), a longer one holds back resting and even already free permits until
      ``rest_start + new``. Both keep "one arrival per permit per window" true for the
      window just announced, which counts the arrivals we made before the announcement too.
      (Lengthening only the rests that start from now on would let a permit start again
      less than the new interval after its last arrival: a burst of 429s right after the
      change.) What cannot be undone: requests started before a longer interval was
      announced were paced by the shorter one. Shortening is done for the server's window
      only, because the server said so; the user's ceiling never changes.
    - A lower max retires the idle permits with the earliest rest start first (never used,
      then free, then resting), and if that is not enough, permits in flight as they come
      back (``_surplus``; while it is owed no permit is idle, so nothing starts). Retired
      permits are remembered with their rest starts, and every retired rest start is <= the
      rest start of every permit still in use: a permit starting at ``t`` has rested since
      ``s <= t - T``, so every retired permit's last arrival is before ``t - T`` and outside
      the window. That is why every window of ``T`` ending at a start made after the change
      holds no more than the new max, even a window reaching back before the change.
    - A higher max first cancels retirements still owed (those permits rest as usual when
      answered), then brings retired permits back *latest rest start first, with their
      rest starts* (reviving the earliest ones would leave a retired permit whose arrival
      can share a window with a revived one's next start), and only past every permit ever
      used adds new ones, free at once. So a max that dips and comes back (100, 50, 100)
      gives 100 permits with their histories, never 150 arrivals in one window.

    Runs keep an announcement of a huge max (a sandbox with its limit switched off says
    1,000,000,000) at O(1) memory and time: never-used permits are one run, and used permits
    that are free again are merged now and then (``_compact``), so the heap holds about the
    permits answered within the last interval, not every request ever made.
    """

    def __init__(
        self, max_requests: int, interval_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_requests < 1 or not interval_s > 0:
            raise ValueError("max_requests and interval_s must be positive")
        self._max = max_requests
        self._interval = interval_s
        self._clock = clock
        self._idle: list[tuple[float, int]] = [(NEVER, max_requests)]  # heap of runs
        self._compact_at = _COMPACT_MIN  # merge the free runs when the heap grows past this
        self._retired: list[tuple[float, int]] = []  # runs, rest starts non-decreasing
        self._in_flight = 0
        self._surplus = 0  # permits in flight to retire when they come back
        # The latest rest start of a permit taken since none was in flight: ``cancel`` does
        # not know which permit comes back, and gives it this (no earlier) rest start.
        self._lent_max = NEVER
        self._blocked_until = NEVER  # no permit is handed out before this (server said wait)
        self._changed = asyncio.Event()

    @property
    def max_requests(self) -> int:
        return self._max

    @property
    def interval_s(self) -> float:
        return self._interval

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # -- one window alone (as the unit tests drive it; in a run, LocationLimiter drives its
    # windows through the mechanism below) -----------------------------------------------

    def try_acquire(self) -> float | None:
        """Take a permit if one is free now and return 0.0.

        Otherwise return how many seconds until one frees up, or None when every permit is
        in flight (one frees only when an answer comes in).
        """
        now = self._clock()
        if self._blocked_until - now > TOLERANCE_S:
            return self._blocked_until - now
        wait = self._wait(now)
        if wait == 0.0:
            self._take(now)
        return wait

    def release(self) -> None:
        """The request on a permit has been answered (or failed): rest the permit for T."""
        self._give_back(self._clock())

    def cancel(self) -> None:
        """A permit was taken but no request was sent on it: it is free again at once.

        (Unless the interval has grown since it was taken, or a lower max retired a permit
        used later than it: then it rests until that rest start plus the interval.)
        """
        self._give_back(self._cancel_rest_start())

    def adopt(self, max_requests: int | None = None, interval_s: float | None = None) -> None:
        """Follow a limit both ways: ``max_requests`` per ``interval_s`` from now on (a None
        keeps the current value). See the class docstring for what moves and why."""
        if (max_requests is not None and max_requests < 1) or (
            interval_s is not None and not interval_s > 0
        ):
            raise ValueError("max_requests and interval_s must be positive")
        if interval_s is not None:
            self._interval = interval_s
        if max_requests is not None and max_requests < self._max:
            owed = self._max - max_requests
            self._surplus += owed - self._retire(owed)
        elif max_requests is not None and max_requests > self._max:
            more = max_requests - self._max
            kept = min(more, self._surplus)
            self._surplus -= kept
            self._revive(more - kept)
        if max_requests is not None:
            self._max = max_requests
        self._changed.set()

    def observe(
        self,
        *,
        max_requests: int | None,
        interval_ms: int | None,
        remaining: int | None,
        follow: bool = False,
        sent_at: float | None = None,
    ) -> int:
        """Steer by what the server says in its rate headers; returns how many permits it
        rested because another client spends the budget (0 when nothing says so).

        ``follow``: adopt the announced ``X-RateLimit-Max`` and interval whether they are
        lower or higher than now (``LocationLimiter`` does this for the server's window).
        Without it, only tighten: a lower max, a longer interval.

        ``X-RateLimit-Remaining: R`` while we hold more than ``R`` idle permits that were
        free when the request was sent (``sent_at``; now if not given) means someone else
        spends this location's budget: all but ``R`` of them rest for one interval. This is
        how a location's first answer (its request went alone) sizes the first burst to the
        budget left, after a crash or beside another client, and how every later answer
        keeps the run just under what is left rather than sending into 429s.
        """
        interval_s = interval_ms / 1000.0 if interval_ms is not None and interval_ms > 0 else None
        new_max = max_requests if max_requests is not None and max_requests > 0 else None
        if not follow:
            if interval_s is not None and interval_s <= self._interval:
                interval_s = None
            if new_max is not None and new_max >= self._max:
                new_max = None
        if interval_s == self._interval:
            interval_s = None  # the limit as it is: nothing to adopt (every answer says it)
        if new_max == self._max:
            new_max = None
        if new_max is not None or interval_s is not None:
            self.adopt(new_max, interval_s)
        if remaining is not None and remaining >= 0:
            # Permits already free when this request was sent last carried requests that
            # arrived more than an interval before it, outside the server's window; so when
            # we are the location's only client, there are never more of them than the
            # server says remain (the server's window holds at most our other permits' and
            # this request's arrivals). More of them than ``remaining`` means another
            # client's requests fill the difference: that many rest one interval (their
            # arrivals leave the server's window within one). Permits freed while the
            # request was in flight are left out: their requests may be what the server
            # counted (at a window's turn, the first answer of the new window can say 0 just
            # as the old window's permits come free).
            now = self._clock()
            free_at = now if sent_at is None else min(sent_at, now)
            return self._rest_free(now, free_at=free_at, keep=remaining)
        return 0

    def block_for(self, seconds: float) -> None:
        """Hand out no permit for ``seconds`` (the server said to back off)."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)
        self._changed.set()

    async def acquire(self) -> None:
        """Wait until a permit is free and take it."""
        await acquire_when_free(self.try_acquire, self._changed)

    # -- the mechanism (module-internal: LocationLimiter drives several windows) ---------

    def _wait(self, now: float) -> float | None:
        """0.0 if a permit is free at ``now``, else seconds until one is, None if none idle."""
        if not self._idle:
            return None
        free_at = self._idle[0][0] + self._interval
        return 0.0 if free_at - now <= TOLERANCE_S else free_at - now

    def _take(self, now: float) -> None:
        """Take the idle permit with the earliest rest start (``_wait`` said it is free)."""
        rest_start, count = self._idle[0]
        if count == 1:
            heapq.heappop(self._idle)
        else:
            self._idle[0] = (rest_start, count - 1)  # a smaller key at the root: still a heap
        self._lent_max = max(self._lent_max, rest_start)
        self._in_flight += 1
        if len(self._idle) > self._compact_at:
            self._compact(now)

    def _compact(self, now: float) -> None:
        """Merge the used permits free at ``now`` into one run at their latest rest start.

        Without it a max far above the traffic (a sandbox announcing 1,000,000,000) would
        keep one run per request ever answered: permits are taken earliest rest start first,
        so the never-used run is drawn on and the used ones are never taken again. A later
        rest start is only ever more cautious (a longer interval rests them a little longer,
        the retired-before-in-use order holds), and under the interval in force nothing
        changes: they were free and stay free. Runs when the heap has doubled: amortized
        O(1) a permit.
        """
        kept: list[tuple[float, int]] = []
        fresh = merged = 0
        latest = NEVER
        for rest_start, count in self._idle:
            if rest_start == NEVER:
                fresh += count
            elif rest_start + self._interval <= now:
                merged += count
                latest = max(latest, rest_start)
            else:
                kept.append((rest_start, count))
        if fresh:
            kept.append((NEVER, fresh))
        if merged:
            kept.append((latest, merged))
        heapq.heapify(kept)
        self._idle = kept
        self._compact_at = max(_COMPACT_MIN, 2 * len(kept))

    def _give_back(self, rest_start: float) -> None:
        """A permit in flight comes back with ``rest_start`` (retired if one is owed)."""
        self._in_flight -= 1
        heapq.heappush(self._idle, (rest_start, 1))
        if self._surplus:
            self._surplus -= 1
            self._retire(1)  # the idle permit with the earliest rest start: this one
        if not self._in_flight:
            self._lent_max = NEVER
        self._changed.set()

    def _cancel_rest_start(self) -> float:
        """No earlier than the permit's own rest start, nor than any retired permit's."""
        return max(self._lent_max, self._retired[-1][0] if self._retired else NEVER)

    def _retire(self, wanted: int) -> int:
        """Retire up to ``wanted`` idle permits, earliest rest start first; return how many."""
        done = 0
        while done < wanted and self._idle:
            rest_start, count = self._idle[0]
            taken = min(count, wanted - done)
            if taken == count:
                heapq.heappop(self._idle)
            else:
                self._idle[0] = (rest_start, count - taken)
            if self._retired and self._retired[-1][0] == rest_start:
                self._retired[-1] = (rest_start, self._retired[-1][1] + taken)
            else:
                self._retired.append((rest_start, taken))
            done += taken
        return done

    def _revive(self, wanted: int) -> None:
        """Bring back ``wanted`` permits: retired ones, latest rest start first, then new."""
        while wanted and self._retired:
            rest_start, count = self._retired[-1]
            taken = min(count, wanted)
            if taken == count:
                self._retired.pop()
            else:
                self._retired[-1] = (rest_start, count - taken)
            heapq.heappush(self._idle, (rest_start, taken))
            wanted -= taken
        if wanted:
            heapq.heappush(self._idle, (NEVER, wanted))

    def _rest_free(self, now: float, *, free_at: float, keep: int = 0) -> int:
        """All but ``keep`` of the permits already free at ``free_at`` rest one interval
        from ``now`` (the ``keep`` rested longest stay free); returns how many rest."""
        if keep >= self._max:
            # No more than the max are ever idle: none can rest. (A limit far above the
            # traffic, as the sandbox's 10^9, would otherwise lift and put back every used
            # permit of the last interval on every answer.)
            return 0
        free: list[tuple[float, int]] = []
        total = 0
        while self._idle and self._idle[0][0] + self._interval <= free_at + TOLERANCE_S:
            run = heapq.heappop(self._idle)
            free.append(run)
            total += run[1]
        rest = total - keep
        if rest <= 0:
            for run in free:
                heapq.heappush(self._idle, run)
            return 0
        for rest_start, count in free:  # earliest rest start first: these stay free
            kept = min(count, keep)
            if kept:
                heapq.heappush(self._idle, (rest_start, kept))
            keep -= kept
        heapq.heappush(self._idle, (now, rest))
        return rest


async def acquire_when_free(
    try_acquire: Callable[[], float | None], changed: asyncio.Event
) -> None:
    """Wait until ``try_acquire`` succeeds.

    Waits for the time it names or for any change (an answer, a cancel, an announcement),
    whichever comes first: a higher max announced while we sleep on a resting permit must
    not cost the rest of that sleep.
    """
    while True:
        wait = try_acquire()
        if wait == 0.0:
            return
        changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):  # None: until a change
                await changed.wait()

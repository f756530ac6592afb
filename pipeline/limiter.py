"""Per-location rate limiting: never more than N requests in any window of T seconds.

A window of N per T seconds hands out ``N`` permits. A permit is held while its request is
in flight and, once the answer is in, rests for ``T`` seconds before it can start another
request. Why count from the *answer* rather than from the start: the API counts requests when
they *arrive*, which is somewhere between our send and our receipt of the answer. Two
requests on the same permit therefore arrive more than ``T`` apart, so no window of ``T``
seconds on the server can hold more than ``N`` of them, whatever the network jitter. The cost
is one round trip per window (80 ms in 10 s is 0.8%), and bursting is kept: all ``N`` permits
are free at the start.

A location is under two limits at once: the one the server announces in its rate headers
(``X-RateLimit-Max`` per ``X-RateLimit-Interval-Milliseconds``), which may go down or up,
and the user's ``--rate``, a fixed ceiling. They are two windows, never merged into one:
10 per 1 s under a server's 100 per 10 s must run at about 10 a second, and merging the two
into "the smaller count over the longer interval" (10 per 10 s) would be ten times slower
than either. ``LocationLimiter`` holds both ``WindowLimiter``s and takes a permit of each
for every request, all or none.

The arithmetic (``try_acquire``/``release``/``observe``) is synchronous, O(log n) per
permit it moves, and takes its time from an injected clock, so it is unit-tested without
sleeping; ``acquire`` is the async wrapper.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pipeline.constants import DEFAULT_RATE_INTERVAL_S, DEFAULT_RATE_MAX

# The rest start of a permit never used: free under any interval.
_NEVER = -math.inf
_COMPACT_MIN = 256  # idle runs below which _compact is not worth running
# A wait this short counts as none. Rest starts plus intervals are float sums: a permit due
# "now" can come out 1e-15 s in the future, and a loop whose clock moves in steps (a
# virtual clock in tests, uvloop's millisecond clock) would wake, find it still not due,
# and spin. A microsecond early in a 10 s window is far inside a round trip's margin.
_TOLERANCE_S = 1e-6


class RateLike(Protocol):
    """Anything with ``max_requests`` per ``interval_s`` (``settings.Rate``, ``Limit``)."""

    @property
    def max_requests(self) -> int: ...

    @property
    def interval_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``max_requests`` per ``interval_s`` seconds."""

    max_requests: int
    interval_s: float

    def __post_init__(self) -> None:
        if self.max_requests < 1 or not self.interval_s > 0:
            raise ValueError("max_requests and interval_s must be positive")

    @classmethod
    def of(cls, rate: RateLike | tuple[int, float]) -> Limit:
        if isinstance(rate, tuple):
            return cls(*rate)
        return cls(rate.max_requests, rate.interval_s)


DEFAULT_SERVER_LIMIT = Limit(DEFAULT_RATE_MAX, DEFAULT_RATE_INTERVAL_S)
# How long a location stays careful after the last sign of another client spending its
# budget: long enough to span the window turns where that client's share comes back.
CONTENDED_WINDOWS = 3
# While contended, how long (a share of the interval) after an answer that found the window
# full before one request goes alone to ask what is left: the window frees as the other
# client's requests age out, at a pace no answer tells.
QUIET_FRACTION = 0.2


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
        self._idle: list[tuple[float, int]] = [(_NEVER, max_requests)]  # heap of runs
        self._compact_at = _COMPACT_MIN  # merge the free runs when the heap grows past this
        self._retired: list[tuple[float, int]] = []  # runs, rest starts non-decreasing
        self._in_flight = 0
        self._surplus = 0  # permits in flight to retire when they come back
        # The latest rest start of a permit taken since none was in flight: ``cancel`` does
        # not know which permit comes back, and gives it this (no earlier) rest start.
        self._lent_max = _NEVER
        self._blocked_until = _NEVER  # no permit is handed out before this (server said wait)
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
        if self._blocked_until - now > _TOLERANCE_S:
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
        await _acquire(self.try_acquire, self._changed)

    # -- the mechanism (module-internal: LocationLimiter drives several windows) ---------

    def _wait(self, now: float) -> float | None:
        """0.0 if a permit is free at ``now``, else seconds until one is, None if none idle."""
        if not self._idle:
            return None
        free_at = self._idle[0][0] + self._interval
        return 0.0 if free_at - now <= _TOLERANCE_S else free_at - now

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
        latest = _NEVER
        for rest_start, count in self._idle:
            if rest_start == _NEVER:
                fresh += count
            elif rest_start + self._interval <= now:
                merged += count
                latest = max(latest, rest_start)
            else:
                kept.append((rest_start, count))
        if fresh:
            kept.append((_NEVER, fresh))
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
            self._lent_max = _NEVER
        self._changed.set()

    def _cancel_rest_start(self) -> float:
        """No earlier than the permit's own rest start, nor than any retired permit's."""
        return max(self._lent_max, self._retired[-1][0] if self._retired else _NEVER)

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
            heapq.heappush(self._idle, (_NEVER, wanted))

    def _rest_free(self, now: float, *, free_at: float, keep: int = 0) -> int:
        """All but ``keep`` of the permits already free at ``free_at`` rest one interval
        from ``now`` (the ``keep`` rested longest stay free); returns how many rest."""
        free: list[tuple[float, int]] = []
        total = 0
        while self._idle and self._idle[0][0] + self._interval <= free_at + _TOLERANCE_S:
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
        server: RateLike | tuple[int, float] = DEFAULT_SERVER_LIMIT,
        ceiling: RateLike | tuple[int, float] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assumed = Limit.of(server)
        self._server = WindowLimiter(assumed.max_requests, assumed.interval_s, clock=clock)
        self._ceiling: WindowLimiter | None = None
        self._windows: tuple[WindowLimiter, ...] = (self._server,)
        if ceiling is not None:
            fixed = Limit.of(ceiling)
            self._ceiling = WindowLimiter(fixed.max_requests, fixed.interval_s, clock=clock)
            self._windows = (self._server, self._ceiling)
        self._clock = clock
        self._blocked_until = _NEVER
        self._changed = asyncio.Event()
        self._contended_until = _NEVER  # another client spends the budget until then
        # When an answer first showed requests not ours in the window (``_sighted``), and
        # whether the request that asks if they persist is on its way (its send time).
        self._sighted_at = _NEVER
        self._asking_since: float | None = None
        self._known_since = math.inf  # the first answer's time: limits known from then on
        self._budget = 0  # while contended: requests that may start before the next answer
        self._budget_sent_at = _NEVER  # when the request whose answer set it was sent
        self._answers = 0
        # While contended, after an answer that found the window full: no request goes
        # alone to ask again before this (each such request would be a 429).
        self._quiet_until = _NEVER
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
    def server_limit(self) -> Limit:
        """The server's window as last announced (or assumed)."""
        return Limit(self._server.max_requests, self._server.interval_s)

    @property
    def ceiling(self) -> Limit | None:
        if self._ceiling is None:
            return None
        return Limit(self._ceiling.max_requests, self._ceiling.interval_s)

    def try_acquire(self) -> float | None:
        """Take a permit of every window if each has one free now and return 0.0.

        Otherwise take nothing and return how many seconds until every window has one free
        (and the block, if any, is over), or None when some window has all its permits in
        flight (only an answer can free one).
        """
        now = self._clock()
        wait = self._blocked_until - now
        wait = wait if wait > _TOLERANCE_S else 0.0
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
            if self._quiet_until - now > _TOLERANCE_S:
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
            self._sighted_at = _NEVER  # asked, and nobody else is there: full bursts again
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
        persists = sent_at >= self._sighted_at + interval - _TOLERANCE_S
        if refused or contended or persists:
            self._contended_until = now + CONTENDED_WINDOWS * interval

    def _must_ask(self, now: float) -> bool:
        """Whether a request now must go alone to ask if the other client seen in the
        last window persists (see ``_sighted``)."""
        if self._sighted_at == _NEVER or now < self._contended_until:
            return False
        interval = self._server.interval_s
        if now >= self._sighted_at + 2 * interval:  # nothing seen for a whole window
            self._sighted_at = _NEVER
            return False
        return now >= self._sighted_at + interval - _TOLERANCE_S

    def block_for(self, seconds: float) -> None:
        """Hand out no permit for ``seconds`` (the server said to back off)."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)
        self._changed.set()

    async def acquire(self) -> None:
        """Wait until every window has a permit free and take them."""
        await _acquire(self.try_acquire, self._changed)


async def _acquire(try_acquire: Callable[[], float | None], changed: asyncio.Event) -> None:
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

"""Per-location rate limiting: never more than N requests in any window of T seconds.

The limiter hands out ``N`` permits. A permit is held while its request is in flight and, once
the answer is in, rests for ``T`` seconds before it can start another request. Why count from
the *answer* rather than from the start: the API counts requests when they *arrive*, which
is somewhere between our send and our receipt of the answer. Two requests on the same permit
therefore arrive more than ``T`` apart, so no window of ``T`` seconds on the server can hold
more than ``N`` of them, whatever the network jitter. The cost is one round trip per window
(80 ms in 10 s is 0.8%), and bursting is kept: all ``N`` permits are free at the start.

The arithmetic (``try_acquire``/``release``) is synchronous and takes its time from an
injected clock, so it is unit-tested without sleeping; ``acquire`` is the async wrapper.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable


class WindowLimiter:
    def __init__(
        self, max_requests: int, interval_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_requests < 1 or interval_s <= 0:
            raise ValueError("max_requests and interval_s must be positive")
        self.max_requests = max_requests
        self.interval_s = interval_s
        self._clock = clock
        self._free = max_requests  # permits usable right now
        self._resting: list[float] = []  # heap of times at which resting permits become free
        self._in_flight = 0
        self._surplus = 0  # permits to retire because the server announced a lower max
        self._blocked_until = 0.0  # no permit is handed out before this (server said wait)
        self._changed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self) -> float | None:
        """Take a permit if one is free now and return 0.0.

        Otherwise return how many seconds until one frees up, or None when every permit is
        in flight (one frees only when an answer comes in).
        """
        now = self._clock()
        if now < self._blocked_until:
            return self._blocked_until - now
        while self._resting and self._resting[0] <= now:
            heapq.heappop(self._resting)
            self._free += 1
        if self._free > 0:
            self._free -= 1
            self._in_flight += 1
            return 0.0
        if self._resting:
            return self._resting[0] - now
        return None

    def release(self) -> None:
        """The request on a permit has been answered (or failed): rest the permit for T."""
        self._in_flight -= 1
        if self._surplus > 0:
            self._surplus -= 1  # retired: the server allows fewer than we started with
        else:
            heapq.heappush(self._resting, self._clock() + self.interval_s)
        self._changed.set()

    def cancel(self) -> None:
        """A permit was taken but no request was sent on it: it is free again at once."""
        self._in_flight -= 1
        self._free += 1
        self._changed.set()

    def observe(
        self, *, max_requests: int | None, interval_ms: int | None, remaining: int | None
    ) -> None:
        """Tighten to what the server says in its rate headers; never loosen.

        A lower ``X-RateLimit-Max`` retires permits, a longer interval lengthens every rest,
        and ``X-RateLimit-Remaining: 0`` while we hold free permits (someone else is using
        this location's budget) rests them for one interval.
        """
        if interval_ms is not None and interval_ms > 0 and interval_ms / 1000.0 > self.interval_s:
            self.interval_s = interval_ms / 1000.0
        if max_requests is not None and 0 < max_requests < self.max_requests:
            retire = self.max_requests - max_requests
            self.max_requests = max_requests
            taken = min(retire, self._free)
            self._free -= taken
            retire -= taken
            while retire and self._resting:
                heapq.heappop(self._resting)
                retire -= 1
            self._surplus += retire
        if remaining == 0 and self._free:
            # The server counted a full window when it received this request, yet we hold
            # free permits: someone else uses this location's budget. Rest them one interval.
            # (A partial figure is not used: it was computed at receipt, and permits freed
            # since would be mistaken for spent ones.)
            rest_until = self._clock() + self.interval_s
            for _ in range(self._free):
                heapq.heappush(self._resting, rest_until)
            self._free = 0

    def block_for(self, seconds: float) -> None:
        """Hand out no permit for ``seconds`` (the server said to back off)."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    async def acquire(self) -> None:
        """Wait until a permit is free and take it."""
        while True:
            wait = self.try_acquire()
            if wait == 0.0:
                return
            self._changed.clear()
            if wait is None:
                await self._changed.wait()
            else:
                await asyncio.sleep(wait)


class PrioritySlots:
    """A semaphore whose waiters are served lowest priority number first (FIFO within one).

    The global cap on requests in flight. Why priority rather than FIFO: with hundreds of
    locations competing, FIFO hands each location a sliver of the capacity, so every
    location's burst is smeared over many seconds. Serving the locations that started first
    keeps each location's burst compact and its span close to the ideal, and lets early
    locations finish early, while the total throughput is the same.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = 0

    async def acquire(self, priority: int = 0) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
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
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # hand the slot straight to the next waiter
                return
        self._free += 1

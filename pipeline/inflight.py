"""How many requests may be in flight at once: sized to the latency, not fixed.

Each location's limiter keeps the API safe; this limit only protects our own machine and
the network between. Fixed, it becomes the bottleneck at real-world latency: by Little's
law, 64 requests in flight at 80 ms carry at most 800 requests a second, while 200
locations at HighLevel's limit allow 2,000, and at 600 ms 64 carry about 100.

So the limit is a controller, in the manner of TCP's congestion window and Netflix's
concurrency-limits: it grows while answers come back at steady latency, and shrinks when the
latency climbs or connections fail, between a floor and a ceiling that protect the machine
(file descriptors, the connection pool, memory per request).

- **Slow start**: while nothing has gone wrong, every answer that came back while the limit
  was in use adds one, so the limit doubles each round trip: 64 to 2,048 in five.
- **Congestion**: an answer slower than ``tolerance`` times the base latency (the fastest
  seen lately), or a request that got no answer at all (timeout, connection refused or
  dropped), cuts the limit by ``backoff``, at most once per round trip, and ends slow start.
- **Avoidance** after that: each answer while the limit is in use adds 0.1, about +10% a
  round trip (a round trip brings about ``limit`` answers), so the limit keeps probing.

A 429 is not a signal here: it is the per-location limiter's business, and says nothing
about our machine. The arithmetic is synchronous and takes its time from an injected clock,
so a simulated latency curve drives it in a unit test.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_INITIAL = 64
DEFAULT_FLOOR = 16
DEFAULT_CEILING = 4096
BASE_WINDOW_S = 10.0  # the base latency is the fastest answer of the last one or two windows


@dataclass
class Gauge:
    """Requests in flight now and the limit now, for the progress display: the sender
    writes, the display's thread reads (single ints: no lock needed)."""

    in_flight: int = 0
    limit: int = 0


class InFlightLimit:
    def __init__(
        self,
        *,
        initial: int = DEFAULT_INITIAL,
        floor: int = DEFAULT_FLOOR,
        ceiling: int = DEFAULT_CEILING,
        tolerance: float = 2.0,
        backoff: float = 0.75,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError("need 1 <= floor <= ceiling")
        self.floor = floor
        self.ceiling = ceiling
        self._limit = float(min(max(initial, floor), ceiling))
        self._tolerance = tolerance
        self._backoff = backoff
        self._clock = clock
        self._slow_start = True
        self._base = math.inf  # fastest answer of the current window
        self._previous_base = math.inf  # ... and of the window before
        self._window_ends = clock() + BASE_WINDOW_S
        self._last_cut = -math.inf

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def base_latency_s(self) -> float:
        """The fastest answer of the last one or two windows (inf before any answer)."""
        return min(self._base, self._previous_base)

    def on_answer(self, latency_s: float, *, in_flight: int, failed: bool) -> None:
        """One request ended: ``latency_s`` after it was sent; ``failed``: no HTTP answer
        (a timeout or a connection failure); ``in_flight``: requests in flight when it
        ended, itself included (growth needs the limit to have been in use)."""
        now = self._clock()
        if now >= self._window_ends:
            self._previous_base, self._base = self._base, math.inf
            self._window_ends = now + BASE_WINDOW_S
        if not failed:
            self._base = min(self._base, latency_s)
        base = self.base_latency_s
        congested = failed or (base < math.inf and latency_s > base * self._tolerance + 0.005)
        if congested:
            round_trip = base if base < math.inf else latency_s
            if now - self._last_cut >= round_trip:
                self._limit = max(float(self.floor), self._limit * self._backoff)
                self._last_cut = now
            self._slow_start = False
            return
        if in_flight < 0.8 * self._limit:
            return  # the limit was not what held us back: no evidence that more would help
        step = 1.0 if self._slow_start else 0.1  # a round trip holds ~limit answers
        self._limit = min(float(self.ceiling), self._limit + step)


# Descriptors kept for everything but connections: the journal, logs, the input's files.
RESERVED_FDS = 64


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit on open files toward the hard one (each request in flight
    holds a connection); return the number of connections the limit then allows."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows has no such limit
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < target:
        new_soft = target if hard == resource.RLIM_INFINITY else min(target, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = new_soft
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_FDS))

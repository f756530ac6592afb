"""How many requests may be in flight at once: sized to the latency, not fixed.

Each location's limiter keeps the API safe; this limit only protects our own machine and
the path between. Fixed, it becomes the bottleneck at real-world latency: by Little's law,
64 requests in flight at 80 ms carry at most 800 requests a second, while 200 locations at
HighLevel's limit allow 2,000, and at 600 ms 64 carry about 100.

So the limit is a controller. It grows while the limit is what holds requests back, and it
shrinks only for evidence that *our* side or the path is saturating, never for latency that
merely varies: every real network's answers spread (uniformly +-50%, or log-normally with a
p99 five times the median), and an earlier rule that read "slower than twice the fastest
answer lately" as congestion held the limit at its floor for whole runs (27 requests a
second where 60 locations allowed 600).

- **Slow start**: while nothing has gone wrong, every answer that came back while the limit
  was in use adds one, so the limit doubles each round trip: 64 to 2,048 in five.
- **Avoidance** after a confirmed congestion: each answer while the limit is in use adds
  0.1, about +10% a round trip (a round trip brings about ``limit`` answers).
- **Failures**: a request that got no answer at all (timeout, connection refused or reset,
  no file descriptor left) cuts the limit by ``backoff``, at most once per round trip.
- **Latency that follows our load**: answers are taken in blocks of ``block``; a block's
  median (one slow answer moves it not at all) is compared with the *baseline*, the lowest
  block median since the baseline was last set. A block median over ``tolerance`` times the
  baseline while the limit was in use is only a suspicion, because a server that slows down
  on its own raises the latency just the same, and with a steady demand raises the requests
  in flight with it (Little's law). So the suspicion is tested the one way that tells the
  two apart: cut the limit by ``backoff`` and look at the answers to requests sent *after*
  the cut. If their median fell (by a tenth, or back under the tolerance), the latency
  followed our load: the cut stands and avoidance begins. If it did not, the server or the
  path slowed regardless of us: the cut is undone, the baseline moves to the new latency,
  and slow start resumes, so the limit reaches demand x the new latency within a few round
  trips.
- **The event loop's own lag** (``watch_loop_lag``): a loop that runs late is this machine
  saturating its CPU; more requests in flight would only queue inside our own process, so
  the limit does not grow while the lag stays over ``LAG_HOLD_S``.

A 429 is not a signal here: it is the per-location limiter's business, and says nothing
about our machine. The arithmetic is synchronous and takes its time from an injected clock,
so simulated latency curves drive it in unit tests (tests/test_inflight.py).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_INITIAL = 64
DEFAULT_FLOOR = 16
DEFAULT_CEILING = 4096
DEFAULT_BLOCK = 64  # answers a median is taken over: a median of 64 log-normal(0.7) answers
#                     varies by about 11% (1 sigma), so a rise of 2x is no accident
PROBE_PATIENCE = 8  # round trips a verdict waits for a full block, then judges on fewer
PROBE_FEWEST = 8  # ... but on no fewer answers than this
FELL = 0.9  # after a cut, a median at most this share of the one that prompted it fell
LAG_HOLD_S = 0.05  # the event loop this late (smoothed): growth holds
LAG_SAMPLE_S = 0.05  # how often the loop's lag is sampled
_LAG_SMOOTHING = 0.2


@dataclass
class Gauge:
    """Requests in flight now and the limit now, for the progress display: the sender
    writes, the display's thread reads (single ints: no lock needed)."""

    in_flight: int = 0
    limit: int = 0


@dataclass(slots=True)
class _Probe:
    """A cut made on a suspicion, awaiting its verdict."""

    cut_at: float  # answers to requests sent after this tell
    limit_before: float
    median_before: float  # the block median that prompted the cut
    after: list[float] = field(default_factory=list)


class InFlightLimit:
    def __init__(
        self,
        *,
        initial: int = DEFAULT_INITIAL,
        floor: int = DEFAULT_FLOOR,
        ceiling: int = DEFAULT_CEILING,
        tolerance: float = 2.0,
        backoff: float = 0.75,
        block: int = DEFAULT_BLOCK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError("need 1 <= floor <= ceiling")
        if block < 1 or not 0 < backoff < 1 or not tolerance > 1:
            raise ValueError("need block >= 1, 0 < backoff < 1, tolerance > 1")
        self.floor = floor
        self.ceiling = ceiling
        self._limit = float(min(max(initial, floor), ceiling))
        self._tolerance = tolerance
        self._backoff = backoff
        self._block_size = block
        self._clock = clock
        self._slow_start = True
        self._block: list[float] = []  # latencies of the block being filled
        self._block_in_use = 0  # answers of that block that came back with the limit in use
        self._baseline = math.inf  # the lowest block median since the baseline was set
        self._median = math.inf  # the last block's median
        self._probe: _Probe | None = None
        self._last_cut = -math.inf
        # (time, limit) at recent block ends: what the limit was when a block was sent.
        self._history: deque[tuple[float, float]] = deque(maxlen=256)
        self._lag_s = 0.0
        self.cuts = 0  # for the summary and the tests: how often the limit was cut
        self.rebases = 0  # ... and how often a suspected congestion proved to be the server's

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def baseline_s(self) -> float:
        """The latency taken as normal: the lowest block median (inf before one)."""
        return self._baseline

    @property
    def loop_lag_s(self) -> float:
        return self._lag_s

    def on_loop_lag(self, lag_s: float) -> None:
        """One sample of how late the event loop ran a timer (``watch_loop_lag``)."""
        self._lag_s += _LAG_SMOOTHING * (max(0.0, lag_s) - self._lag_s)

    def on_answer(self, latency_s: float, *, in_flight: int, failed: bool) -> None:
        """One request ended: ``latency_s`` after it was sent; ``failed``: no HTTP answer
        (a timeout or a connection failure); ``in_flight``: requests in flight when it
        ended, itself included (growth needs the limit to have been in use)."""
        now = self._clock()
        if failed:
            self._probe = None  # certain evidence: no need to test a suspicion
            self._cut(now, latency_s)
            self._slow_start = False
            return
        in_use = in_flight >= 0.8 * self._limit
        if self._probe is not None:
            self._test(self._probe, now, latency_s)
        else:
            self._block.append(latency_s)
            self._block_in_use += in_use
            if len(self._block) >= self._block_size:
                self._close_block()
        if self._probe is None and in_use and self._lag_s <= LAG_HOLD_S:
            step = 1.0 if self._slow_start else 0.1  # a round trip holds ~limit answers
            self._limit = min(float(self.ceiling), self._limit + step)

    # -- the evidence -----------------------------------------------------------------

    def _close_block(self) -> None:
        median = statistics.median(self._block)
        in_use = 2 * self._block_in_use >= len(self._block)
        self._block.clear()
        self._block_in_use = 0
        self._median = median
        now = self._clock()
        if in_use and median > self._tolerance * self._baseline:
            # Cut from the limit the slow answers were sent under, a round trip ago: in slow
            # start it has doubled since, and cutting from today's would test nothing.
            sent_under = self._limit_at(now - median)
            self._probe = _Probe(now, self._limit, median)
            self._cut(now, median, start=min(sent_under, self._limit))
        else:
            self._baseline = min(self._baseline, median)
        self._history.append((now, self._limit))

    def _limit_at(self, when: float) -> float:
        """The limit in force at ``when``, as the history of block ends remembers it."""
        found = self._history[0][1] if self._history else self._limit
        for at, limit in self._history:
            if at > when:
                break
            found = limit
        return found

    def _test(self, probe: _Probe, now: float, latency_s: float) -> None:
        """Collect the answers to requests sent after the probe's cut; judge on a block."""
        if now - latency_s >= probe.cut_at:  # sent before the cut: it tells nothing
            probe.after.append(latency_s)
        if len(probe.after) < self._block_size:
            if now - probe.cut_at < PROBE_PATIENCE * probe.median_before:
                return
            if len(probe.after) < PROBE_FEWEST:  # too few sent since to tell: the load is
                self._probe = None  # low, the limit holds nothing back; the cut stands
                self._slow_start = False
                return
        median = statistics.median(probe.after)
        self._probe = None
        self._median = median
        if median <= FELL * probe.median_before or median <= self._tolerance * self._baseline:
            self._slow_start = False  # ours: the cut stands
            return
        # Not ours: the server or the path slowed whatever we sent.
        self.rebases += 1
        self._baseline = median
        self._limit = max(self._limit, probe.limit_before)
        self._slow_start = True

    def _cut(self, now: float, round_trip_s: float, *, start: float | None = None) -> None:
        """Cut ``start`` (the limit now) by ``backoff``, at most once per round trip
        (answers that left together are one piece of evidence)."""
        round_trip = self._baseline if self._baseline < math.inf else round_trip_s
        if now - self._last_cut < round_trip:
            return
        base = self._limit if start is None else start
        self._limit = max(float(self.floor), base * self._backoff)
        self._last_cut = now
        self.cuts += 1


async def watch_loop_lag(limit: InFlightLimit, every_s: float = LAG_SAMPLE_S) -> None:
    """Sample how late the event loop wakes from a timer, for as long as the run sends."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(every_s)
        limit.on_loop_lag(loop.time() - asked - every_s)


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

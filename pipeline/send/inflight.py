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

- **Slow start**: while the latency is as low as it gets (the last cohort's median within
  ``FLAT`` of the baseline), every answer that came back while the limit was in use adds
  one, so the limit doubles each round trip: 128 to 4,096 in five. It starts at 128: a
  run's first bursts come together (each location's window once its first answer is in:
  60 locations are 6,000 requests), and from 64 it took six round trips to carry them,
  3.6 s at 600 ms where a fixed 2,000 took 1.8 s; starting much higher would lose the look
  at the latency under a light load that the baseline needs.
- **Avoidance** while the median stands above that (nearing a knee), above the level where
  latency last proved to follow our load, or ever after a failure: each answer while the
  limit is in use adds 0.1, about +10% a round trip (a round trip brings about ``limit``
  answers). Three cohorts in a row as fast as ever above that level forget it (the
  handshakes of a run's first connections look like a knee for a moment), and slow start
  resumes.
- **Failures**: a request that got no answer at all (timeout, connection refused or reset,
  no file descriptor left) cuts the limit by ``backoff``, at most once per round trip.
- **Latency that follows our load**: requests are taken in *cohorts* of ``cohort`` sent one
  after another, and a cohort is judged once nearly all of it has ended (``_Cohort`` says
  why not in the order answers arrive). Its median (one slow answer moves it not at all) is
  compared with the *baseline*, the lowest cohort median since the baseline was last set.
  A median over ``tolerance`` times the baseline while the limit was in use is only a
  suspicion, because a server that slows down
  on its own raises the latency just the same, and with a steady demand raises the requests
  in flight with it (Little's law). So the suspicion is tested the one way that tells the
  two apart: cut the limit by ``backoff`` and look at the first cohort sent *after* the
  cut. If their median fell (by a tenth, or back under the tolerance), the latency
  followed our load: the cut stands and avoidance begins. If it did not, the server or the
  path slowed regardless of us: the cut is undone, the baseline moves to the new latency,
  and slow start resumes, so the limit reaches demand x the new latency within a few round
  trips.
- **The event loop's own lag** (``watch_loop_lag``): a loop that runs late is this machine
  saturating its CPU; more requests in flight would only queue inside our own process, so
  the limit does not grow while the lag stays over ``LAG_HOLD_S``.

A 429 is not a signal here: it is the per-location limiter's business, and says nothing
about our machine. The arithmetic is synchronous and takes its time from an injected clock,
so simulated latency curves drive it in unit tests (tests/unit/send/test_inflight.py).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_INITIAL = 128
DEFAULT_FLOOR = 16
DEFAULT_CEILING = 4096
DEFAULT_COHORT = 64  # requests a median is taken over: a median of 64 log-normal(0.7)
#                      times varies by about 11% (1 sigma), so a rise of 2x is no accident
COMPLETE = 0.95  # a cohort is judged once this share of it has ended (the slowest 5% of a
#                  log-normal tail would hold the verdict for five medians)
FEWEST = 16  # answers a cohort's median needs (the rest failed or never came)
KEPT_COHORTS = 256  # cohorts waiting for their answers, at most (older ones are dropped)
FLAT = 1.25  # a cohort's median within this of the baseline: latency as low as it gets
FELL = 0.9  # after a cut, a median at most this share of the one that prompted it fell
LAG_HOLD_S = 0.05  # the event loop this late (smoothed): growth holds
LAG_SAMPLE_S = 0.05  # how often the loop's lag is sampled
_LAG_SMOOTHING = 0.2


@dataclass
class Gauge:
    """Requests in flight now and the limit now, and the rows whose ids are still looked up
    (``lookups``), for the progress display: the sender writes, the display's thread reads
    (single numbers: no lock needed)."""

    in_flight: int = 0
    limit: int = 0
    looking_up: int = 0
    # When the last row waiting for its id is next searched, and the latest retry scheduled
    # (time.monotonic; 0: none). The run ends no sooner: the ETA holds until then.
    lookups_due_at: float = 0.0
    retries_due_at: float = 0.0


@dataclass(slots=True)
class _Cohort:
    """Requests sent one after another, judged together once nearly all have ended.

    Why by send order: answers taken in the order they *arrive* are biased fast whenever
    the sending rate grows (slow start, or after a cut): the first answers to come back
    are the quickest of a larger crowd. A baseline made of them sat well under the real
    median, and log-normal latency (no congestion at all) then looked like a 2x rise.
    """

    first_sent_at: float
    sent: int = 0
    in_use: int = 0  # sent while the limit was in use
    ended: int = 0
    times: list[float] = field(default_factory=list)  # of those that got an answer


@dataclass(slots=True)
class _Probe:
    """A cut made on a suspicion, awaiting its verdict from the first cohort sent after."""

    cut_at: float
    limit_before: float
    median_before: float  # the cohort median that prompted the cut
    sent_under: float  # the limit that cohort was sent under


class InFlightLimit:
    def __init__(
        self,
        *,
        initial: int = DEFAULT_INITIAL,
        floor: int = DEFAULT_FLOOR,
        ceiling: int = DEFAULT_CEILING,
        tolerance: float = 2.0,
        backoff: float = 0.75,
        cohort: int = DEFAULT_COHORT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError("need 1 <= floor <= ceiling")
        if cohort < 1 or not 0 < backoff < 1 or not tolerance > 1:
            raise ValueError("need cohort >= 1, 0 < backoff < 1, tolerance > 1")
        self.floor = floor
        self.ceiling = ceiling
        self._limit = float(min(max(initial, floor), ceiling))
        self._tolerance = tolerance
        self._backoff = backoff
        self._cohort_size = cohort
        self._clock = clock
        self._slow_start = True
        self._cohorts: dict[int, _Cohort] = {}
        self._filling = 0  # the cohort that new requests join
        self._baseline = math.inf  # the lowest cohort median since the baseline was set
        self._median = math.inf  # the last cohort's median
        # Where latency was last proved to follow our load: growth is gentle from there on,
        # until cohorts there show the latency as low as it gets (then it was a passing
        # thing, such as the handshakes of a run's first connections).
        self._threshold = math.inf
        self._flat_cohorts = 0  # cohorts in a row with the latency as low as it gets
        self._probe: _Probe | None = None
        self._last_cut = -math.inf
        # (time, limit) at recent verdicts: what the limit was when a cohort was sent.
        self._history: deque[tuple[float, float]] = deque(maxlen=256)
        self._lag_s = 0.0
        self.cuts = 0  # for the summary and the tests: how often the limit was cut
        self.rebases = 0  # ... and how often a suspected congestion proved to be the server's

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def baseline_s(self) -> float:
        """The latency taken as normal: the lowest cohort median (inf before one)."""
        return self._baseline

    @property
    def loop_lag_s(self) -> float:
        return self._lag_s

    def on_loop_lag(self, lag_s: float) -> None:
        """One sample of how late the event loop ran a timer (``watch_loop_lag``)."""
        self._lag_s += _LAG_SMOOTHING * (max(0.0, lag_s) - self._lag_s)

    def on_send(self, in_flight: int) -> int:
        """A request leaves, ``in_flight`` with it; returns its cohort, for ``on_answer``."""
        number = self._filling
        cohort = self._cohorts.get(number)
        if cohort is None:
            cohort = self._cohorts[number] = _Cohort(self._clock())
            if len(self._cohorts) > KEPT_COHORTS:  # answers that never came: forget them
                del self._cohorts[min(self._cohorts)]
        cohort.sent += 1
        cohort.in_use += in_flight >= 0.8 * self._limit
        if cohort.sent >= self._cohort_size:
            self._filling += 1
        return number

    def on_answer(
        self, latency_s: float, *, in_flight: int, failed: bool, cohort: int | None = None
    ) -> None:
        """One request ended: ``latency_s`` after it was sent; ``failed``: no HTTP answer
        (a timeout or a connection failure); ``in_flight``: requests in flight when it
        ended, itself included (growth needs the limit to have been in use); ``cohort``:
        what ``on_send`` returned for it (without one, its time is no evidence)."""
        now = self._clock()
        if failed:
            self._probe = None  # certain evidence: no need to test a suspicion
            self._cut(now, latency_s)
            self._slow_start = False
        found = self._cohorts.get(cohort) if cohort is not None else None
        if found is not None:
            found.ended += 1
            if not failed:
                found.times.append(latency_s)
            if found.sent >= self._cohort_size and found.ended >= COMPLETE * found.sent:
                del self._cohorts[cohort]  # type: ignore[arg-type]
                self._judge(found, now)
        if failed or self._probe is not None or self._lag_s > LAG_HOLD_S:
            return
        if in_flight >= 0.8 * self._limit:
            # A round trip holds ~limit answers: +1 an answer doubles it, +0.1 adds 10%.
            flat = self._flat_cohorts > 0 or self._baseline == math.inf  # none judged yet
            fast = self._slow_start and flat and self._limit < self._threshold
            step = 1.0 if fast else 0.1
            self._limit = min(float(self.ceiling), self._limit + step)

    # -- the evidence -----------------------------------------------------------------

    def _judge(self, cohort: _Cohort, now: float) -> None:
        if len(cohort.times) < FEWEST:
            return
        median = statistics.median(cohort.times)
        self._median = median
        probe = self._probe
        if probe is not None:
            if cohort.first_sent_at >= probe.cut_at:
                self._verdict(probe, median)
            return
        in_use = 2 * cohort.in_use >= cohort.sent
        if in_use and median > self._tolerance * self._baseline:
            # Cut from the limit the cohort was sent under: in slow start it has doubled
            # since, and cutting from today's would test nothing.
            sent_under = min(self._limit_at(cohort.first_sent_at), self._limit)
            self._probe = _Probe(now, self._limit, median, sent_under)
            self._cut(now, median, start=sent_under)
            self._flat_cohorts = 0
        else:
            self._baseline = min(self._baseline, median)
            flat = median <= FLAT * self._baseline
            self._flat_cohorts = self._flat_cohorts + 1 if flat else 0
            if self._flat_cohorts >= 3 and self._limit >= self._threshold:
                self._threshold = math.inf
        self._history.append((now, self._limit))

    def _verdict(self, probe: _Probe, median: float) -> None:
        """The first cohort sent after the cut says whether the latency followed our load."""
        self._probe = None
        if median <= FELL * probe.median_before or median <= self._tolerance * self._baseline:
            self._threshold = probe.sent_under  # ours: the cut stands, growth is gentle there
            return
        # Not ours: the server or the path slowed whatever we sent.
        self.rebases += 1
        self._baseline = median
        self._limit = max(self._limit, probe.limit_before)
        self._slow_start = True
        self._threshold = math.inf

    def _limit_at(self, when: float) -> float:
        """The limit in force at ``when``, as the history of verdicts remembers it."""
        found = self._history[0][1] if self._history else self._limit
        for at, limit in self._history:
            if at > when:
                break
            found = limit
        return found

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

"""The in-flight controller driven by simulated latency curves, with a virtual clock.

Two kinds of simulation: ``simulate`` keeps the limit's worth of requests in flight (a
backlog that never ends: what the limit settles at is all that counts), and ``serve`` sends
a steady demand (what the per-location limiters let through), queueing what the limit holds
back, as a run does: there the limit must never be what sets the pace.
"""

from __future__ import annotations

import heapq
import math
import random
import resource
import statistics
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from pipeline.send.inflight import InFlightLimit


def simulate(
    latency_at: Callable[[int], float],
    *,
    seconds: float,
    fails_at: Callable[[int], bool] = lambda _n: False,
    ceiling: int = 4096,
) -> tuple[list[tuple[float, int]], int]:
    """Keep the limit's worth of requests in flight (a backlog that never ends); each takes
    ``latency_at(in_flight when sent)``. Returns (time, limit) samples and answers made."""
    now = 0.0
    limit = InFlightLimit(ceiling=ceiling, clock=lambda: now)
    ending: list[tuple[float, float, bool, int]] = []  # (answer at, latency, failed, cohort)
    samples: list[tuple[float, int]] = []
    answered = 0
    while now < seconds:
        while len(ending) < limit.limit:
            in_flight = len(ending) + 1
            latency = latency_at(in_flight)
            cohort = limit.on_send(in_flight)
            heapq.heappush(ending, (now + latency, latency, fails_at(in_flight), cohort))
        now, latency, failed, cohort = heapq.heappop(ending)
        limit.on_answer(latency, in_flight=len(ending) + 1, failed=failed, cohort=cohort)
        answered += 0 if failed else 1
        samples.append((now, limit.limit))
    return samples, answered


def knee(base_s: float, knee_at: int) -> Callable[[int], float]:
    """Steady latency up to ``knee_at`` in flight, then queueing: it grows with the load."""
    return lambda n: base_s if n <= knee_at else base_s * n / knee_at


def settled(samples: list[tuple[float, int]], after: float) -> list[int]:
    return [limit for t, limit in samples if t >= after]


# A latency draw: (now, requests in flight with this one, rng) -> seconds.
Draw = Callable[[float, int, random.Random], float]


def constant(mean_s: float) -> Draw:
    return lambda _t, _n, _rng: mean_s


def uniform(mean_s: float, spread: float = 0.5) -> Draw:
    return lambda _t, _n, rng: rng.uniform(mean_s * (1 - spread), mean_s * (1 + spread))


def lognormal(median_s: float, sigma: float = 0.7) -> Draw:
    return lambda _t, _n, rng: median_s * math.exp(rng.gauss(0.0, sigma))


def mean_of(draw: Draw) -> float:
    rng = random.Random(7)
    return statistics.fmean(draw(0.0, 1, rng) for _ in range(20_000))


@dataclass
class Served:
    samples: list[tuple[float, int]]  # (time, limit) at every answer
    answered: list[float]  # answer times
    waits: list[float]  # time each request waited for a slot
    limit: InFlightLimit

    def answered_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.answered if start <= t < end)


def serve(draw: Draw, *, demand: float, seconds: float, seed: int = 1) -> Served:
    """``demand`` requests a second arrive evenly; each waits for a slot under the limit,
    then takes ``draw(now, in_flight)`` seconds. Virtual time, one event at a time."""
    now = 0.0
    rng = random.Random(seed)
    limit = InFlightLimit(clock=lambda: now)
    queue: deque[float] = deque()
    ending: list[tuple[float, float, int]] = []  # (answer at, latency, cohort)
    served = Served([], [], [], limit)
    next_arrival = 0.0
    while now < seconds:
        if ending and ending[0][0] <= next_arrival:
            now, latency, cohort = heapq.heappop(ending)
            limit.on_answer(latency, in_flight=len(ending) + 1, failed=False, cohort=cohort)
            served.samples.append((now, limit.limit))
            served.answered.append(now)
        else:
            now = next_arrival
            queue.append(now)
            next_arrival += 1.0 / demand
        while queue and len(ending) < limit.limit:
            served.waits.append(now - queue.popleft())
            latency = draw(now, len(ending) + 1, rng)
            cohort = limit.on_send(len(ending) + 1)
            heapq.heappush(ending, (now + latency, latency, cohort))
    return served


JITTER = {
    "constant": constant,
    "uniform +-50%": uniform,
    "log-normal sigma 0.7": lognormal,
}


@pytest.mark.parametrize("shape", sorted(JITTER))
@pytest.mark.parametrize(("latency_s", "demand"), [(0.08, 2000.0), (0.6, 600.0)])
def test_latency_that_varies_is_not_congestion(shape: str, latency_s: float, demand: float) -> None:
    """Jitter alone (it does not grow with our load) never cuts the limit: it reaches demand
    x mean latency, nothing waits for long, and every request is answered in its time."""
    draw = JITTER[shape](latency_s)
    mean = mean_of(draw)
    served = serve(draw, demand=demand, seconds=30.0)
    assert served.limit.cuts == 0
    late = [limit for t, limit in served.samples if t >= 10.0]
    assert min(late) >= demand * mean, (min(late), demand * mean)
    assert served.answered_between(10.0, 30.0) >= 0.98 * demand * 20.0
    assert statistics.fmean(served.waits[len(served.waits) // 3 :]) < 0.01 * mean


def test_a_server_that_slows_down_on_its_own_keeps_its_demand_served() -> None:
    """Latency rises 5x at 10 s whatever we send: the limit may test the rise once, then
    follows it to demand x the new latency."""
    demand = 2000.0

    def draw(t: float, _n: int, rng: random.Random) -> float:
        mean = 0.08 if t < 10.0 else 0.4
        return rng.uniform(0.5 * mean, 1.5 * mean)

    served = serve(draw, demand=demand, seconds=30.0)
    late = [limit for t, limit in served.samples if t >= 15.0]
    assert min(late) >= demand * 0.4, min(late)
    assert served.limit.rebases >= 1
    assert served.answered_between(15.0, 30.0) >= 0.98 * demand * 15.0
    # What the test of the rise cost: the answers the 5 s after it fell short by.
    assert served.answered_between(10.4, 15.4) >= 0.9 * demand * 5.0


def test_steady_latency_grows_fast_to_the_ceiling() -> None:
    samples, _ = simulate(lambda _n: 0.08, seconds=3.0, ceiling=2000)
    assert settled(samples, 1.0)[0] == 2000  # 512 -> 2000 in two round trips, not minutes


@pytest.mark.parametrize(("base_s", "knee_at"), [(0.08, 500), (0.6, 300), (0.005, 120)])
@pytest.mark.parametrize("jitter", [0.0, 0.5])
def test_rising_latency_settles_near_the_knee(base_s: float, knee_at: int, jitter: float) -> None:
    rng = random.Random(3)

    def curve(n: int) -> float:
        return knee(base_s, knee_at)(n) * rng.uniform(1 - jitter, 1 + jitter)

    samples, answered = simulate(curve, seconds=base_s * 400)
    late = settled(samples, base_s * 200)
    # Congestion is a cohort median over twice the baseline, which this curve reaches at
    # twice the knee; a cut to 3/4 and growth of ~10% a round trip keep it below.
    assert 0.5 * knee_at <= statistics.median(late) <= 2.2 * knee_at
    # No wild oscillation: a sawtooth between a cut and the level that prompted it (wider
    # with jitter, which blurs the knee).
    assert statistics.pstdev(late) / statistics.mean(late) < (0.2 if jitter == 0 else 0.4)
    best = knee_at / base_s * base_s * 400  # the most answers the curve allows in the time
    assert answered > 0.9 * best


def test_failing_connections_shrink_it_to_what_the_link_carries() -> None:
    samples, _ = simulate(lambda _n: 0.08, fails_at=lambda n: n > 200, seconds=40.0)
    late = settled(samples, 20.0)
    assert max(late) <= 400 and statistics.median(late) <= 260
    assert min(late) >= 16  # never below the floor


def test_a_server_that_stops_answering_sheds_the_limit_to_its_floor() -> None:
    """Every connection refused from 5 s on: the limit comes down to the floor in a few
    round trips, never below it."""
    now = 0.0
    limit = InFlightLimit(clock=lambda: now)
    while now < 5.0:  # grows first
        now += 0.001
        limit.on_answer(0.08, in_flight=limit.limit, failed=False)
    assert limit.limit == 4096
    for _ in range(2000):  # refused at once, one answer every 5 ms
        now += 0.005
        limit.on_answer(0.002, in_flight=limit.limit, failed=True)
    assert limit.limit == 16


def test_a_late_event_loop_holds_growth() -> None:
    now = 0.0
    limit = InFlightLimit(initial=64, clock=lambda: now)
    for _ in range(20):
        limit.on_loop_lag(0.3)
    for _ in range(1000):
        now += 0.001
        limit.on_answer(0.08, in_flight=64, failed=False)
    assert limit.limit == 64 and limit.cuts == 0
    for _ in range(40):  # the loop catches up: growth resumes
        limit.on_loop_lag(0.0)
    limit.on_answer(0.08, in_flight=64, failed=False)
    assert limit.limit == 65


def test_an_unused_limit_does_not_grow() -> None:
    now = 0.0
    limit = InFlightLimit(initial=64, clock=lambda: now)
    for _ in range(1000):
        now += 0.01
        limit.on_answer(0.08, in_flight=5, failed=False)  # five in flight under a limit of 64
    assert limit.limit == 64


def test_one_cut_per_round_trip() -> None:
    now = 0.0
    limit = InFlightLimit(initial=100, clock=lambda: now)
    limit.on_answer(0.08, in_flight=100, failed=False)
    for _ in range(50):  # a burst of failures arriving together counts once
        limit.on_answer(0.5, in_flight=100, failed=True)
    assert limit.limit == 75


def fd_limits_after(soft: int, hard: int, wanted: int) -> tuple[int, int]:
    """In a child process (limits are per process): set the open-file limits, then ask."""
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "from pipeline.send.inflight import raise_fd_limit\n"
        f"allowed = raise_fd_limit({wanted})\n"
        "print(allowed, resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    allowed, soft_now = done.stdout.split()
    return int(allowed), int(soft_now)


def test_the_soft_open_file_limit_is_raised_toward_the_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 5000:
        pytest.skip("this machine's hard limit is too low for the case")
    assert fd_limits_after(128, 5000, 4096) == (4096, 4096 + 64)


def test_a_low_hard_limit_caps_the_requests_in_flight() -> None:
    assert fd_limits_after(128, 300, 4096) == (300 - 64, 300)

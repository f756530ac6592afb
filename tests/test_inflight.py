"""The in-flight controller driven by simulated latency curves, with a virtual clock."""

from __future__ import annotations

import heapq
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable

import pytest

from pipeline.inflight import InFlightLimit


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
    ending: list[tuple[float, float, bool]] = []  # (answer at, latency, failed)
    samples: list[tuple[float, int]] = []
    answered = 0
    while now < seconds:
        while len(ending) < limit.limit:
            in_flight = len(ending) + 1
            latency = latency_at(in_flight)
            heapq.heappush(ending, (now + latency, latency, fails_at(in_flight)))
        now, latency, failed = heapq.heappop(ending)
        limit.on_answer(latency, in_flight=len(ending) + 1, failed=failed)
        answered += 0 if failed else 1
        samples.append((now, limit.limit))
    return samples, answered


def knee(base_s: float, knee_at: int) -> Callable[[int], float]:
    """Steady latency up to ``knee_at`` in flight, then queueing: it grows with the load."""
    return lambda n: base_s if n <= knee_at else base_s * n / knee_at


def settled(samples: list[tuple[float, int]], after: float) -> list[int]:
    return [limit for t, limit in samples if t >= after]


def test_steady_latency_grows_fast_to_the_ceiling() -> None:
    samples, _ = simulate(lambda _n: 0.08, seconds=3.0, ceiling=2000)
    assert settled(samples, 1.0)[0] == 2000  # 64 -> 2000 in five round trips, not minutes


@pytest.mark.parametrize(("base_s", "knee_at"), [(0.08, 500), (0.6, 300), (0.005, 120)])
def test_rising_latency_settles_near_the_knee(base_s: float, knee_at: int) -> None:
    samples, answered = simulate(knee(base_s, knee_at), seconds=base_s * 400)
    late = settled(samples, base_s * 200)
    # Congestion is an answer slower than twice the base plus 5 ms (jitter on a fast link),
    # which this curve reaches at (2 + 0.005/base) times the knee: it settles below that.
    congested_at = (2 + 0.005 / base_s) * knee_at
    assert 0.5 * knee_at <= statistics.median(late) <= congested_at
    assert statistics.pstdev(late) / statistics.mean(late) < 0.35  # no wild oscillation
    best = knee_at / base_s * base_s * 400  # the most answers the curve allows in the time
    assert answered > 0.6 * best


def test_failing_connections_shrink_it_to_what_the_link_carries() -> None:
    samples, _ = simulate(lambda _n: 0.08, fails_at=lambda n: n > 200, seconds=40.0)
    late = settled(samples, 20.0)
    assert max(late) <= 400 and statistics.median(late) <= 260
    assert min(late) >= 16  # never below the floor


def test_an_unused_limit_does_not_grow() -> None:
    now = 0.0
    limit = InFlightLimit(clock=lambda: now)
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
        "from pipeline.inflight import raise_fd_limit\n"
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

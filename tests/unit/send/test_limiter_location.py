"""LocationLimiter: the server's announced window and the user's ceiling, both at once.

Scenarios run a simulated client against a simulated server on an injected clock (no
sleeping): the client starts a request whenever the limiter hands out a permit, each
request is counted by the server somewhere between its start and its answer, and every
answer announces the limit in force when the server counted it.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from bisect import bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from pipeline.core.values import Rate
from pipeline.send.limiter import LocationLimiter, WindowLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Phase:
    """The server's limit for requests it counts before ``until`` (seconds from the start)."""

    max_requests: int
    interval_ms: int
    until: float = float("inf")


@dataclass
class Run:
    refused: int = 0  # requests the server refused (429): its window was full at arrival
    answered: int = 0
    refused_at: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # seconds from the start, in order
    arrivals: list[float] = field(default_factory=list)  # when the server counted each
    server_at_start: list[Rate] = field(default_factory=list)  # the server window adopted


def simulate(
    limiter: LocationLimiter,
    clock: FakeClock,
    phases: list[Phase],
    *,
    horizon: float,
    latency: tuple[float, float] = (0.05, 0.05),
    seed: int = 0,
    cancel_rate: float = 0.0,
    max_starts: int = 100_000,
    check: Callable[[LocationLimiter], None] | None = None,
    others: list[float] = (),  # type: ignore[assignment]
    first_alone: bool = False,
    sharers: int = 1,
) -> Run:
    """A greedy client: starts a request whenever a permit is free, until ``horizon``.

    ``check`` is called after every answer and every cancel. ``others``: the arrivals of
    another client's requests (seconds from the start), which the server counts too; a
    request arriving at a full window is refused (a 429, not counted). ``first_alone``:
    the first request goes alone, as the sender sends a location's first. ``sharers``:
    runs of ours sending to the location (``peers.Peers`` says how many)."""
    rng = random.Random(seed)
    origin = clock.now
    run = Run()
    counted: list[float] = sorted(others)  # the server's arrivals, sorted
    answers: list[tuple[float, int, float, float]] = []  # (answer time, seq, arrival, sent)

    def phase_at(arrival: float) -> Phase:
        return next((p for p in phases if arrival < p.until), phases[-1])

    while clock.now - origin < horizon and len(run.starts) < max_starts:
        wait = (
            limiter.try_acquire() if not (first_alone and run.starts and not run.answered) else None
        )
        if wait is None and first_alone and run.starts and not run.answered and not answers:
            break
        if wait == 0.0:
            if cancel_rate and rng.random() < cancel_rate:
                limiter.cancel()  # taken but not sent
                if check:
                    check(limiter)
                continue
            now = clock.now - origin
            took = rng.uniform(*latency)
            arrival = now + rng.uniform(0.0, 1.0) * took
            run.starts.append(now)
            run.arrivals.append(arrival)
            run.server_at_start.append(limiter.server_limit)
            insort(counted, arrival)
            heapq.heappush(answers, (clock.now + took, len(run.starts), arrival, clock.now))
            continue
        next_answer = answers[0][0] if answers else float("inf")
        next_free = clock.now + wait if wait is not None else float("inf")
        assert min(next_answer, next_free) < float("inf"), "nothing in flight and nothing free"
        clock.now = min(next_answer, next_free)
        while answers and answers[0][0] <= clock.now:
            _, _, arrival, sent_at = heapq.heappop(answers)
            limiter.release()
            run.answered += 1
            phase = phase_at(arrival)
            interval = phase.interval_ms / 1000.0
            in_window = bisect_right(counted, arrival) - bisect_right(counted, arrival - interval)
            refused_now = in_window > phase.max_requests
            if refused_now:  # full when it arrived: refused, not counted
                run.refused += 1
                run.refused_at.append(arrival)
                counted.pop(bisect_right(counted, arrival) - 1)
                in_window = phase.max_requests
            limiter.observe(
                max_requests=phase.max_requests,
                interval_ms=phase.interval_ms,
                remaining=max(0, phase.max_requests - in_window),
                sent_at=sent_at,  # as the sender passes it
                refused=refused_now,
                sharers=sharers,
            )
            if check:
                check(limiter)
    return run


def busiest(
    times: list[float], interval: float, since: float = -math.inf, until: float = math.inf
) -> int:
    """The most ``times`` in any window ``(t - interval, t]`` ending at one of them between
    ``since`` and ``until``: any window holds no more than the one ending at its last time."""
    return max(
        (
            bisect_right(times, t) - bisect_right(times, t - interval)
            for t in times
            if since <= t <= until
        ),
        default=0,
    )


def counts(times: list[float], start: float, stop: float) -> int:
    return bisect_right(times, stop) - bisect_right(times, start)


SERVER_100_10 = [Phase(100, 10_000)]


# -- the two windows together ---------------------------------------------------------------


def test_ceiling_10_per_s_under_server_100_per_10s_runs_at_about_10_a_second() -> None:
    """The old merged window made this 10 per 10 s; each limit alone allows ~10/s."""
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), (10, 1.0), clock=clock)
    run = simulate(limiter, clock, SERVER_100_10, horizon=60.0)
    assert busiest(run.starts, 1.0) <= 10
    assert busiest(run.starts, 10.0) <= 100
    assert len(run.starts) >= 540  # 10 per 1.05 s (a permit rests from its answer)
    assert all(counts(run.starts, t - 2.0, t) >= 10 for t in range(2, 60))  # no long pause


def test_ceiling_50_per_s_under_server_100_per_10s_bursts_50_then_follows_the_server() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), (50, 1.0), clock=clock)
    run = simulate(limiter, clock, SERVER_100_10, horizon=30.0)
    assert run.starts.count(0.0) == 50
    assert counts(run.starts, 0.0, 1.05 - 1e-9) == 0  # the ceiling's permits rest 1 s
    assert counts(run.starts, 1.0, 1.06) == 50
    assert counts(run.starts, 1.06, 10.05 - 1e-9) == 0  # then the server's window is spent
    assert busiest(run.starts, 10.0) <= 100
    assert busiest(run.starts, 1.0) <= 50


def test_no_ceiling_and_a_server_announcing_200_grows_the_burst_to_200() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), clock=clock)
    assert limiter.max_requests == 100
    run = simulate(limiter, clock, [Phase(200, 10_000)], horizon=25.0)
    assert limiter.max_requests == 200
    assert run.starts.count(0.0) == 100  # the assumed limit, until the first answer
    assert counts(run.starts, 0.04, 0.05) == 100  # the first answer grows it: 100 more
    assert counts(run.starts, 0.05, 10.05 - 1e-9) == 0
    assert busiest(run.starts, 10.0) <= 200
    assert counts(run.starts, 10.0, 10.2) == 200  # a burst of 200 from then on


def test_a_server_announcing_50_shrinks_the_burst() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), clock=clock)
    run = simulate(limiter, clock, [Phase(50, 10_000)], horizon=35.0)
    assert limiter.max_requests == 50
    assert run.starts.count(0.0) == 100  # unavoidable: nothing was announced yet
    assert busiest(run.starts, 10.0, since=0.05) <= 100  # the burst itself is in the window
    assert busiest(run.starts, 10.0, since=10.05) <= 50
    assert counts(run.starts, 10.0, 10.1) == 50


def test_a_server_announcing_5000_ms_shortens_the_rests() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), clock=clock)
    run = simulate(limiter, clock, [Phase(100, 5_000)], horizon=12.0)
    assert limiter.server_limit == Rate(100, 5.0)
    assert run.starts.count(0.0) == 100
    assert counts(run.starts, 5.0, 5.05) == 100  # answered at 0.05, rested 5 s
    assert busiest(run.starts, 5.0) <= 100


def test_a_server_announcing_5_per_s_under_a_ceiling_of_100_per_10s() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), (100, 10.0), clock=clock)
    run = simulate(limiter, clock, [Phase(5, 1_000)], horizon=30.0)
    assert limiter.max_requests == 5
    assert limiter.ceiling == Rate(100, 10.0)  # the ceiling never moves
    assert run.starts.count(0.0) == 100  # the assumed burst, before the first answer
    assert busiest(run.starts, 1.0, since=0.05) <= 5
    assert busiest(run.starts, 10.0) <= 100
    assert counts(run.starts, 10.0, 30.0) >= 90  # ~5 per 1.05 s


def test_announcements_down_then_up_then_down() -> None:
    """The server lowers its limit, raises it past the assumed one, then lowers it again."""
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), (150, 10.0), clock=clock)
    phases = [Phase(50, 10_000, until=20.0), Phase(300, 10_000, until=40.0), Phase(20, 5_000)]
    run = simulate(limiter, clock, phases, horizon=60.0, latency=(0.02, 0.4), seed=3)
    assert limiter.max_requests == 20
    assert busiest(run.starts, 10.0) <= 150  # the ceiling holds throughout
    assert run.starts.count(0.0) == 100  # the assumed limit, until the first answer
    assert busiest(run.starts, 10.0, since=0.5, until=20.0) <= 100  # the first burst ...
    assert busiest(run.starts, 10.0, since=10.5, until=20.0) <= 50  # ... then 50 per 10 s
    assert busiest(run.starts, 10.0, since=20.0, until=40.0) == 150  # 300: the ceiling binds
    # Every answer after 40.4 s announces 20 per 5 s (latencies are at most 0.4 s): from
    # then on every window of 5 s holds 20 at most, including windows that reach back
    # into the 300 per 10 s stretch: retired permits keep their rests.
    assert busiest(run.starts, 5.0, since=40.4) <= 20
    assert counts(run.starts, 45.0, 60.0) >= 50


# -- the mechanism ----------------------------------------------------------------------------


def test_a_permit_is_taken_from_every_window_or_from_none() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((1, 10.0), (1, 1.0), clock=clock)
    assert limiter.try_acquire() == 0.0
    clock.now += 0.1
    limiter.release()
    clock.now += 1.0  # the ceiling's permit is free, the server's rests until 1010.1
    assert limiter.try_acquire() == pytest.approx(9.0)
    assert limiter.in_flight == 0
    limiter.observe(max_requests=2, interval_ms=None, remaining=None)
    assert limiter.try_acquire() == 0.0  # the ceiling's permit was not held by the failure


def test_none_when_some_window_has_every_permit_in_flight() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), (1, 1.0), clock=clock)
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() is None
    assert limiter.in_flight == 1


def test_the_wait_is_the_longest_of_the_windows() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((1, 10.0), (1, 1.0), clock=clock)
    assert limiter.try_acquire() == 0.0
    limiter.release()
    assert limiter.try_acquire() == pytest.approx(10.0)
    limiter.observe(max_requests=None, interval_ms=500, remaining=None)
    assert limiter.try_acquire() == pytest.approx(1.0)  # now the ceiling is the longer


def test_cancel_gives_every_window_its_permit_back_at_once() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((1, 10.0), (1, 1.0), clock=clock)
    assert limiter.try_acquire() == 0.0
    limiter.cancel()
    assert limiter.in_flight == 0
    assert limiter.try_acquire() == 0.0
    assert limiter.in_flight == 1


def test_release_and_cancel_accounting_over_many_requests() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((10, 10.0), (5, 1.0), clock=clock)
    assert [limiter.try_acquire() for _ in range(6)][-1] is None
    assert limiter.in_flight == 5
    for _ in range(2):
        limiter.cancel()
    for _ in range(3):
        limiter.release()
    assert limiter.in_flight == 0
    assert [limiter.try_acquire() for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    clock.now += 1.0
    assert [limiter.try_acquire() for _ in range(4)] == [0.0, 0.0, 0.0, None]  # 5 per 1 s
    for _ in range(5):
        limiter.release()
    clock.now += 1.0
    # The server's ten: 3 rest from 1000, 5 from 1001, 2 never used (the cancels did not
    # count): 2 free now, then 1000 + 10.
    assert [limiter.try_acquire() for _ in range(3)] == [0.0, 0.0, pytest.approx(8.0)]


def test_block_for_holds_back_the_whole_limiter() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((10, 10.0), (10, 1.0), clock=clock)
    limiter.block_for(3.0)
    assert limiter.try_acquire() == pytest.approx(3.0)
    limiter.block_for(1.0)  # never shortens a block
    assert limiter.try_acquire() == pytest.approx(3.0)
    clock.now += 3.0
    assert limiter.try_acquire() == 0.0
    limiter.release()
    limiter.block_for(0.5)
    assert [limiter.try_acquire() for _ in range(1)] == [pytest.approx(0.5)]
    clock.now += 0.5
    assert sum(limiter.try_acquire() == 0.0 for _ in range(20)) == 9  # one still rests


def test_observe_steers_only_the_server_window() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), (10, 1.0), clock=clock)
    limiter.observe(max_requests=500, interval_ms=20_000, remaining=None)
    assert limiter.server_limit == Rate(500, 20.0)
    assert limiter.ceiling == Rate(10, 1.0)
    assert limiter.max_requests == 10
    limiter.observe(max_requests=None, interval_ms=None, remaining=0)  # rests the server's
    assert limiter.try_acquire() == pytest.approx(20.0)


def test_constructors() -> None:
    limiter = LocationLimiter(Rate(100, 10.0), (5, 1.0))
    assert (limiter.server_limit, limiter.ceiling) == (Rate(100, 10.0), Rate(5, 1.0))
    assert LocationLimiter().server_limit == Rate(100, 10.0)  # HighLevel's published
    assert LocationLimiter().ceiling is None
    for bad in ((0, 10.0), (1, 0.0), (1, float("nan"))):
        with pytest.raises(ValueError):
            LocationLimiter(bad)
        with pytest.raises(ValueError):
            LocationLimiter((100, 10.0), bad)
    with pytest.raises(ValueError):
        WindowLimiter(1, float("nan"))


async def test_acquire_waits_for_a_release_and_the_rest() -> None:
    limiter = LocationLimiter((1, 0.05), (5, 0.01))
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    limiter.release()
    await asyncio.wait_for(waiter, 1.0)
    assert limiter.in_flight == 1


async def test_acquire_wakes_up_when_the_server_raises_its_max() -> None:
    limiter = LocationLimiter((1, 60.0))
    await limiter.acquire()
    limiter.release()  # rests a minute
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    limiter.observe(max_requests=2, interval_ms=None, remaining=None)
    await asyncio.wait_for(waiter, 1.0)  # not a minute later


async def test_acquire_is_cancelled_cleanly() -> None:
    limiter = LocationLimiter((1, 60.0))
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_flight == 1


def test_a_first_answer_that_finds_the_window_partly_spent_sizes_the_first_burst() -> None:
    """After a crash, the killed run's 70 requests are still in the server's window: the
    first request goes alone, its answer says 29 remain, and 29 go, not 99 (half at once,
    then as the next answers say)."""
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), clock=clock)
    killed_run = [-3.0 + k * 0.01 for k in range(70)]
    run = simulate(limiter, clock, [Phase(100, 10_000)], horizon=30.0, others=killed_run,
                   first_alone=True)  # fmt: skip
    assert run.refused == 0
    assert counts(run.starts, -1.0, 0.2) <= 1 + 29  # never more than what is left
    assert counts(run.starts, -1.0, 7.0) == 1 + 29  # until the killed run's share comes back
    assert busiest(sorted(run.arrivals + killed_run), 10.0) <= 100


def test_beside_another_client_spending_half_the_budget_few_requests_are_refused() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), clock=clock)
    other = [k * 0.2 for k in range(-50, 400)]  # 50 per 10 s, steadily, throughout
    run = simulate(limiter, clock, [Phase(100, 10_000)], horizon=60.0, others=other,
                   first_alone=True)  # fmt: skip
    assert limiter.contended
    assert run.refused <= 0.02 * len(run.starts), (run.refused, len(run.starts))
    assert len(run.starts) >= 0.85 * 50 * 6  # close to the half that is left: ~300 in 60 s


def test_a_client_alone_is_never_contended_and_bursts_in_full() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), clock=clock)
    run = simulate(limiter, clock, [Phase(100, 10_000)], horizon=35.0, first_alone=True)
    assert not limiter.contended and run.refused == 0
    assert counts(run.starts, 10.0, 10.2) == 100


def test_alone_the_first_burst_follows_the_first_answer_at_once() -> None:
    """A location alone pays one round trip to learn its budget, its first request's: the
    rest of the window goes the moment that answer is in, not half of it then half later."""
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), clock=clock)
    run = simulate(limiter, clock, [Phase(100, 10_000)], horizon=5.0, first_alone=True)
    assert run.starts[0] == 0.0
    assert counts(run.starts, 0.04, 0.06) == 99  # at the first answer (latency 0.05)
    assert len(run.starts) == 100 and run.refused == 0


def test_two_runs_of_ours_each_take_half_of_the_window_and_draw_no_429() -> None:
    """Two runs on one location that know of each other (``peers``): each keeps to half of
    the announced max, so together they fill the window and never overfill it."""
    clock = FakeClock()
    one = LocationLimiter((100, 10.0), clock=clock)
    two = LocationLimiter((100, 10.0), clock=clock)
    # The other run's arrivals, as its own limiter schedules them (run first, alone).
    other = simulate(two, clock, [Phase(100, 10_000)], horizon=60.0, first_alone=True,
                     sharers=2)  # fmt: skip
    clock.now = 0.0
    run = simulate(one, clock, [Phase(100, 10_000)], horizon=60.0, first_alone=True,
                   others=other.arrivals, sharers=2)  # fmt: skip
    assert busiest(sorted(other.arrivals), 10.0) <= 50
    assert busiest(sorted(run.arrivals), 10.0) <= 50
    assert run.refused == 0 and not one.contended
    assert len(run.starts) >= 0.95 * 50 * 6  # its half: ~300 in 60 s


def test_a_run_that_ends_gives_its_share_back() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), clock=clock)
    limiter.observe(max_requests=100, interval_ms=10_000, remaining=99, sharers=2)
    assert limiter.server_limit == Rate(50, 10.0)
    limiter.observe(max_requests=None, interval_ms=None, remaining=None, sharers=1)
    assert limiter.server_limit == Rate(50, 10.0)  # its last requests are still in the window
    clock.now += 10.0
    limiter.share(1)
    assert limiter.server_limit == Rate(100, 10.0)  # from the last announced max
    limiter.share(2)  # a new peer takes its share at once
    assert limiter.server_limit == Rate(50, 10.0)


def test_requests_from_before_the_run_cost_their_permits_and_nothing_more() -> None:
    """A ``pipeline check`` just before the run left one request in the window: the run
    spends one permit less in its first window, asks once at the next turn, and bursts in
    full from then on; it never becomes contended (single requests seconds apart)."""
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), clock=clock)
    seen: list[bool] = []
    run = simulate(limiter, clock, [Phase(100, 10_000)], horizon=60.0, others=[-2.0],
                   first_alone=True, check=lambda lim: seen.append(lim.contended))  # fmt: skip
    assert run.refused == 0 and not any(seen)
    assert counts(run.starts, -1.0, 0.5) == 99  # the first window: all but the check's
    assert counts(run.starts, 10.0, 10.3) >= 99  # one asks at the turn, the rest follow
    assert counts(run.starts, 20.0, 20.2) == 100  # and then as if alone
    assert len(run.starts) >= 595


def test_a_client_that_stops_leaves_the_location_to_full_bursts_again() -> None:
    clock = FakeClock()
    limiter = LocationLimiter((100, 10.0), clock=clock)
    other = [k * 0.2 for k in range(-50, 100)]  # 50 per 10 s until 20 s, then gone
    run = simulate(limiter, clock, [Phase(100, 10_000)], horizon=90.0, others=other,
                   first_alone=True)  # fmt: skip
    assert run.refused <= 0.02 * len(run.starts), (run.refused, len(run.starts))
    assert not limiter.contended
    assert busiest(run.starts, 10.0, since=70.0) == 100  # whole windows again

"""Limiter arithmetic with an injected clock: no sleeping, exact times."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.limiter import WindowLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_full_burst_is_available_at_once() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(100, 10.0, clock=clock)
    assert all(limiter.try_acquire() == 0.0 for _ in range(100))
    assert limiter.try_acquire() is None  # all in flight: only an answer frees one


def test_a_permit_rests_one_interval_after_its_answer() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(2, 10.0, clock=clock)
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == 0.0
    clock.now += 0.08  # round trip
    limiter.release()
    clock.now += 1.0
    limiter.release()
    assert limiter.try_acquire() == pytest.approx(10.0 - 1.0)
    clock.now += 9.0
    assert limiter.try_acquire() == 0.0  # the first permit is back at answer + 10 s
    assert limiter.try_acquire() == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.try_acquire() == 0.0


def test_no_window_ever_holds_more_than_max_starts() -> None:
    """Simulate a greedy sender with jittery round trips; check every window of starts."""
    clock = FakeClock()
    limit, interval = 5, 1.0
    limiter = WindowLimiter(limit, interval, clock=clock)
    starts: list[float] = []
    in_flight: list[float] = []  # answer times
    import random

    rng = random.Random(7)
    for _ in range(2000):
        wait = limiter.try_acquire()
        if wait == 0.0:
            starts.append(clock.now)
            in_flight.append(clock.now + rng.uniform(0.01, 0.3))
            continue
        next_answer = min(in_flight) if in_flight else float("inf")
        next_free = clock.now + wait if wait is not None else float("inf")
        clock.now = min(next_answer, next_free)
        if clock.now == next_answer:
            in_flight.remove(next_answer)
            limiter.release()
    starts.sort()
    j = 0
    for i, t in enumerate(starts):
        while starts[j] <= t - interval:
            j += 1
        assert i - j + 1 <= limit


def test_block_for_holds_back_every_permit() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(10, 10.0, clock=clock)
    limiter.block_for(3.0)
    assert limiter.try_acquire() == pytest.approx(3.0)
    clock.now += 3.0
    assert limiter.try_acquire() == 0.0


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        WindowLimiter(0, 10.0)


async def test_acquire_waits_for_a_release() -> None:
    limiter = WindowLimiter(1, 0.05)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    limiter.release()
    await asyncio.wait_for(waiter, 1.0)
    assert limiter.in_flight == 1


def test_server_headers_tighten_but_never_loosen() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(100, 10.0, clock=clock)
    limiter.observe(max_requests=200, interval_ms=5000, remaining=None)
    assert (limiter.max_requests, limiter.interval_s) == (100, 10.0)
    limiter.observe(max_requests=10, interval_ms=20_000, remaining=None)
    assert (limiter.max_requests, limiter.interval_s) == (10, 20.0)
    assert sum(limiter.try_acquire() == 0.0 for _ in range(50)) == 10


def test_lower_max_retires_permits_in_flight() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(4, 1.0, clock=clock)
    for _ in range(4):
        assert limiter.try_acquire() == 0.0
    limiter.observe(max_requests=2, interval_ms=None, remaining=None)
    for _ in range(4):
        limiter.release()
    clock.now += 1.0
    assert [limiter.try_acquire() for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.try_acquire() is None  # only two permits are left


def test_a_full_window_on_the_server_rests_our_free_permits() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(10, 10.0, clock=clock)
    assert limiter.try_acquire() == 0.0
    limiter.observe(max_requests=None, interval_ms=None, remaining=3)  # partial: ignored
    limiter.observe(max_requests=None, interval_ms=None, remaining=0)
    assert sum(limiter.try_acquire() == 0.0 for _ in range(20)) == 0
    clock.now += 10.0
    assert sum(limiter.try_acquire() == 0.0 for _ in range(20)) == 9


def test_cancel_returns_an_unused_permit_at_once() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(1, 10.0, clock=clock)
    assert limiter.try_acquire() == 0.0
    limiter.cancel()
    assert limiter.try_acquire() == 0.0


async def test_priority_slots_serve_the_lowest_number_first() -> None:
    from pipeline.limiter import PrioritySlots

    slots = PrioritySlots(1)
    await slots.acquire(5)
    order: list[int] = []

    async def wait(priority: int) -> None:
        await slots.acquire(priority)
        order.append(priority)
        slots.release()

    waiters = [asyncio.create_task(wait(p)) for p in (3, 1, 2, 1)]
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(*waiters)
    assert order == [1, 1, 2, 3]


async def test_a_cancelled_waiter_does_not_lose_a_slot() -> None:
    from pipeline.limiter import PrioritySlots

    slots = PrioritySlots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    slots.release()
    await asyncio.wait_for(slots.acquire(), 1.0)  # the slot came back

"""Limiter arithmetic with an injected clock: no sleeping, exact times."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.send.window import WindowLimiter


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
    from pipeline.send.limiter import PrioritySlots

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
    from pipeline.send.limiter import PrioritySlots

    slots = PrioritySlots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)  # the waiter waits on its future
    slots.release()  # hands the slot over to the waiter (its future is done)...
    assert slots.in_use == 1
    waiter.cancel()  # ...which is cancelled before it ever runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert waiter.cancelled()
    assert slots.in_use == 0  # the handed-over slot was given back, not held by nobody
    await asyncio.wait_for(slots.acquire(), 1.0)  # and the next comer gets it at once
    assert slots.in_use == 1


# -- following announcements both ways (adopt, observe(follow=True)) ---------------------


def test_a_higher_max_adds_permits_free_at_once() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(2, 10.0, clock=clock)
    assert [limiter.try_acquire() for _ in range(2)] == [0.0, 0.0]
    limiter.adopt(max_requests=5)
    assert limiter.max_requests == 5
    assert [limiter.try_acquire() for _ in range(4)] == [0.0, 0.0, 0.0, None]


def test_observe_follows_down_and_up_only_when_told() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(100, 10.0, clock=clock)
    limiter.observe(max_requests=200, interval_ms=5000, remaining=None, follow=True)
    assert (limiter.max_requests, limiter.interval_s) == (200, 5.0)
    limiter.observe(max_requests=50, interval_ms=20_000, remaining=None, follow=True)
    assert (limiter.max_requests, limiter.interval_s) == (50, 20.0)
    limiter.observe(max_requests=0, interval_ms=-1, remaining=None, follow=True)  # nonsense
    assert (limiter.max_requests, limiter.interval_s) == (50, 20.0)
    assert sum(limiter.try_acquire() == 0.0 for _ in range(300)) == 50


def test_a_shorter_interval_shortens_rests_to_their_start_plus_the_new_interval() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(2, 10.0, clock=clock)
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == 0.0
    clock.now += 1.0
    limiter.release()  # rests from 1001
    clock.now += 3.0
    limiter.release()  # rests from 1004
    clock.now += 1.0  # 1005
    limiter.adopt(interval_s=2.0)
    assert limiter.try_acquire() == 0.0  # 1001 + 2 <= 1005: free
    assert limiter.try_acquire() == pytest.approx(1.0)  # 1004 + 2, never earlier
    clock.now += 1.0
    assert limiter.try_acquire() == 0.0


def test_a_longer_interval_holds_back_even_free_permits_from_their_rest_start() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(2, 10.0, clock=clock)
    assert limiter.try_acquire() == 0.0
    limiter.release()  # rests from 1000
    clock.now += 12.0  # free under 10 s
    limiter.adopt(interval_s=20.0)
    assert limiter.try_acquire() == 0.0  # the never-used permit
    assert limiter.try_acquire() == pytest.approx(8.0)  # the used one: 1000 + 20
    clock.now += 8.0
    assert limiter.try_acquire() == 0.0
    limiter.release()
    assert limiter.try_acquire() == pytest.approx(20.0)  # new rests use the new interval


def test_a_max_that_dips_and_comes_back_keeps_the_permits_histories() -> None:
    """100, 50, 100 must never give 150 starts in one window: the retired permits come back
    resting as they were, not as new free ones."""
    clock = FakeClock()
    limiter = WindowLimiter(4, 10.0, clock=clock)
    for _ in range(4):
        assert limiter.try_acquire() == 0.0
    for _ in range(4):
        clock.now += 1.0
        limiter.release()  # rests from 1001, 1002, 1003, 1004
    limiter.adopt(max_requests=2)  # retires the two resting since 1001 and 1002
    limiter.adopt(max_requests=4)  # ... and brings them back with those rest starts
    assert limiter.try_acquire() == pytest.approx(7.0)  # 1001 + 10 - 1004
    limiter.adopt(max_requests=6)  # past every permit ever used: two new ones
    assert [limiter.try_acquire() for _ in range(3)] == [0.0, 0.0, pytest.approx(7.0)]
    clock.now += 7.0
    assert limiter.try_acquire() == 0.0


def test_retired_permits_come_back_latest_rest_start_first() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(3, 10.0, clock=clock)
    for _ in range(3):
        assert limiter.try_acquire() == 0.0
    for _ in range(3):
        clock.now += 1.0
        limiter.release()  # rests from 1001, 1002, 1003
    limiter.adopt(max_requests=1)  # keeps the one resting since 1003
    clock.now = 1011.5
    assert limiter.try_acquire() == pytest.approx(1.5)  # not 1001's permit
    limiter.adopt(max_requests=2)  # brings back 1002's, not 1001's
    assert limiter.try_acquire() == pytest.approx(0.5)


def test_a_higher_max_first_cancels_retirements_still_owed() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(4, 1.0, clock=clock)
    for _ in range(4):
        assert limiter.try_acquire() == 0.0
    limiter.adopt(max_requests=1)  # three permits in flight are owed
    limiter.adopt(max_requests=3)  # two of them are kept after all
    for _ in range(4):
        limiter.release()
    assert limiter.in_flight == 0
    clock.now += 1.0
    assert [limiter.try_acquire() for _ in range(4)] == [0.0, 0.0, 0.0, None]


def test_nothing_starts_while_retirements_are_owed() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(3, 1.0, clock=clock)
    for _ in range(3):
        assert limiter.try_acquire() == 0.0
    limiter.adopt(max_requests=1)
    limiter.release()
    limiter.cancel()
    clock.now += 5.0
    assert limiter.try_acquire() is None  # the one permit left is still in flight
    limiter.release()
    assert limiter.try_acquire() == pytest.approx(1.0)


def test_a_huge_announcement_costs_nothing() -> None:
    """A sandbox with its limit switched off announces 1,000,000,000: one run of permits."""
    clock = FakeClock()
    limiter = WindowLimiter(100, 10.0, clock=clock)
    limiter.observe(max_requests=1_000_000_000, interval_ms=10_000, remaining=0, follow=True)
    assert limiter.max_requests == 1_000_000_000
    limiter.observe(max_requests=100, interval_ms=None, remaining=None, follow=True)
    assert sum(limiter.try_acquire() == 0.0 for _ in range(200)) == 0  # rested by remaining=0
    clock.now += 10.0
    assert sum(limiter.try_acquire() == 0.0 for _ in range(200)) == 100


def test_remaining_zero_rests_free_permits_only() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(3, 10.0, clock=clock)
    assert limiter.try_acquire() == 0.0
    limiter.release()  # rests from 1000 to 1010
    clock.now += 5.0
    limiter.observe(max_requests=None, interval_ms=None, remaining=0)
    assert limiter.try_acquire() == pytest.approx(5.0)  # the resting one is not pushed back
    clock.now += 5.0
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == pytest.approx(5.0)  # the two free ones rest from 1005


def test_remaining_zero_spares_permits_freed_while_the_request_was_in_flight() -> None:
    """At a window's turn the first answer of the new window says Remaining 0 (the server
    still counted the old window's burst when this request arrived) just as that burst's
    permits come free. Those were counted, not spent by someone else: they stay free."""
    clock = FakeClock()
    limiter = WindowLimiter(3, 10.0, clock=clock)
    for _ in range(3):
        assert limiter.try_acquire() == 0.0
    limiter.release()  # the first permit rests from 1000
    clock.now += 0.1
    limiter.release()
    limiter.release()  # the other two rest from 1000.1
    clock.now = 1010.0
    assert limiter.try_acquire() == 0.0
    sent_at = clock.now
    clock.now = 1010.2  # the answer: meanwhile the two others came free
    limiter.release()
    limiter.observe(max_requests=None, interval_ms=None, remaining=0, sent_at=sent_at)
    assert limiter.try_acquire() == 0.0 and limiter.try_acquire() == 0.0
    # Permits that were already free when a request was sent are what Remaining 0 rests.
    idle = WindowLimiter(3, 10.0, clock=clock)
    assert idle.try_acquire() == 0.0
    sent_at = clock.now
    clock.now += 0.1
    idle.release()
    idle.observe(max_requests=None, interval_ms=None, remaining=0, sent_at=sent_at)
    assert idle.try_acquire() == pytest.approx(10.0)  # all three rest from the answer


def test_cancel_after_a_longer_interval_rests_from_the_permit_rest_start() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(1, 1.0, clock=clock)
    assert limiter.try_acquire() == 0.0
    limiter.release()  # rests from 1000
    clock.now += 1.0
    assert limiter.try_acquire() == 0.0
    limiter.adopt(interval_s=10.0)
    limiter.cancel()  # not sent: under 10 s it rests from its last answer, 1000
    assert limiter.try_acquire() == pytest.approx(9.0)


def test_adopt_rejects_nonsense() -> None:
    limiter = WindowLimiter(1, 1.0)
    with pytest.raises(ValueError):
        limiter.adopt(max_requests=0)
    with pytest.raises(ValueError):
        limiter.adopt(interval_s=0.0)


def test_a_huge_max_keeps_memory_to_the_permits_of_the_last_interval() -> None:
    """Far more permits than traffic: the used ones free again are merged, not kept one by
    one (20,000 requests here, 100 of them within an interval at any time)."""
    clock = FakeClock()
    limiter = WindowLimiter(1_000_000_000, 1.0, clock=clock)
    for _ in range(20_000):
        assert limiter.try_acquire() == 0.0
        clock.now += 0.01
        limiter.release()
    assert len(limiter._idle) < 1_000


def test_merged_free_permits_rest_from_the_latest_of_their_rest_starts() -> None:
    clock = FakeClock()
    limiter = WindowLimiter(2, 1.0, clock=clock)
    assert [limiter.try_acquire() for _ in range(2)] == [0.0, 0.0]
    limiter.release()  # rests from 1000
    clock.now += 0.5
    limiter.release()  # rests from 1000.5
    clock.now = 1002.0
    limiter._compact(clock.now)  # both free: one run
    assert limiter._idle == [(1000.5, 2)]
    limiter.adopt(interval_s=10.0)
    assert limiter.try_acquire() == pytest.approx(8.5)  # the cautious side: the latest

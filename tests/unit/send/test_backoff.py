from __future__ import annotations

import random

from pipeline.core.outcomes import Code, Status
from pipeline.highlevel.client import Answer, RateHeaders
from pipeline.send.backoff import Backoff


def failed(code: Code, rate: RateHeaders | None = None) -> Answer:
    return Answer(Status.FAILED, code, rate=rate or RateHeaders())


def test_ceiling_grows_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, cap_s=4.0)
    assert [backoff.ceiling(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_full_jitter_stays_within_the_ceiling() -> None:
    backoff = Backoff(base=1.0, cap_s=8.0, rng=random.Random(1))
    delays = [backoff.delay(3, failed(Code.SERVER_ERROR)) for _ in range(500)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert max(delays) > 3.0 and min(delays) < 1.0  # spread over the range, not fixed


def test_retry_after_wins_on_429() -> None:
    backoff = Backoff(base=0.1, cap_s=1.0)
    assert backoff.delay(1, failed(Code.RATE_LIMITED, RateHeaders(retry_after_s=7.0))) == 7.0


def test_spent_window_waits_part_of_the_interval() -> None:
    backoff = Backoff(rng=random.Random(3))
    answer = failed(Code.RATE_LIMITED, RateHeaders(remaining=0, interval_ms=10_000))
    assert all(5.0 <= backoff.delay(1, answer) <= 10.0 for _ in range(100))

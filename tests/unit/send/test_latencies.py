"""The request-time histogram behind the summary's p50 and p99."""

from __future__ import annotations

import json
import math
import random
import statistics

from hypothesis import given
from hypothesis import strategies as st

from pipeline.send.latencies import Latencies


def filled(times: list[float]) -> Latencies:
    found = Latencies()
    for t in times:
        found.add(t)
    return found


def test_quantiles_of_a_log_normal_sample_are_within_the_bucket_width() -> None:
    rng = random.Random(11)
    times = [0.08 * math.exp(rng.gauss(0.0, 0.7)) for _ in range(50_000)]
    found = filled(times)
    ordered = sorted(times)
    for q in (0.5, 0.99):
        exact = ordered[int(q * len(ordered)) - 1]
        estimate = found.quantile(q)
        assert estimate is not None
        assert abs(estimate / exact - 1) < 0.02, (q, estimate, exact)
    assert found.mean_s is not None
    assert math.isclose(found.mean_s, statistics.fmean(times), rel_tol=1e-9)


def test_nothing_measured_says_none() -> None:
    assert Latencies().milliseconds() == (None, None, None)


def test_workers_histograms_add_up_through_json() -> None:
    one, two = filled([0.01] * 10), filled([1.0] * 10)
    one.merge(Latencies.from_dict(json.loads(json.dumps(two.to_dict()))))
    assert one.count == 20 and math.isclose(one.total_s, 10.1)
    p50 = one.quantile(0.5)
    p99 = one.quantile(0.99)
    assert p50 is not None and 0.0099 < p50 < 0.0101
    assert p99 is not None and 0.99 < p99 < 1.01


@given(st.lists(st.floats(min_value=0.0, max_value=3000.0), min_size=1, max_size=200))
def test_any_times_give_ordered_quantiles_inside_their_range(times: list[float]) -> None:
    found = filled(times)
    p50, p99 = found.quantile(0.5), found.quantile(0.99)
    assert p50 is not None and p99 is not None
    assert p50 <= p99
    assert p99 <= max(max(times), 1e-4) * 1.02
    assert p50 >= min(times) / 1.02 or p50 == 1e-4

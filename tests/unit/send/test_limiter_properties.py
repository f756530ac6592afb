"""Property: driven by a simulated client, a LocationLimiter keeps every limit in force.

The client starts a request whenever the limiter hands out a permit; latencies are random,
the server counts each request at a random moment between its start and its answer, and
each answer announces the limit the server had when it counted that request (so an answer
can carry a limit older than one already seen: the server's phases change while requests
are in flight). Checked on the starts, which is the strict version (a permit rests from
the answer, after the server counted the request):

- the ceiling: no window of its T seconds holds more than its N starts, ever;
- the server's window as announced: from the moment an announcement is adopted and as long
  as it stays, no window of T seconds ending then holds more than N starts, even a window
  reaching back before the announcement (after a lower max, after a max that dipped and
  came back). The one exception is inherent: requests started under a shorter interval
  before a longer one was announced were paced by the shorter one, so windows that hold
  starts made under a shorter interval are left out.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from itertools import count
from operator import itemgetter
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.send import window as window_module
from pipeline.send.limiter import LocationLimiter, WindowLimiter
from tests.unit.send.test_limiter_location import FakeClock, Phase, Run, busiest, simulate

INTERVALS_MS = [250, 500, 1_000, 2_000, 5_000, 10_000]

limits = st.tuples(st.integers(1, 120), st.sampled_from(INTERVALS_MS))
phases = st.lists(
    st.tuples(st.integers(1, 250), st.sampled_from(INTERVALS_MS), st.floats(0.5, 15.0)),
    min_size=1,
    max_size=5,
)
latencies = st.sampled_from([(0.001, 0.01), (0.01, 0.2), (0.05, 1.0), (0.2, 3.0)])


def check_window(window: WindowLimiter, *, full: bool) -> None:
    """The bookkeeping the guarantees rest on (see WindowLimiter's docstring)."""
    assert 0 <= window._surplus <= window.in_flight
    assert window._surplus == 0 or not window._idle  # nothing starts while retirements owed
    if window._retired and window._idle:
        assert window._retired[-1][0] <= window._idle[0][0]  # retired rest earlier than in use
    if full:  # linear in the permits: not at every step, to keep the test fast
        idle = sum(map(itemgetter(1), window._idle))
        assert idle + window.in_flight - window._surplus == window.max_requests
        retired = list(map(itemgetter(0), window._retired))
        assert retired == sorted(retired)


def invariants() -> Callable[[LocationLimiter], None]:
    steps = count()

    def check(limiter: LocationLimiter) -> None:
        full = next(steps) % 16 == 0
        for window in limiter._windows:
            check_window(window, full=full)
        assert len({window.in_flight for window in limiter._windows}) == 1

    return check


def check_server_windows(run: Run) -> int:
    """Every start's window under the server limit adopted at that start; returns how many
    windows were checked (those holding no start made under a shorter interval)."""
    starts, adopted = run.starts, run.server_at_start
    changes = [
        j for j in range(1, len(starts)) if adopted[j].interval_s != adopted[j - 1].interval_s
    ]
    checked = 0
    for i, t in enumerate(starts):
        limit = adopted[i]
        lo = bisect_right(starts, t - limit.interval_s)
        hi = bisect_right(starts, t)
        shortest = adopted[lo].interval_s
        k = bisect_right(changes, lo)
        while k < len(changes) and changes[k] < hi:
            shortest = min(shortest, adopted[changes[k]].interval_s)
            k += 1
        if shortest >= limit.interval_s:
            checked += 1
            assert hi - lo <= limit.max_requests, (t, limit, hi - lo)
    return checked


@settings(max_examples=120, deadline=None)
@given(
    assumed=limits,
    ceiling=st.none() | limits,
    schedule=phases,
    latency=latencies,
    seed=st.integers(0, 2**32 - 1),
    cancel_rate=st.sampled_from([0.0, 0.1]),
)
def test_every_limit_in_force_holds(
    assumed: tuple[int, int],
    ceiling: tuple[int, int] | None,
    schedule: list[tuple[int, int, float]],
    latency: tuple[float, float],
    seed: int,
    cancel_rate: float,
) -> None:
    until = 0.0
    server: list[Phase] = []
    for max_requests, interval_ms, duration in schedule:
        until += duration
        server.append(Phase(max_requests, interval_ms, until))
    clock = FakeClock()
    # Merge free runs at every few runs (not only past 256) so that merging is exercised too.
    with patch.object(window_module, "_COMPACT_MIN", 4):
        limiter = LocationLimiter(
            (assumed[0], assumed[1] / 1000.0),
            None if ceiling is None else (ceiling[0], ceiling[1] / 1000.0),
            clock=clock,
        )
        run = simulate(
            limiter,
            clock,
            server,
            horizon=until + 10.0,
            latency=latency,
            seed=seed,
            cancel_rate=cancel_rate,
            max_starts=1_500,
            check=invariants(),
        )
    assert run.starts
    if ceiling is not None:
        n, interval_s = ceiling[0], ceiling[1] / 1000.0
        assert busiest(run.starts, interval_s) <= n
        assert busiest(sorted(run.arrivals), interval_s) <= n
    assert check_server_windows(run) > 0

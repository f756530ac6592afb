"""The progress bar's pure parts: which fields a narrow terminal drops, and the ETA of a
bursty run from the plan's estimate of the rows left (an injected clock)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import polars as pl
import pytest

from pipeline.inputs.planning import sending_seconds
from pipeline.observe.progress import (
    BAR_MIN,
    BAR_WIDTH,
    LABEL,
    Eta,
    Figures,
    JournalTail,
    RowsLeft,
    clock_time,
    fit,
    with_waits,
)
from pipeline.send.inflight import Gauge

BUSY = Figures(
    done=500,
    total=1000,
    rate=481.0,
    elapsed_s=65.0,
    eta_s=12.0,
    flight="in flight 1/25",
    counts="created 480 failed 8",
)


def line(width: int, figures: Figures = BUSY) -> str:
    bar, text = fit(width, figures)
    return " ".join([LABEL, *(["━" * bar] if bar else []), text])


# -- fields dropped on a narrow terminal ----------------------------------------------------


def test_a_wide_terminal_shows_every_field_and_the_whole_bar() -> None:
    bar, text = fit(160, BUSY)
    assert bar == BAR_WIDTH
    assert text == " 500/1000 481 rows/s 0:01:05 eta 0:00:12 in flight 1/25 created 480 failed 8"


def test_at_80_columns_in_flight_goes_first_then_the_bar_narrows() -> None:
    bar, text = fit(80, BUSY)
    assert "in flight" not in text
    assert BAR_MIN <= bar < BAR_WIDTH
    assert text == " 500/1000 481 rows/s 0:01:05 eta 0:00:12 created 480 failed 8"
    assert len(line(80)) == 80


def test_in_flight_goes_before_the_bar_narrows_at_all() -> None:
    full = len(line(500))
    assert "in flight" in fit(full, BUSY)[1]
    bar, text = fit(full - 1, BUSY)
    assert "in flight" not in text and bar == BAR_WIDTH


@pytest.mark.parametrize("width", range(36, 161))
def test_done_total_and_the_eta_always_fit(width: int) -> None:
    shown = line(width)
    assert len(shown) <= width, shown
    assert "500/1000" in shown and "eta 0:00:12" in shown


def test_the_order_fields_go_in() -> None:
    """The counts, then the elapsed time, then the rate, and the bar last."""
    widths = {
        "counts": max(w for w in range(200) if "created" not in fit(w, BUSY)[1]),
        "elapsed": max(w for w in range(200) if "0:01:05" not in fit(w, BUSY)[1]),
        "rate": max(w for w in range(200) if "rows/s" not in fit(w, BUSY)[1]),
        "bar": max(w for w in range(200) if not fit(w, BUSY)[0]),
    }
    assert widths["counts"] > widths["elapsed"] > widths["rate"] > widths["bar"]
    assert fit(widths["counts"] + 1, BUSY)[0] == BAR_MIN  # the bar narrowed first


def test_clock_time() -> None:
    assert clock_time(None) == "-:--:--"
    assert clock_time(4.6) == "0:00:05"
    assert clock_time(3725) == "1:02:05"


def test_figures_age_with_the_clock_between_updates() -> None:
    aged = Figures(1, 2, 1.0, elapsed_s=10.0, eta_s=3.0, at=100.0).aged(101.5)
    assert (aged.elapsed_s, aged.eta_s) == (11.5, 1.5)
    assert Figures(1, 2, 1.0, 10.0, eta_s=1.0, at=100.0).aged(105).eta_s == 0.0


# -- the ETA of a bursty run ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# One location's 100 rows at 25 per 2.5 s: a burst at 0, 2.5, 5 and 7.5 s (no latency).
PLAN = partial(sending_seconds, limits=[(25, 2.5)], daily_quota=10_000, latency_s=0.0)


def eta_at(clock: Clock, eta: Eta, at: float, left: int) -> float:
    clock.now = 1000.0 + at
    return eta.update([left])


def test_the_eta_counts_down_through_the_waits_of_a_run_that_keeps_the_plan() -> None:
    clock = Clock()
    eta = Eta(PLAN, [100], window_s=2.5, lag_s=0.5, clock=clock)
    assert PLAN([100]) == 7.5
    # (when, rows left as the journal shows them then): each burst shows a little late.
    for at, left in [(0.2, 75), (1.0, 75), (2.4, 75), (2.6, 75), (2.8, 50), (4.9, 50)]:
        assert eta_at(clock, eta, at, left) == pytest.approx(7.5 - at), at
    for at, left in [(5.3, 25), (7.4, 25)]:
        assert eta_at(clock, eta, at, left) == pytest.approx(7.5 - at), at
    assert eta_at(clock, eta, 7.6, 25) == 0.0  # the last burst, not in the journal yet
    assert eta_at(clock, eta, 7.8, 0) == 0.0


def test_a_run_slower_than_planned_pushes_the_eta_out() -> None:
    clock = Clock()
    eta = Eta(PLAN, [100], window_s=2.5, lag_s=0.5, clock=clock)
    eta_at(clock, eta, 0.2, 75)
    # A 429 held the location: its second burst has not come by 6 s.
    assert eta_at(clock, eta, 6.0, 75) == pytest.approx(5.0 - 0.5)  # its 3 bursts, less the lag


def test_a_run_faster_than_planned_pulls_the_eta_in() -> None:
    clock = Clock()
    eta = Eta(PLAN, [100], window_s=2.5, lag_s=0.5, clock=clock)
    # The location's rows were skipped but for the last 25, one burst away at most.
    assert eta_at(clock, eta, 0.5, 25) == pytest.approx(0.0 + 2.5)
    assert eta_at(clock, eta, 1.0, 0) == 0.0


def test_the_slowest_location_decides() -> None:
    clock = Clock()
    eta = Eta(PLAN, [100, 25], window_s=2.5, lag_s=0.5, clock=clock)
    clock.now += 0.3
    assert eta.update([75, 0]) == pytest.approx(7.5 - 0.3)


# -- rows left of each location, from the journals -------------------------------------------


def record(row: int, status: str = "created", code: str | None = None) -> str:
    fields = {"row_index": row, "status": status, "conversation_id": None, "error_code": code}
    return json.dumps(fields, separators=(",", ":")) + "\n"


def test_rows_left_of_each_location_follow_the_journal(tmp_path: Path) -> None:
    rows = RowsLeft(pl.Series([7, 3, 5, 9, 11]), pl.Series(["B", "A", "B", "A", "B"]))
    assert rows.left == [3, 2]  # B, A: in the order they come
    journal = tmp_path / "j"
    journal.write_text(record(3) + record(5, "exists", "id_not_found_yet") + record(40))
    tail = JournalTail([journal], {}, rows)
    tail.poll()
    assert rows.left == [2, 1]  # row 40 is not this run's: ignored
    with journal.open("a") as handle:
        handle.write(record(5, "exists") + record(11, "failed") + record(9))
    assert tail.poll() == {"created": 3, "exists": 1, "failed": 1}  # row 5 counted once
    assert rows.left == [1, 0]


def test_rows_waiting_for_their_ids_hold_the_eta_until_their_next_search() -> None:
    """Done in the journal is not done: the last waiting lookup's next search bounds the
    ETA from below; no lookups, no gauge (workers) or no ETA leave it as it is."""
    waiting = Gauge(looking_up=3, lookups_due_at=107.5)
    assert with_waits(0.0, waiting, now=100.0) == 7.5
    assert with_waits(12.0, waiting, now=100.0) == 12.0  # sending ends later still
    assert with_waits(0.0, waiting, now=110.0) == 0.0  # due: a search is on its way
    assert with_waits(0.0, Gauge(looking_up=0, lookups_due_at=107.5), now=100.0) == 0.0
    assert with_waits(0.0, None, now=100.0) == 0.0
    assert with_waits(None, waiting, now=100.0) is None


def test_a_row_waiting_to_retry_holds_the_eta_until_its_retry() -> None:
    """The last row left waits out a backoff: the plan's seconds for one row are gone in a
    round trip, but the run ends only after the retry."""
    assert with_waits(0.0, Gauge(retries_due_at=103.0), now=100.0) == 3.0
    assert with_waits(0.0, Gauge(retries_due_at=99.0), now=100.0) == 0.0  # retried by now
    both = Gauge(looking_up=1, lookups_due_at=104.0, retries_due_at=103.0)
    assert with_waits(1.0, both, now=100.0) == 4.0

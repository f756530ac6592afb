"""Progress while sending: a live bar on a terminal, a structured log line off one.

Progress is read from the journals, not from the senders: the journals already hold every
finished row (flushed every half second), they exist in single- and multi-process runs
alike, and reading them from a thread in the main process costs the senders nothing. The
figures lag the truth by at most a flush interval.

The ETA is the plan's (``planning.sending_seconds``, the dry run's estimator) applied to
the rows left of each location, not the rate so far: sending is bursty (a location's
window spent at once, then a wait), and a rate measured over a burst or a wait says
nothing of the time left. Rows per second stay a measurement. On a narrow terminal the
bar's line drops its least useful fields first (``fit``); done/total and the ETA stay.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl
import structlog
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, Task
from rich.table import Table
from rich.text import Text

from pipeline.state.journal import FLUSH_INTERVAL_S
from pipeline.state.tails import FileTails

if TYPE_CHECKING:
    from pipeline.send.inflight import Gauge

log = structlog.get_logger("pipeline.observe.progress")

ProgressMode = Literal["auto", "bar", "log", "none"]
_STATUS = re.compile(rb'"status":"([a-z_]+)"')
# A record's row and status (a record begins with them: ``journal._record``), and the record
# of a row whose id is still looked up (``lookups``): that row may have one record more.
_ROW_STATUS = re.compile(rb'"row_index":(\d+),"status":"([a-z_]+)"')
_LOOKING = re.compile(rb'"row_index":(\d+),[^\n]*"error_code":"id_not_found_yet"')


class RowsLeft:
    """The rows left to send, one count a location (``left``): a settled row's index names
    its location. Held as two sorted columns (12 bytes a row), not a dict of the rows."""

    def __init__(self, row_index: pl.Series, location_id: pl.Series) -> None:
        rows = pl.DataFrame({"row": row_index.cast(pl.Int64), "location": location_id})
        locations = rows.group_by("location", maintain_order=True).len().with_row_index("code")
        self.left: list[int] = locations["len"].to_list()
        # A join, not a rank: a rank sorts the ids (0.5 s for a million rows, against 0.07).
        rows = rows.join(locations.drop("len"), on="location").sort("row")
        self._rows = rows["row"]
        self._codes = rows["code"]

    def settle(self, rows: Sequence[int]) -> None:
        """Count ``rows`` (indices) as no longer left; an index not sent here is ignored."""
        if not rows or not len(self._rows):
            return
        wanted = pl.Series(rows, dtype=pl.Int64)
        at = self._rows.search_sorted(wanted).clip(0, len(self._rows) - 1)
        found = self._rows.gather(at) == wanted
        for code in self._codes.gather(at).filter(found).to_list():
            self.left[code] -= 1


class JournalTail:
    """Counts rows by status as journals grow, reading each byte once, and with ``rows``
    the rows left of each location.

    A row counts once: a row whose id is looked up later has its ``id_not_found_yet``
    record first and, once its id is found, a second record (``lookups``), which is not
    counted again. The rows with such a first record are few, so only their indices are
    kept, and every record's row index is read only while there are some, or for ``rows``."""

    def __init__(
        self, journals: list[Path], starts: dict[Path, int], rows: RowsLeft | None = None
    ) -> None:
        self._tails = FileTails({journal: starts.get(journal, 0) for journal in journals})
        self.counts: Counter[str] = Counter()
        self.rows = rows
        self._looked_up: set[bytes] = set()  # rows recorded id_not_found_yet

    def poll(self) -> Counter[str]:
        new = self._tails.read()
        if self.rows is None and not self._looked_up and b"id_not_found_yet" not in new:
            self.counts.update(m.decode() for m in _STATUS.findall(new))
            return self.counts
        looking = set(_LOOKING.findall(new))
        settled: list[int] = []
        for row, status in _ROW_STATUS.findall(new):
            if row in self._looked_up:
                continue  # its second record: the row is counted already
            self.counts[status.decode()] += 1
            settled.append(int(row))
            if row in looking:
                self._looked_up.add(row)
        if self.rows is not None:
            self.rows.settle(settled)
        return self.counts


Seconds = Callable[[Sequence[int]], float]  # rows left, one count a location -> seconds


def with_waits(eta: float | None, gauge: Gauge | None, now: float) -> float | None:
    """The ETA, no sooner than the last waiting lookup's next search or the latest retry
    scheduled: rows waiting for their ids (the search index lags behind creates) are done in
    the journal, and a row waiting to retry is in no plan, but the run ends only after
    them. (No gauge with workers: theirs are apart.)"""
    if eta is None or gauge is None:
        return eta
    due = max(gauge.retries_due_at, gauge.lookups_due_at if gauge.looking_up else 0.0)
    return max(eta, due - now)


class Eta:
    """When sending ends, from the plan's estimate (``seconds``) of the rows left.

    The rows left started no sooner than ``lag_s`` ago (a row shows in the journal up to a
    flush interval after it settled), so the end is at least ``seconds(left) - lag_s``
    away; and at most one window (``window_s``: a limit's interval and a round trip) more
    than ``seconds(left)``, the wait for the next window. Between those bounds the end
    found so far holds, and the ETA counts down with the clock through a location's wait,
    when no row settles; a run slower than planned pushes it out, one faster (or rows
    skipped at once) pulls it in. The first end is the plan's, from the start."""

    def __init__(
        self,
        seconds: Seconds,
        left: Sequence[int],
        *,
        window_s: float,
        lag_s: float = FLUSH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = seconds
        self._window_s = window_s
        self._lag_s = lag_s
        self._clock = clock
        self._end = clock() + seconds(left)

    def update(self, left: Sequence[int]) -> float:
        """Seconds left, with ``left`` rows left of each location now."""
        now = self._clock()
        if not any(left):
            self._end = now
            return 0.0
        soonest = now + self._seconds(left)
        self._end = min(max(self._end, soonest - self._lag_s), soonest + self._window_s)
        return max(0.0, self._end - now)


@dataclass(frozen=True, slots=True)
class Figures:
    """What the bar's line shows, as numbers and texts."""

    done: int
    total: int
    rate: float  # rows a second so far: a measurement
    elapsed_s: float
    eta_s: float | None
    flight: str = ""  # requests in flight now and the limit ("" with workers)
    counts: str = ""  # rows by status
    at: float = 0.0  # when (time.monotonic): the times count on until the next figures

    def aged(self, now: float) -> Figures:
        """The figures at ``now``: the elapsed time and the ETA moved on by the clock."""
        age = max(0.0, now - self.at)
        eta = None if self.eta_s is None else max(0.0, self.eta_s - age)
        return replace(self, elapsed_s=self.elapsed_s + age, eta_s=eta, at=now)


LABEL = "sending"
BAR_WIDTH = 40  # the bar's width when there is room
BAR_MIN = 10  # narrower than this, the bar goes after the other fields
# The optional fields, least useful first: each goes before the next. The in-flight figures
# go before the bar narrows, the others once it is down to BAR_MIN. done/total and the ETA
# always stay.
DROPPED_FIRST = ("flight", "counts", "elapsed", "rate")


def clock_time(seconds: float | None) -> str:
    """``0:01:05``; ``-:--:--`` when unknown."""
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def fit(width: int, figures: Figures) -> tuple[int, str]:
    """The bar's width (0: no bar) and the text after it, so that the whole line,
    ``sending BAR TEXT``, fits ``width`` columns: the in-flight figures go first (before
    the bar narrows), then the bar narrows down to ``BAR_MIN``, then go the counts by
    status, the elapsed time, the rate, and last the bar. done/total and the ETA stay."""
    done = f"{figures.done:>{len(str(figures.total))}}/{figures.total}"
    fields = {  # in the line's order
        "rate": f"{figures.rate:,.0f} rows/s",
        "elapsed": clock_time(figures.elapsed_s),
        "eta": f"eta {clock_time(figures.eta_s)}",
        "flight": figures.flight,
        "counts": figures.counts,
    }

    def text() -> str:
        return " ".join(part for part in (done, *fields.values()) if part)

    for dropping in (None, *DROPPED_FIRST):
        if dropping is not None:
            fields.pop(dropping)
        room = width - len(LABEL) - len(text()) - 2  # a space each side of the bar
        if room >= (BAR_WIDTH if dropping is None else BAR_MIN):
            return min(BAR_WIDTH, room), text()
    return (room if room >= 3 else 0), text()


class _Line(ProgressColumn):
    """The whole line (label, bar, figures) laid out by ``fit`` for the console's width
    at each refresh, a resized terminal included."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console
        self._bar = BarColumn()

    def render(self, task: Task) -> RenderableType:
        figures: Figures | None = task.fields.get("figures")
        if figures is None:
            return Text(LABEL)
        bar_width, text = fit(self._console.width, figures.aged(time.monotonic()))
        line = Table.grid(padding=(0, 1))
        cells: list[RenderableType] = [Text(LABEL)]
        if bar_width:
            self._bar.bar_width = bar_width
            cells.append(self._bar.render(task))
        cells.append(Text(text, no_wrap=True, overflow="crop"))
        line.add_row(*cells)
        return line


class ProgressReporter:
    """Runs beside the senders in a thread; ``with`` starts and stops it."""

    def __init__(
        self,
        tail: JournalTail,
        total: int,
        *,
        mode: ProgressMode,
        interval_s: float = 5.0,
        console: Console | None = None,
        gauge: Gauge | None = None,
        eta: Eta | None = None,
    ) -> None:
        self._tail = tail
        self._total = total
        self._gauge = gauge
        self._eta = eta
        self._console = console or Console(
            stderr=True, force_terminal=True if mode == "bar" else None
        )
        if mode == "auto":
            mode = "bar" if self._console.is_terminal else "log"
        self._mode = mode
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._started = 0.0

    @property
    def shows_bar(self) -> bool:
        """Whether a live bar holds the terminal (log lines must then pass through it)."""
        return self._mode == "bar" and bool(self._total)

    def __enter__(self) -> ProgressReporter:
        if self._mode != "none" and self._total:
            self._started = time.monotonic()
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _figures(self) -> tuple[int, float, float | None, str]:
        counts = self._tail.poll()
        done = sum(counts.values())
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = done / elapsed
        eta: float | None = None
        if self._eta is not None and self._tail.rows is not None:
            eta = self._eta.update(self._tail.rows.left)
        elif rate > 0:  # no plan to go by: the rate so far
            eta = (self._total - done) / rate
        eta = with_waits(eta, self._gauge, time.monotonic())
        summary = " ".join(f"{status} {count}" for status, count in sorted(counts.items()))
        return done, rate, eta, summary

    def _run(self) -> None:
        if self._mode == "bar":
            self._run_bar()
        else:
            self._run_log()

    def _run_log(self) -> None:
        while not self._stop.wait(self._interval_s):
            done, rate, eta, _ = self._figures()
            log.info(
                "progress",
                done=done,
                total=self._total,
                percent=round(100 * done / self._total, 1),
                rows_per_s=round(rate, 1),
                eta_s=None if eta is None else round(eta, 1),
                by_status=dict(self._tail.counts),
                **self._flight(),
            )

    def _flight(self) -> dict[str, int]:
        """Requests in flight now and the limit now, and the ids still looked up (none with
        workers: theirs are apart)."""
        if self._gauge is None:
            return {}
        return {
            "in_flight": self._gauge.in_flight,
            "in_flight_limit": self._gauge.limit,
            "looking_up": self._gauge.looking_up,
        }

    def _flight_text(self) -> str:
        flight = self._flight()
        if not flight:
            return ""
        text = f"in flight {flight['in_flight']}/{flight['in_flight_limit']}"
        if flight["looking_up"]:
            text += f", looking up {flight['looking_up']} ids"
        return text

    def _bar_figures(self) -> Figures:
        done, rate, eta, summary = self._figures()
        now = time.monotonic()
        flight = self._flight_text()
        return Figures(done, self._total, rate, now - self._started, eta, flight, summary, now)

    def _run_bar(self) -> None:
        line = _Line(self._console)
        with Progress(line, console=self._console, transient=False, expand=False) as bar:
            figures = self._bar_figures()  # from the first frame: done/total and the plan's ETA
            task = bar.add_task(LABEL, total=self._total, completed=figures.done, figures=figures)
            while True:
                stopping = self._stop.wait(min(self._interval_s, 0.5))
                figures = self._bar_figures()
                bar.update(task, completed=figures.done, figures=figures)
                if stopping:
                    break

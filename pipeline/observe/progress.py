"""Progress while sending: a live bar on a terminal, a structured log line off one.

Progress is read from the journals, not from the senders: the journals already hold every
finished row (flushed every half second), they exist in single- and multi-process runs
alike, and reading them from a thread in the main process costs the senders nothing. The
figures lag the truth by at most a flush interval.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

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


class JournalTail:
    """Counts rows by status as journals grow, reading each byte once.

    A row counts once: a row whose id is looked up later has its ``id_not_found_yet``
    record first and, once its id is found, a second record (``lookups``), which is not
    counted again. The rows with such a first record are few, so only their indices are
    kept, and every record's row index is read only while there are some."""

    def __init__(self, journals: list[Path], starts: dict[Path, int]) -> None:
        self._tails = FileTails({journal: starts.get(journal, 0) for journal in journals})
        self.counts: Counter[str] = Counter()
        self._looked_up: set[bytes] = set()  # rows recorded id_not_found_yet

    def poll(self) -> Counter[str]:
        new = self._tails.read()
        if not self._looked_up and b"id_not_found_yet" not in new:
            self.counts.update(m.decode() for m in _STATUS.findall(new))
            return self.counts
        looking = set(_LOOKING.findall(new))
        for row, status in _ROW_STATUS.findall(new):
            if row in self._looked_up:
                continue  # its second record: the row is counted already
            self.counts[status.decode()] += 1
            if row in looking:
                self._looked_up.add(row)
        return self.counts


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
    ) -> None:
        self._tail = tail
        self._total = total
        self._gauge = gauge
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
        eta = (self._total - done) / rate if rate > 0 else None
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

    def _run_bar(self) -> None:
        columns = (
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9} rows/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[flight]}"),
            TextColumn("{task.fields[counts]}"),
        )
        with Progress(*columns, console=self._console, transient=False) as bar:
            task = bar.add_task("sending", total=self._total, rate="-", counts="", flight="")
            while True:
                stopping = self._stop.wait(min(self._interval_s, 0.5))
                done, rate, _, summary = self._figures()
                bar.update(
                    task,
                    completed=done,
                    rate=f"{rate:,.0f}",
                    counts=summary,
                    flight=self._flight_text(),
                )
                if stopping:
                    break

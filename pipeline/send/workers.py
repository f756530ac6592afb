"""Past one process: ``--workers N`` sends from N processes, each owning whole locations.

A location is owned by exactly one worker (a stable hash of its id: CRC-32, the same on
every machine and every run), so each location's rate limit lives in exactly one limiter
and the API never sees two processes share a location's budget. Each worker runs the same
sending session as a single-process run and keeps its own journal
(``results.parquet.journal.wK``, ``OutputFiles.journals``); the parent merges the journals
into one results file in input order.

Signals: the workers run in their own process group, so a Ctrl-C on the terminal reaches the
parent only, which passes it on exactly once (a second Ctrl-C is passed on again, and makes
the workers leave at once, as in a single process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import polars as pl
import structlog

from pipeline.auth.tokens import Tokens
from pipeline.core import logs
from pipeline.core.outcomes import Code
from pipeline.send.latencies import Latencies
from pipeline.send.session import SessionResult, run_async, send_session
from pipeline.state.journal import JournalWriter
from pipeline.state.output_files import OutputFiles
from pipeline.state.tails import FileTails

if TYPE_CHECKING:  # the invocation: the engine reads it, the app builds it
    from pipeline.app.job import Job

log = structlog.get_logger("pipeline.send.workers")


def owner(location_id: str, workers: int) -> int:
    return zlib.crc32(location_id.encode()) % workers


def split(sendable: pl.DataFrame, workers: int) -> list[pl.DataFrame]:
    """Each worker's rows, in input order; a location's rows all go to one worker."""
    locations = sendable["location_id"].unique()
    owners = pl.DataFrame(
        {"location_id": locations, "_worker": [owner(loc, workers) for loc in locations.to_list()]},
        schema={"location_id": pl.String, "_worker": pl.Int64},
    )
    tagged = sendable.join(owners, on="location_id", how="left", maintain_order="left")
    return [tagged.filter(pl.col("_worker") == k).drop("_worker") for k in range(workers)]


@dataclass(frozen=True, slots=True)
class WorkerJob:
    index: int
    job: Job
    tokens: Tokens
    rows_path: Path
    journal_path: Path
    fingerprint: str
    resume_at: int | None
    report_path: Path
    log_format: logs.LogFormat
    log_level: int
    parent_pid: int
    relay_log: Path | None = None  # log here for the parent to relay (a bar is live)


def _work(work: WorkerJob, ready: threading.Barrier) -> None:
    """A worker process: one sending session over its own rows and journal.

    Workers start sending together (``ready``), once all have paid their start-up cost, so
    that no worker's location waits on another's imports.
    """
    os.setpgrp()  # the terminal's Ctrl-C goes to the parent, which passes it on once
    if work.relay_log is not None:
        relay = work.relay_log.open("a", encoding="utf-8", buffering=1)
        logs.configure("console", level=work.log_level, stream=relay)
    else:
        logs.configure(work.log_format, level=work.log_level, log_file=work.job.config.log_file)
    for token in work.tokens.all():
        logs.register_secret(token)
    structlog.contextvars.bind_contextvars(worker=work.index)
    sendable = pl.read_parquet(work.rows_path)
    journal = JournalWriter(
        work.journal_path, fingerprint=work.fingerprint, resume_at=work.resume_at
    )
    with contextlib.suppress(threading.BrokenBarrierError):
        ready.wait(timeout=120)
    try:
        result = run_async(
            # A worker owns its process: the parent forwards SIGINT/SIGTERM to it.
            send_session(
                replace(work.job, handle_signals=True),
                work.tokens,
                sendable,
                journal,
                parent_pid=work.parent_pid,
            )
        )
    finally:
        journal.close()
    report = {
        "requests": result.requests,
        "stop_code": result.stop_code,
        "signal": result.signal,
        "stop_detail": result.stop_detail,
        "peak_in_flight": result.peak_in_flight,
        "latencies": result.latencies.to_dict(),
        "throttled": result.throttled,
        "token_refreshes": result.token_refreshes,
        "tokens_minted": result.tokens_minted,
        "daily_remaining": result.daily_remaining,
    }
    work.report_path.write_text(json.dumps(report), encoding="utf-8")


def run_workers(
    job: Job,
    tokens: Tokens,
    sendable: pl.DataFrame,
    *,
    files: OutputFiles,
    fingerprint: str,
    resume_at: dict[Path, int],
    log_format: logs.LogFormat,
    log_level: int = logging.INFO,
    relay_logs: bool = False,
) -> tuple[SessionResult, dict[Path, int]]:
    """Send ``sendable`` from ``job.config.workers`` processes, each with its journal of
    ``files``; returns the merged session result and, per journal, the offset where this
    run's records begin. ``relay_logs``: a progress bar holds the terminal, so the workers
    log into files whose lines this process prints above the bar (a worker writing to the
    terminal itself would write into the bar)."""
    context = multiprocessing.get_context("spawn")
    journals = files.journals(job.config.workers)
    parts = split(sendable, len(journals))
    received: list[int] = []
    with files.worker_files() as shared:
        works: list[WorkerJob] = []
        processes: list[multiprocessing.process.BaseProcess] = []
        for index, (part, journal) in enumerate(zip(parts, journals, strict=True)):
            rows_path = shared.rows(index)
            part.write_parquet(rows_path)
            work = WorkerJob(
                index=index,
                job=job,
                tokens=tokens,
                rows_path=rows_path,
                journal_path=journal,
                fingerprint=fingerprint,
                resume_at=resume_at.get(journal),
                report_path=shared.report(index),
                log_format=log_format,
                log_level=log_level,
                parent_pid=os.getpid(),
                relay_log=shared.log(index) if relay_logs else None,
            )
            works.append(work)

        def forward(signum: int, _frame: FrameType | None) -> None:
            received.append(signum)
            for process in processes:
                if process.pid is not None and process.is_alive():
                    os.kill(process.pid, signum)

        owned = (signal.SIGINT, signal.SIGTERM) if job.handle_signals else ()
        previous = {sig: signal.signal(sig, forward) for sig in owned}
        try:
            ready = context.Barrier(len(works))
            for work in works:
                started = context.Process(
                    target=_work, args=(work, ready), name=f"pipeline-worker-{work.index}"
                )
                started.start()
                processes.append(started)
            log.info("workers started", workers=len(processes), rows=[p.height for p in parts])
            with LogRelay([w.relay_log for w in works if w.relay_log is not None]):
                for running in processes:
                    running.join()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        requests, stop_code, detail = 0, None, None
        peak, throttled, refreshes, minted = 0, 0, 0, 0
        latencies = Latencies()
        daily_remaining: dict[str, int] = {}
        for work, ended in zip(works, processes, strict=True):
            if not work.report_path.exists():
                log.error(
                    "worker ended without a report", worker=work.index, exitcode=ended.exitcode
                )
                stop_code = stop_code or Code.INTERRUPTED
                continue
            report = json.loads(work.report_path.read_text(encoding="utf-8"))
            requests += int(report["requests"])
            peak += int(report.get("peak_in_flight", 0))  # the workers' peaks, added: at most
            latencies.merge(Latencies.from_dict(report.get("latencies", {})))
            throttled += int(report.get("throttled", 0))
            refreshes += int(report.get("token_refreshes", 0))
            minted += int(report.get("tokens_minted", 0))
            daily_remaining.update(report.get("daily_remaining", {}))  # locations are apart
            if report["stop_code"] and stop_code is None:
                stop_code = Code(report["stop_code"])
                detail = report.get("stop_detail")
    starts = {journal: _start_offset(journal, resume_at.get(journal)) for journal in journals}
    signal_ = received[0] if received else None
    result = SessionResult(
        requests,
        stop_code,
        signal_,
        detail,
        peak,
        latencies,
        throttled,
        daily_remaining,
        refreshes,
        minted,
    )
    return result, starts


class LogRelay:
    """Copies the complete lines the workers append to their log files onto this process's
    standard error, looked up at each write (where rich's live bar catches them and prints
    them above itself); ``with`` starts it and, on leaving, copies what is left."""

    def __init__(self, paths: list[Path], interval_s: float = 0.2) -> None:
        self._tails = FileTails(dict.fromkeys(paths, 0))
        self._any = bool(paths)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-relay", daemon=True)

    def __enter__(self) -> LogRelay:
        if self._any:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.copy()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.copy()

    def copy(self) -> None:
        lines = self._tails.read()
        if lines:
            sys.stderr.write(lines.decode("utf-8", errors="replace"))
            sys.stderr.flush()


def _start_offset(journal: Path, resume_at: int | None) -> int:
    """Where this run's records begin in a worker's journal: after the header, or the old end."""
    if resume_at:
        return resume_at
    if not journal.exists():
        return 0
    with journal.open("rb") as handle:
        return len(handle.readline())

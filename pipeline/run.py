"""The job, end to end: read → validate and plan → send (journalled) → write results.

This module only sequences the stages and owns the run's lifecycle: which earlier outcomes
count (``--resume``, ``pipeline retry``), the journal's birth and removal, and signals.
Each stage lives in its own module and knows nothing of the ones after it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import structlog

from pipeline.backoff import Backoff
from pipeline.client import ConversationsClient
from pipeline.errors import UsageError
from pipeline.journal import (
    JournalContents,
    JournalWriter,
    fingerprint,
    journal_path,
    read_journal,
    read_records,
)
from pipeline.outcomes import Code
from pipeline.planning import IdRules, plan, to_send
from pipeline.reading import read_input
from pipeline.results import (
    OUTCOME_SCHEMA,
    assemble,
    outcomes_from_results,
    settled,
    write_atomically,
)
from pipeline.sending import LocationBatch, Sender
from pipeline.settings import RunSettings
from pipeline.summary import Summary, summarise

log = structlog.get_logger("pipeline.run")


@dataclass(frozen=True, slots=True)
class RunResult:
    summary: Summary
    results: pl.DataFrame
    signal: int | None = None  # the signal that interrupted the run, if one did


def check_paths(settings: RunSettings) -> None:
    """Refuse an output that would clobber the input, before reading anything."""
    if settings.output_path.resolve() == settings.input_path.resolve():
        raise UsageError(
            f"{settings.output_path}: the output would overwrite the input; choose another -o"
        )
    if settings.output_path.is_dir():
        raise UsageError(
            f"{settings.output_path}: the output is a directory; "
            "give a file path such as out/results.parquet"
        )


def load_plan(settings: RunSettings) -> pl.DataFrame:
    rows = read_input(
        settings.input_path,
        contact_column=settings.contact_column,
        location_column=settings.location_column,
    )
    rules = IdRules(settings.id_pattern, settings.id_max_length)
    try:
        return plan(rows, rules).collect()
    except pl.exceptions.PolarsError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{settings.input_path}: cannot be read: {first}") from exc


def location_batches(sendable: pl.DataFrame) -> Iterator[LocationBatch]:
    """The rows to send grouped by location, locations in order of first appearance."""
    parts = sendable.partition_by("location_id", maintain_order=True, as_dict=True)
    for (location_id,), part in parts.items():
        yield LocationBatch(str(location_id), _pairs(part))


def _pairs(part: pl.DataFrame, chunk: int = 4096) -> Iterator[tuple[int, str]]:
    """(row_index, contact_id) pairs, turned into Python objects a chunk at a time."""
    for offset in range(0, part.height, chunk):
        piece = part.slice(offset, chunk)
        yield from zip(piece["row_index"].to_list(), piece["contact_id"].to_list(), strict=True)


def _earlier_outcomes(
    settings: RunSettings, planned: pl.DataFrame, *, resume: bool, retry_from: Path | None
) -> tuple[pl.DataFrame, JournalContents | None]:
    """Settled outcomes of earlier runs that this run must keep and not send again."""
    journal = journal_path(settings.output_path)
    contents: JournalContents | None = None
    if journal.exists() and not settings.dry_run:
        if not resume:
            raise UsageError(
                f"{journal}: an unfinished run left this journal; add --resume to continue it "
                "(or delete the journal to start over)"
            )
        contents = read_journal(journal)
        if contents.valid_bytes and contents.fingerprint != fingerprint(planned):
            raise UsageError(
                f"{journal}: the journal belongs to a different input (the rows differ); "
                "use the input it was written for, or another -o"
            )
    parts: list[pl.DataFrame] = []
    if retry_from is not None:
        parts.append(outcomes_from_results(retry_from, planned))
    if resume and settings.output_path.exists():
        parts.append(outcomes_from_results(settings.output_path, planned))
    if contents is not None:
        parts.append(settled(contents.outcomes))
    if not parts:
        return pl.DataFrame(schema=OUTCOME_SCHEMA), contents
    earlier = pl.concat(parts).unique(subset="row_index", keep="last", maintain_order=True)
    return earlier, contents


async def _send(
    settings: RunSettings, token: str, sendable: pl.DataFrame, journal: JournalWriter
) -> tuple[int, Code | None, int | None]:
    """Send under signal handlers; returns (requests, stop code, signal received)."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    async with ConversationsClient(
        base_url=settings.base_url,
        token=token,
        api_version=settings.api_version,
        timeout_s=settings.timeout_s,
        max_connections=settings.concurrency,
        stack=settings.http_stack,
    ) as client:
        sender = Sender(
            client,
            rate=settings.rate,
            concurrency=settings.concurrency,
            max_attempts=settings.max_attempts,
            max_total_backoff_s=settings.max_total_backoff_s,
            sink=journal.add,
            grace_s=min(settings.timeout_s, 10.0),
            backoff=Backoff(base_s=settings.backoff_base_s),
        )

        def on_signal(signum: int) -> None:
            if received:  # a second signal: leave now; the journal holds every settled row
                journal.flush()
                os._exit(128 + signum)
            received.append(signum)
            log.warning(
                "signal received: finishing requests in flight", signal=signal.Signals(signum).name
            )
            sender.stop(Code.INTERRUPTED)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        flusher = asyncio.create_task(journal.flush_periodically())
        try:
            stats = await sender.run(location_batches(sendable))
        finally:
            flusher.cancel()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    return stats.requests, sender.stop_code, received[0] if received else None


def execute(
    settings: RunSettings,
    token: str | None,
    *,
    resume: bool = False,
    retry_from: Path | None = None,
) -> RunResult:
    check_paths(settings)
    if token is None and not settings.dry_run:
        raise UsageError("no API token: set GHL_TOKEN (or name another variable with --token-env)")
    started = time.monotonic()
    planned = load_plan(settings)
    earlier, journal_contents = _earlier_outcomes(
        settings, planned, resume=resume, retry_from=retry_from
    )
    sendable = to_send(planned).join(earlier.select("row_index"), on="row_index", how="anti")
    log.info(
        "planned",
        rows=planned.height,
        already_done=earlier.height,
        to_send=sendable.height,
        locations=sendable["location_id"].n_unique(),
        rate=str(settings.rate),
        dry_run=settings.dry_run,
    )
    requests, stop_code, received = 0, None, None
    this_run = pl.DataFrame(schema=OUTCOME_SCHEMA)
    journal_file = journal_path(settings.output_path)
    if token is not None and not settings.dry_run and sendable.height:
        journal = JournalWriter(
            journal_file, fingerprint=fingerprint(planned), resume_from=journal_contents
        )
        try:
            requests, stop_code, received = asyncio.run(_send(settings, token, sendable, journal))
        finally:
            journal.close()
        this_run = read_records(journal_file, start=journal.start_offset)
    unsent = Code.DRY_RUN if settings.dry_run else (stop_code or Code.INTERRUPTED)
    everything = pl.concat([earlier, this_run]).unique(subset="row_index", keep="last")
    results = assemble(planned, everything, unsent=unsent)
    write_atomically(results, settings.output_path)
    if not settings.dry_run:
        journal_file.unlink(missing_ok=True)  # the results now hold all it did
    summary = summarise(results, requests=requests, elapsed_s=time.monotonic() - started)
    log.info("finished", **summary.to_dict())
    return RunResult(summary, results, received)

"""The job, end to end: read → validate and plan → send → write results → summarise.

This module only sequences the stages; each stage lives in its own module and knows nothing
of the ones after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl
import structlog

from pipeline.client import ConversationsClient
from pipeline.errors import UsageError
from pipeline.outcomes import Code
from pipeline.planning import IdRules, plan, to_send
from pipeline.reading import read_input
from pipeline.results import OutcomeColumns, assemble, write_atomically
from pipeline.sending import LocationBatch, Sender, SendStats
from pipeline.settings import RunSettings
from pipeline.summary import Summary, summarise

log = structlog.get_logger("pipeline.run")


@dataclass(frozen=True, slots=True)
class RunResult:
    summary: Summary
    results: pl.DataFrame


def check_paths(settings: RunSettings) -> None:
    """Refuse an output that would clobber the input, before reading anything."""
    if settings.output_path.resolve() == settings.input_path.resolve():
        raise UsageError(
            f"{settings.output_path}: the output would overwrite the input; choose another -o"
        )
    if settings.output_path.exists() and settings.output_path.is_dir():
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
    for (location_id,), part in sendable.partition_by(
        "location_id", maintain_order=True, as_dict=True
    ).items():
        yield LocationBatch(
            str(location_id), part["row_index"].to_list(), part["contact_id"].to_list()
        )


async def send(
    settings: RunSettings, token: str, sendable: pl.DataFrame, outcomes: OutcomeColumns
) -> SendStats:
    async with ConversationsClient(
        base_url=settings.base_url,
        token=token,
        api_version=settings.api_version,
        timeout_s=settings.timeout_s,
        max_connections=settings.concurrency,
    ) as client:
        sender = Sender(
            client,
            rate=settings.rate,
            concurrency=settings.concurrency,
            max_attempts=settings.max_attempts,
            max_total_backoff_s=settings.max_total_backoff_s,
            sink=outcomes.add,
        )
        return await sender.run(location_batches(sendable))


def execute(settings: RunSettings, token: str | None) -> RunResult:
    check_paths(settings)
    if token is None and not settings.dry_run:
        raise UsageError("no API token: set GHL_TOKEN (or name another variable with --token-env)")
    started = time.monotonic()
    planned = load_plan(settings)
    sendable = to_send(planned)
    log.info(
        "planned",
        rows=planned.height,
        to_send=sendable.height,
        locations=sendable["location_id"].n_unique(),
        rate=str(settings.rate),
        dry_run=settings.dry_run,
    )
    outcomes = OutcomeColumns()
    requests = 0
    if token is not None and not settings.dry_run and sendable.height:
        stats = asyncio.run(send(settings, token, sendable, outcomes))
        requests = stats.requests
    results = assemble(
        planned, outcomes.to_frame(), unsent=Code.DRY_RUN if settings.dry_run else Code.INTERRUPTED
    )
    write_atomically(results, settings.output_path)
    summary = summarise(results, requests=requests, elapsed_s=time.monotonic() - started)
    log.info("finished", **summary.to_dict())
    return RunResult(summary, results)

"""The job, end to end: read → validate and plan → send (journalled) → write results.

This module only sequences the stages and owns the run's lifecycle: which earlier outcomes
count (``--resume``, ``pipeline retry``), the journal's birth and removal, and signals.
Each stage lives in its own module and knows nothing of the ones after it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import structlog

from pipeline.errors import UsageError
from pipeline.journal import (
    JournalContents,
    JournalWriter,
    fingerprint,
    journal_path,
    read_journal,
    read_records,
)
from pipeline.locking import exclusive
from pipeline.outcomes import Code
from pipeline.planning import IdRules, PlanEstimate, check, estimate, find_duplicates, mark, to_send
from pipeline.progress import JournalTail, ProgressReporter
from pipeline.reading import is_uri, read_input
from pipeline.report import Report, RunInfo, build_report
from pipeline.results import (
    OUTCOME_SCHEMA,
    assemble,
    compact,
    outcomes_from_results,
    settled,
    skipped_rows,
    write_atomically,
)
from pipeline.session import SessionResult, run_async, send_session
from pipeline.settings import RunSettings
from pipeline.tokens import Tokens
from pipeline.workers import run_workers

log = structlog.get_logger("pipeline.run")


@dataclass(frozen=True, slots=True)
class RunResult:
    report: Report
    signal: int | None = None  # the signal that interrupted the run, if one did
    plan: PlanEstimate | None = None
    stop_detail: str | None = None  # why the run stopped itself, in a line (unreachable API)


def check_output_folder(output: Path) -> None:
    """The output's folder must exist (it is created) and be writable, before anything else."""
    folder = output.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"{folder}: cannot create the output folder ({exc.strerror or exc})"
        ) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{folder}: the output folder is not writable")


def check_paths(settings: RunSettings, *, resume: bool) -> None:
    """Refuse an output that should not be written, before anything is sent."""
    where = settings.results_location
    if settings.output_uri is not None:
        same = settings.output_uri == settings.source
    else:
        same = not is_uri(settings.source) and Path(settings.source).resolve() == where
    if same or (
        settings.output_uri is None
        and settings.output_path.resolve() == Path(settings.source).resolve()
    ):
        raise UsageError(f"{where}: the output would overwrite the input; choose another -o")
    if settings.output_uri is None and settings.output_path.is_dir():
        raise UsageError(
            f"{where}: the output is a directory; give a file path such as out/results.parquet"
        )
    if results_exist(settings) and not (resume or settings.overwrite):
        raise UsageError(
            f"{where}: the output exists; add --overwrite to replace it, "
            "or --resume to continue the run that wrote it"
        )


def results_exist(settings: RunSettings) -> bool:
    if settings.output_uri is None:
        return settings.output_path.exists()
    try:
        pl.read_parquet_metadata(settings.output_uri)
    except FileNotFoundError:
        return False
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{settings.output_uri}: cannot be reached ({first})") from exc
    return True


def staging_folder(output: Path) -> Path:
    """Where a run keeps its working files: beside the output, hidden, one per output."""
    return output.with_name(f".{output.name}.stage")


@contextlib.contextmanager
def staging(output: Path) -> Iterator[Path]:
    """A clean staging folder for this run, removed when it ends however it ends.

    It is only ever used under the output's lock, so anything already there was left by a
    run that died (``kill -9``) and is removed first."""
    folder = staging_folder(output)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_plan(settings: RunSettings, stage: Path) -> pl.LazyFrame:
    """Read and check the input into a Parquet file in ``stage``, find the duplicates, and
    return the plan as a lazy query over that file.

    The input is parsed once, streaming, whatever its size; only the row IDs (and any
    --keep-columns) reach the file. Every later stage scans the file, so no stage holds the
    input in memory."""
    rules = IdRules(settings.id_pattern, settings.id_max_length)
    given = settings.columns.location_id
    if given is not None and not rules.accepts(given.strip()):
        raise UsageError(f"--location-id {given!r}: not a valid location id ({rules.describe()})")
    rows = read_input(settings.source, settings.columns)
    checked_file = stage / "checked.parquet"
    try:
        check(rows, rules).sink_parquet(checked_file, compression="lz4")
        checked = pl.scan_parquet(checked_file)
        return mark(checked, find_duplicates(checked))
    except pl.exceptions.PolarsError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{settings.source}: cannot be read: {first}") from exc


def journal_files(output: Path, workers: int) -> list[Path]:
    """The journals this run writes: one, or one per worker."""
    single = journal_path(output)
    if workers == 1:
        return [single]
    return [single.with_name(f"{single.name}.w{k}") for k in range(workers)]


def existing_journals(output: Path) -> list[Path]:
    single = journal_path(output)
    return sorted(p for p in output.parent.glob(f"{single.name}*") if p.is_file())


def _earlier_outcomes(
    settings: RunSettings, planned: pl.LazyFrame, *, resume: bool, retry_from: str | Path | None
) -> tuple[pl.DataFrame, dict[Path, int]]:
    """Settled outcomes of earlier runs that this run keeps and does not send again, and
    the valid length of each journal found (a resumed journal is appended to from there)."""
    found = existing_journals(settings.output_path)
    if found and not resume:
        raise UsageError(
            f"{found[0]}: an unfinished run left this journal; add --resume to continue it "
            "(or delete the journal to start over)"
        )
    parts: list[pl.DataFrame] = []
    if retry_from is not None:
        parts.append(outcomes_from_results(retry_from, planned))
    if resume and results_exist(settings):
        parts.append(outcomes_from_results(settings.results_location, planned))
    valid: dict[Path, int] = {}
    expected = fingerprint(planned) if found else ""
    for journal in found:
        contents: JournalContents = read_journal(journal)
        if contents.valid_bytes and contents.fingerprint != expected:
            raise UsageError(
                f"{journal}: the journal belongs to a different input (the rows differ); "
                "use the input it was written for, or another -o"
            )
        valid[journal] = contents.valid_bytes
        parts.append(settled(contents.outcomes))
    if not parts:
        return compact(pl.DataFrame(schema=OUTCOME_SCHEMA)), valid
    earlier = pl.concat([compact(p) for p in parts]).unique(
        subset="row_index", keep="last", maintain_order=True
    )
    return earlier, valid


def _send(
    settings: RunSettings,
    tokens: Tokens,
    sendable: pl.DataFrame,
    journals: list[Path],
    print_: str,
    resume_at: dict[Path, int],
) -> tuple[SessionResult, dict[Path, int]]:
    """Send, in this process or in workers; returns where each journal's new records begin."""
    if len(journals) > 1:
        return run_workers(
            settings,
            tokens,
            sendable,
            journals=journals,
            fingerprint=print_,
            resume_at=resume_at,
            log_format=settings.log_format,
            log_level=settings.log_level,
        )
    journal = JournalWriter(journals[0], fingerprint=print_, resume_at=resume_at.get(journals[0]))
    try:
        result = run_async(send_session(settings, tokens, sendable, journal))
    finally:
        journal.close()
    return result, {journals[0]: journal.start_offset}


def execute(
    settings: RunSettings,
    tokens: Tokens | str | None,
    *,
    resume: bool = False,
    retry_from: str | Path | None = None,
) -> RunResult:
    """Run the job; ``tokens`` is one token, a token per location, or None for a dry run."""
    if isinstance(tokens, str):
        tokens = Tokens(default=tokens)
    if (tokens is None or not tokens.all()) and not settings.dry_run:
        raise UsageError("no API token: set GHL_TOKEN (or name another variable with --token-env)")
    check_output_folder(settings.output_path)
    with exclusive(settings.output_path):
        check_paths(settings, resume=resume)
        with staging(settings.output_path) as stage:
            return _execute(settings, tokens, stage, resume=resume, retry_from=retry_from)


def _execute(
    settings: RunSettings,
    tokens: Tokens | None,
    stage: Path,
    *,
    resume: bool,
    retry_from: str | Path | None,
) -> RunResult:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    planned = load_plan(settings, stage)
    valid: dict[Path, int] = {}
    if settings.dry_run:
        earlier = compact(pl.DataFrame(schema=OUTCOME_SCHEMA))
    else:
        earlier, valid = _earlier_outcomes(settings, planned, resume=resume, retry_from=retry_from)
    pending = to_send(planned).join(earlier.lazy().select("row_index"), on="row_index", how="anti")
    plan_estimate = estimate(
        planned,
        pending,
        limits=settings.limits,
        daily_quota=settings.daily_quota,
    )
    log.info(
        "planned",
        rows=plan_estimate.rows,
        already_done=earlier.height,
        to_send=plan_estimate.requests,
        locations=plan_estimate.locations,
        rate=settings.rate_label,
        dry_run=settings.dry_run,
    )
    session = SessionResult(0, None, None)
    this_run = compact(pl.DataFrame(schema=OUTCOME_SCHEMA))
    journals = journal_files(settings.output_path, settings.workers)
    sending = tokens is not None and not settings.dry_run and plan_estimate.requests > 0
    # Only a run that sends holds the rows to send in memory; a dry run never does.
    sendable = pending.collect() if sending else pl.DataFrame()
    if tokens is not None and tokens.per_location and sending:
        no_token = ~pl.col("location_id").is_in(list(tokens.by_location))
        this_run = compact(skipped_rows(sendable.filter(no_token), Code.NO_TOKEN))
        sendable = sendable.filter(~no_token)
    if tokens is not None and sending and sendable.height:
        tail = JournalTail(journals, valid)
        with ProgressReporter(
            tail, sendable.height, mode=settings.progress, interval_s=settings.progress_interval_s
        ):
            session, starts = _send(
                settings, tokens, sendable, journals, fingerprint(planned), valid
            )
        this_run = pl.concat(
            [
                this_run,
                *(read_records(j, start=offset) for j, offset in starts.items() if j.exists()),
            ]
        )
    unsent = Code.DRY_RUN if settings.dry_run else (session.stop_code or Code.INTERRUPTED)
    everything = pl.concat([earlier, this_run]).unique(subset="row_index", keep="last")
    results = assemble(planned, everything, unsent=unsent)
    run = RunInfo(
        started_at=started_at,
        elapsed_s=round(time.monotonic() - started, 3),
        requests=session.requests,
        dry_run=settings.dry_run,
        rate=settings.rate_label,
        workers=settings.workers,
    )
    write_atomically(results, settings.results_location, metadata=run.to_metadata())
    if not settings.dry_run:
        for journal in {*existing_journals(settings.output_path), *journals}:
            journal.unlink(missing_ok=True)  # the results now hold all they did
    del planned, sendable, pending, everything, this_run, earlier
    report = build_report(pl.scan_parquet(settings.results_location), run)
    log.info(
        "finished",
        rows=report.rows,
        by_status=report.by_status,
        by_error_code=report.by_error_code,
        requests=run.requests,
        elapsed_s=run.elapsed_s,
        requests_per_s=round(run.requests_per_s, 1),
    )
    return RunResult(report, session.signal, plan_estimate, session.stop_detail)

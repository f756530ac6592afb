"""The job, end to end: plan → find earlier state → send (journalled) → write results → report.

This module only sequences the stages and owns the run's lifecycle: the lock, the staging
folder, the journal's birth and removal (signals are the sending session's, ``session`` and
``workers``: a run never signals itself). ``_phases`` reads as the list of phases, one
function each, in the order the data flows; each stage lives in its own module
and knows nothing of the ones after it (``planning``, ``resuming``, ``session`` or ``workers``
with ``journal``, ``results``, ``report``). The files they share around the output are named
in one place, ``output_files.OutputFiles``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import structlog

from pipeline.app.advice import interrupted_again
from pipeline.app.job import Job, require_token
from pipeline.app.merging import merge_if_complete
from pipeline.app.output_checks import check_output_folder, check_paths, staging
from pipeline.auth.tokens import Tokens
from pipeline.core import logs
from pipeline.core.errors import UsageError, first_line
from pipeline.core.outcomes import Code
from pipeline.core.schema import compact, no_outcomes
from pipeline.inputs.known import known_outcomes
from pipeline.inputs.planning import (
    ASSUMED_LATENCY_S,
    IdRules,
    PlanEstimate,
    check,
    estimate,
    find_duplicates,
    mark,
    sending_seconds,
    to_send,
)
from pipeline.inputs.reading import Columns, read_input
from pipeline.inputs.resuming import EarlierState, find_earlier, to_look_up
from pipeline.observe.progress import Eta, JournalTail, ProgressReporter, RowsLeft
from pipeline.observe.report import Report, build_report
from pipeline.observe.run_figures import RunInfo
from pipeline.send.inflight import Gauge
from pipeline.send.session import SessionResult, StopSwitch, run_async, send_session
from pipeline.send.workers import run_workers
from pipeline.state.checkpoints import Checkpoints, released_on_failure, take_up
from pipeline.state.journal import JournalWriter, fingerprint, read_records
from pipeline.state.locking import exclusive
from pipeline.state.output_files import OutputFiles
from pipeline.state.results import assemble, skipped_rows, write_atomically

log = structlog.get_logger("pipeline.run")


@dataclass(frozen=True, slots=True)
class RunResult:
    report: Report
    signal: int | None = None  # the signal that interrupted the run, if one did
    plan: PlanEstimate | None = None
    stop_detail: str | None = None  # why the run stopped itself, in a line (unreachable API)


def load_plan(job: Job, stage: Path) -> pl.LazyFrame:
    """Read and check the input into a Parquet file in ``stage``, find the duplicates, and
    return the plan as a lazy query over that file.

    The input is parsed once, streaming, whatever its size; only the row IDs (and any
    --keep-columns) reach the file. Every later stage scans the file, so no stage holds the
    input in memory."""
    rules = IdRules.of(job.config)
    given = job.config.location_id
    if given is not None and not rules.accepts(given.strip()):
        raise UsageError(f"--location-id {given!r}: not a valid location id ({rules.describe()})")
    rows = read_input(job.source, Columns.of(job.config), job.config.separator, job.config.sheet)
    checked_file = stage / "checked.parquet"
    try:
        check(rows, rules).sink_parquet(checked_file, compression="lz4")
        checked = pl.scan_parquet(checked_file)
        return mark(checked, find_duplicates(checked))
    except pl.exceptions.PolarsError as exc:
        raise UsageError(f"{job.source}: cannot be read: {first_line(exc)}") from exc


def execute(
    job: Job,
    tokens: Tokens | str | None,
    *,
    resume: bool = False,
    retry_from: str | Path | None = None,
) -> RunResult:
    """Run the job; ``tokens`` is one token, a token per location, or None for a dry run."""
    if isinstance(tokens, str):
        tokens = Tokens(default=tokens)
    require_token(job, tokens)
    files = job.files
    if job.shard is not None:  # the log's first line: which part, and who said so
        log.info("this task sends one part", shard=job.shard.label, told_by=job.shard.source)
    check_output_folder(files)
    with exclusive(files):
        check_paths(job, files, resume=resume)
        checkpoints = (
            None if job.dry_run else take_up(files, job.config.checkpoint_interval, resume=resume)
        )
        with staging(files) as stage, released_on_failure(checkpoints):
            return _phases(
                job, tokens, files, stage, checkpoints, resume=resume, retry_from=retry_from
            )


@dataclass(frozen=True, slots=True)
class _Start:
    """When the run began: the wall clock for the results' metadata, the monotonic clock for
    how long it took."""

    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    monotonic: float = field(default_factory=time.monotonic)

    def elapsed_s(self) -> float:
        return round(time.monotonic() - self.monotonic, 3)


def _phases(
    job: Job,
    tokens: Tokens | None,
    files: OutputFiles,
    stage: Path,
    checkpoints: Checkpoints | None,
    *,
    resume: bool,
    retry_from: str | Path | None,
) -> RunResult:
    """The phases of a run, in order, under the output's lock."""
    start = _Start()
    planned = load_plan(job, stage)
    whole: tuple[str, int] | None = None
    if job.shard is not None:  # one task of an array job: its part of the locations
        rows = planned.select(pl.len()).collect(engine="streaming").item()
        whole = (fingerprint(planned), int(rows))
        planned = job.shard.restrict(planned)
    earlier = _find_earlier(job, files, planned, resume=resume, retry_from=retry_from)
    pending, plan_estimate = _plan_sending(job, planned, earlier)
    switch = StopSwitch(workers=job.config.workers)  # what a newer attempt's takeover stops
    if checkpoints is not None:
        checkpoints.start(on_superseded=switch.stop)
    try:
        session, this_run = _send_pending(
            job, tokens, files, planned, pending, plan_estimate, earlier, switch
        )
    finally:
        if checkpoints is not None:
            checkpoints.stop()  # the last copy; raises Superseded for a stale attempt
    if checkpoints is not None:
        checkpoints.check_fence()  # never write a part over a newer attempt's
    run = _write_results(job, files, planned, earlier, this_run, session, start, whole)
    _clean_up(job, files, checkpoints)
    del planned, pending, earlier, this_run  # the report reads the file; free the rest first
    report = _report(files, run)
    # An interrupted task is started again by its engine, and the retry merges.
    if job.merge_into is not None and job.shard is not None and session.signal is None:
        try:
            merge_if_complete(job.shard, job.merge_into, state_dir=job.config.state_dir)
        except UsageError as exc:  # this task's part is written: its exit code stands
            log.error("the parts cannot be merged", reason=str(exc), output=job.merge_into)
    return RunResult(report, session.signal, plan_estimate, session.stop_detail)


def _find_earlier(
    job: Job,
    files: OutputFiles,
    planned: pl.LazyFrame,
    *,
    resume: bool,
    retry_from: str | Path | None,
) -> EarlierState:
    """What earlier runs settled (``resuming``), so that this run neither sends a settled row
    again nor loses one. A dry run builds on nothing: it plans the whole input, reads no
    journal and leaves any it finds for the run that will resume it."""
    if job.dry_run:  # --known is read-only: a dry run's estimate counts only what is new
        known = job.config.known
        return EarlierState(known_outcomes(planned, known)) if known else EarlierState()
    return find_earlier(
        files, planned, resume=resume, retry_from=retry_from, known=job.config.known
    )


def _plan_sending(
    job: Job, planned: pl.LazyFrame, earlier: EarlierState
) -> tuple[pl.LazyFrame, PlanEstimate]:
    """The rows left to send, and what sending them will take: logged before anything is
    sent, so that the size of the job is known up front (a dry run prints it)."""
    creates = to_send(planned).join(
        earlier.outcomes.lazy().select("row_index"),
        on="row_index",
        how="anti",
        maintain_order="left",
    )
    missing_ids = to_look_up(earlier.outcomes)
    lookups = to_send(planned).join(
        missing_ids.lazy().select("row_index"), on="row_index", how="semi", maintain_order="left"
    )
    pending = pl.concat(
        [creates.with_columns(lookup=pl.lit(False)), lookups.with_columns(lookup=pl.lit(True))]
    )
    plan_estimate = estimate(planned, creates, lookups=missing_ids.height, **job.bounds)
    plan_estimate = replace(plan_estimate, lookup_wait_s=job.config.lookup_wait)
    log.info(
        "planned",
        rows=plan_estimate.rows,
        already_done=earlier.outcomes.height - missing_ids.height,
        to_send=plan_estimate.requests,
        to_look_up=plan_estimate.lookups,
        locations=plan_estimate.locations,
        rate=job.rate_label,
        dry_run=job.dry_run,
    )
    return pending, plan_estimate


def _send_pending(
    job: Job,
    tokens: Tokens | None,
    files: OutputFiles,
    planned: pl.LazyFrame,
    pending: pl.LazyFrame,
    plan_estimate: PlanEstimate,
    earlier: EarlierState,
    switch: StopSwitch | None = None,
) -> tuple[SessionResult, pl.DataFrame]:
    """Send the pending rows; the outcomes this run recorded, and how the sending ended.

    The outcomes are read back from the journals once sending is over: while it goes on,
    the journals are their only copy, so memory does not grow with the rows sent. Rows of a
    location that has no token in a tokens file are not sent, and recorded as skipped."""
    session = SessionResult(0, None, None)
    this_run = no_outcomes()
    if tokens is None or job.dry_run or plan_estimate.requests + plan_estimate.lookups == 0:
        return session, this_run
    # Only a run that sends holds the rows to send in memory; a dry run never does.
    sendable = pending.collect()
    if tokens.per_location:
        served = [loc for loc in sendable["location_id"].unique() if tokens.serves(loc)]
        no_token = ~pl.col("location_id").is_in(served)
        # A row to look up keeps its outcome (exists, without its id yet) where no token is.
        unserved = sendable.filter(no_token & ~pl.col("lookup")).drop("lookup")
        this_run = compact(skipped_rows(unserved, Code.NO_TOKEN, tokens.no_token_message))
        sendable = sendable.filter(~no_token)
    if not sendable.height:
        return session, this_run
    ends = earlier.journal_ends
    rows = RowsLeft(sendable["row_index"], sendable["location_id"])
    tail = JournalTail(files.journals(job.config.workers), ends, rows)
    bounds, window_s = job.bounds, max(t for _, t in job.limits) + ASSUMED_LATENCY_S
    eta = Eta(lambda left: sending_seconds(left, **bounds), rows.left, window_s=window_s)
    gauge = Gauge() if job.config.workers == 1 else None  # workers' counts stay in workers
    with ProgressReporter(
        tail,
        sendable.height,
        mode=job.config.progress,
        interval_s=job.config.progress_interval,
        gauge=gauge,
        eta=eta,
    ) as progress:
        relay = progress.shows_bar and job.config.log_file is None
        session, starts = _send(
            job, tokens, files, sendable, fingerprint(planned), ends, gauge, relay, switch
        )
    recorded = (read_records(j, start=offset) for j, offset in starts.items() if j.exists())
    return session, pl.concat([this_run, *recorded])


def _send(
    job: Job,
    tokens: Tokens,
    files: OutputFiles,
    sendable: pl.DataFrame,
    print_: str,
    resume_at: dict[Path, int],
    gauge: Gauge | None = None,
    relay_logs: bool = False,
    switch: StopSwitch | None = None,
) -> tuple[SessionResult, dict[Path, int]]:
    """Send, in this process or in workers; returns where each journal's new records begin.
    ``relay_logs``: a progress bar is live, so workers' log lines pass through this process;
    ``switch`` stops the sending from another thread (in workers too: ``StopSwitch``)."""
    if job.config.workers > 1:
        return run_workers(
            job,
            tokens,
            sendable,
            files=files,
            fingerprint=print_,
            resume_at=resume_at,
            log_format=job.config.log_format,
            log_level=job.log_level,
            relay_logs=relay_logs,
        )
    path = files.journal
    journal = JournalWriter(path, fingerprint=print_, resume_at=resume_at.get(path))
    try:
        shard = job.shard.label if job.shard is not None else None
        leaving = None if job.argv is None else interrupted_again(job.argv, shard)
        result = run_async(
            send_session(
                job, tokens, sendable, journal, gauge=gauge, switch=switch, leaving=leaving
            )
        )
    finally:
        journal.close()
    return result, {path: journal.start_offset}


def _write_results(
    job: Job,
    files: OutputFiles,
    planned: pl.LazyFrame,
    earlier: EarlierState,
    this_run: pl.DataFrame,
    session: SessionResult,
    start: _Start,
    whole: tuple[str, int] | None = None,
) -> RunInfo:
    """Every input row once, in input order, with this run's outcome or an earlier one, or
    the reason it was not sent; written atomically, since a results file is what marks a run
    as done. The run's figures go into the file's metadata for ``pipeline report``."""
    unsent = Code.DRY_RUN if job.dry_run else (session.stop_code or Code.INTERRUPTED)
    everything = pl.concat([earlier.outcomes, this_run]).unique(subset="row_index", keep="last")
    results = assemble(planned, everything, unsent=unsent)
    mean_ms, p50_ms, p99_ms = session.latencies.milliseconds()
    run = RunInfo(
        started_at=start.at,
        elapsed_s=start.elapsed_s(),
        requests=session.requests,
        dry_run=job.dry_run,
        rate=job.rate_label,
        workers=job.config.workers,
        peak_in_flight=session.peak_in_flight,
        throttled=session.throttled,
        shard=job.shard.label if job.shard else None,
        input_fingerprint=whole[0] if whole else None,
        input_rows=whole[1] if whole else None,
        token_refreshes=session.token_refreshes,
        tokens_minted=session.tokens_minted,
        daily_remaining=session.daily_remaining,
        mean_latency_ms=mean_ms,
        p50_latency_ms=p50_ms,
        p99_latency_ms=p99_ms,
    ).after(RunInfo.from_metadata(earlier.results_metadata))
    write_atomically(results, files, metadata=run.to_metadata())
    return run


def _clean_up(job: Job, files: OutputFiles, checkpoints: Checkpoints | None = None) -> None:
    """Remove the journals and their checkpoint, now that the results hold all they did: a
    journal left behind would stop the next run until it is resumed. A dry run leaves them:
    it read none. (The staging folder goes with ``staging``, however the run ends.)"""
    if job.dry_run:
        return
    for journal in {*files.existing_journals(), *files.journals(job.config.workers)}:
        journal.unlink(missing_ok=True)
    if checkpoints is not None:
        try:
            checkpoints.clear()
        except Exception as exc:  # the results are written; a later run clears it
            log.warning("cannot remove the checkpoint", error=first_line(exc))
        log.info(
            "checkpoints",
            epoch=checkpoints.epoch,
            segments=checkpoints.segments,
            bytes=checkpoints.bytes_up,
            requests=checkpoints.requests,
        )


def _report(files: OutputFiles, run: RunInfo) -> Report:
    """The summary, from the file just written (streaming): it shows what is on disk, and
    holds no table in memory. Its log line is for scripts: a person at a terminal reads the
    table the command line prints below it."""
    report = build_report(pl.scan_parquet(files.results), run)
    if logs.summary_on_screen():
        return report
    log.info(
        "finished",
        rows=report.rows,
        by_status=report.by_status,
        by_error_code=report.by_error_code,
        requests=run.requests,
        elapsed_s=run.elapsed_s,
        requests_per_s=round(run.requests_per_s, 1),
    )
    return report

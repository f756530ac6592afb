"""How a run ended: its ``RunSummary`` built in one place (``summarise``) and the exit-code
rule (``verdict``), for the command line and the Python call alike, so that a script calling
the library gets the same verdict as a cron line running the command. The summary's type
lives in ``observe.summary``, where notifications and metrics read it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.app.advice import advise
from pipeline.core.errors import EXIT_LOCKED, EXIT_OK, EXIT_ROWS_NOT_DONE, plural
from pipeline.core.outcomes import Code
from pipeline.core.values import parse_fail_on
from pipeline.observe.report import count_matching
from pipeline.observe.summary import RunSummary

if TYPE_CHECKING:
    from pipeline.app.job import Job
    from pipeline.app.run import RunResult


def verdict(job: Job, result: RunResult) -> tuple[int, str]:
    """The exit code and why: 128 + the signal that interrupted the run; 75 when another
    run held the OAuth credentials too long (try again later); else 1 when any row matches
    ``--fail-on`` (``invalid,failed,skipped`` by default), 0 when none does."""
    if result.signal is not None:
        return 128 + result.signal, "interrupted"
    if result.report.by_error_code.get(Code.CREDENTIALS_LOCKED):
        return EXIT_LOCKED, "stopped: another run held the --oauth-file's lock; try again later"
    statuses, codes = parse_fail_on(job.config.fail_on)
    failing = count_matching(job.files.results, statuses, codes)
    code = EXIT_ROWS_NOT_DONE if failing else EXIT_OK
    verb = "matches" if failing == 1 else "match"
    return code, f"{plural(failing, 'row')} {verb} --fail-on {job.config.fail_on}"


def summarise(
    job: Job,
    result: RunResult,
    *,
    token_source: Callable[[str], str],
) -> RunSummary:
    """The run's summary; the next command is printed from ``job.argv`` (none for a Python
    call)."""
    results = str(job.files.results)
    code, reason = verdict(job, result)
    advice = advise(
        results,
        argv=job.argv,
        token_source=token_source,
        problem_rows=result.report.problem_rows,
        interrupted=result.signal is not None,
        dry_run=job.dry_run,
        shard=job.shard.label if job.shard is not None else None,
    )
    return RunSummary(
        input=job.source,
        results=results,
        report=result.report,
        plan=result.plan,
        exit_code=code,
        exit_reason=reason,
        advice=tuple(advice.lines),
        next=advice.next,
        signal=result.signal,
        stop_detail=result.stop_detail,
    )

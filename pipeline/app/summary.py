"""How a run ended, typed: the counts, the plan, the exit code and why, what to do next.

One ``RunSummary`` per run, built in one place (``summarise``) for the command line and the
Python call alike: the command line prints it (a table, or ``to_dict`` as JSON), the call
returns it (``pipeline.run_conversations``), and notifications and metrics are told from it.
The exit-code rule lives here too (``verdict``), so that a script calling the library gets
the same verdict as a cron line running the command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.app.advice import advise
from pipeline.core.errors import EXIT_LOCKED, EXIT_OK, EXIT_ROWS_NOT_DONE
from pipeline.core.outcomes import Code
from pipeline.core.settings import parse_fail_on
from pipeline.observe.report import Report, count_matching

if TYPE_CHECKING:
    import polars as pl

    from pipeline.app.job import Job
    from pipeline.app.run import RunResult
    from pipeline.inputs.planning import PlanEstimate


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A finished (or interrupted) run, as its user and its scripts see it."""

    input: str  # INPUT as given
    results: str  # the results file written
    report: Report  # counts by status, code and location; the run's figures (``report.run``)
    plan: PlanEstimate | None
    exit_code: int
    exit_reason: str  # the verdict in a line: "3 rows match --fail-on ...", "interrupted"
    advice: tuple[str, ...] = ()  # what the rows that need attention need, in lines
    next: str = ""  # the one command to run next (empty for a Python call)
    signal: int | None = None  # the signal that interrupted the run, if one did
    stop_detail: str | None = None  # why the run stopped itself, in a line
    rows: pl.DataFrame | None = None  # the results themselves, when a Python call asks

    @property
    def succeeded(self) -> bool:
        return self.exit_code == EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary (``--summary json``): its keys are a contract with scripts."""
        return {
            "input": self.input,
            "results": self.results,
            **self.report.to_dict(),
            "plan": None if self.plan is None else self.plan.to_dict(),
            "exit_code": self.exit_code,
            "exit_reason": self.exit_reason,
            "advice": list(self.advice),
            "next": self.next.removeprefix("next: "),
        }


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
    return code, f"{failing} rows match --fail-on {job.config.fail_on}"


def summarise(
    job: Job,
    result: RunResult,
    *,
    argv: Sequence[str] | None,
    token_source: Callable[[str], str],
) -> RunSummary:
    """The run's summary; ``argv``: the command line, to print the next command from (None
    for a Python call)."""
    results = str(job.files.results)
    code, reason = verdict(job, result)
    advice = advise(
        results,
        argv=argv,
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

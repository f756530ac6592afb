"""How a run ended, typed: the counts, the plan, the exit code and why, what to do next.

One ``RunSummary`` per run (``app.summary.summarise`` builds it): the command line prints it
(a table, or ``to_dict`` as JSON), the Python call returns it (``pipeline.run_conversations``),
and notifications and metrics read its fields, not the keys of its JSON form, so that a
renamed figure breaks the type checker rather than a Slack message at night.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import EXIT_OK
from pipeline.observe.report import Report

if TYPE_CHECKING:
    import polars as pl

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

    @property
    def next_command(self) -> str:
        """The command of ``next``, without its ``next: `` label."""
        return self.next.removeprefix("next: ")

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
            "next": self.next_command,
        }

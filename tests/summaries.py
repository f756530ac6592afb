"""Typed run summaries for tests of what reads them (notify, metrics): a few figures given,
the rest the defaults of a run that sent nothing."""

from __future__ import annotations

from typing import Any

from pipeline.observe.report import Report
from pipeline.observe.run_figures import RunInfo
from pipeline.observe.summary import RunSummary

_RUN = {"started_at": "2026-12-06T00:00:00+00:00", "elapsed_s": 0.0, "requests": 0}


def summary_of(
    *,
    results: str = "out/results.parquet",
    input: str = "in.csv",
    rows: int = 0,
    by_status: dict[str, int] | None = None,
    by_error_code: dict[str, int] | None = None,
    locations: int = 0,
    run: dict[str, Any] | None = None,
    exit_code: int = 0,
    exit_reason: str = "",
    advice: tuple[str, ...] = (),
    next: str = "",
) -> RunSummary:
    """``run``: RunInfo's fields that matter to the test (None: a results file without the
    run's figures)."""
    info = None
    if run is not None:
        info = RunInfo(**{"dry_run": False, "rate": "auto", "workers": 1, **_RUN, **run})
    report = Report(
        rows=rows,
        by_status=by_status or {},
        by_error_code=by_error_code or {},
        by_location=[],
        locations=locations,
        top_failures=[],
        problem_rows=0,
        run=info,
    )
    return RunSummary(
        input=input,
        results=results,
        report=report,
        plan=None,
        exit_code=exit_code,
        exit_reason=exit_reason,
        advice=advice,
        next=next,
    )

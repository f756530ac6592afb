"""The account of a run: counts by status, error code and location, the top failures, time
and throughput. ``pipeline report RESULTS`` and the end-of-run summary are the same code.

Everything is computed from the results table itself, so a report can never disagree with
the file. What the table cannot know (when the run started, how long it took, how many
requests it made) travels inside the Parquet file's metadata (``run_figures``); a results
file from elsewhere simply has no such section.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from pipeline.core.errors import UsageError, plural
from pipeline.core.outcomes import Code, Status
from pipeline.observe.run_figures import RunInfo, parts_by_index
from pipeline.state.output_files import OutputFiles
from pipeline.state.paths import named
from pipeline.state.results import unreadable

SUCCESS_STATUSES = frozenset({Status.CREATED, Status.EXISTS, Status.DUPLICATE})
STATUS_ORDER = [s.value for s in Status]
TOP_LOCATIONS = 15
TOP_FAILURES = 10

ReportFormat = Literal["table", "json", "markdown"]


@dataclass(frozen=True, slots=True)
class Report:
    rows: int
    by_status: dict[str, int]
    by_error_code: dict[str, int]
    by_location: list[dict[str, Any]]  # location_id, rows, and a count per status
    locations: int
    top_failures: list[dict[str, Any]]  # status, error_code, error_message, rows
    problem_rows: int
    run: RunInfo | None
    rows_without_location: int = 0  # missing or invalid location id: counted in no location

    @property
    def all_succeeded(self) -> bool:
        """Exit code 0: no row is invalid, failed, or skipped for a reason other than a dry run."""
        return self.problem_rows == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["run"] = (
            None
            if self.run is None
            else {**asdict(self.run), "requests_per_s": round(self.run.requests_per_s, 1)}
        )
        return data


def build_report(results: pl.DataFrame | pl.LazyFrame, run: RunInfo | None = None) -> Report:
    """Aggregate the results. A LazyFrame (``pl.scan_parquet`` of the results file) is
    aggregated by the streaming engine, so a report never needs the table in memory."""
    lf = results.lazy()

    def collect(query: pl.LazyFrame) -> pl.DataFrame:
        return query.collect(engine="streaming")

    def counts(column: str) -> dict[str, int]:
        grouped = collect(
            lf.drop_nulls(column)
            .group_by(column)
            .len()
            .sort(["len", column], descending=[True, False])
        )
        return dict(zip(grouped[column].to_list(), grouped["len"].to_list(), strict=True))

    by_status = counts("status")
    # A row without a usable location id (missing, or not an id) names no location: it is
    # counted apart, so "locations" says how many sub-accounts the file really reaches.
    no_location = pl.col("location_id").is_null() | pl.col("error_code").is_in(
        [Code.MISSING_LOCATION_ID.value, Code.INVALID_LOCATION_ID.value]
    ).fill_null(False)
    without_location = collect(lf.filter(no_location).select(pl.len())).item()
    per_location = collect(
        lf.filter(~no_location)
        .group_by("location_id")
        .agg(
            pl.len().alias("rows"),
            *(
                (pl.col("status") == status).sum().alias(status)
                for status in STATUS_ORDER
                if status in by_status
            ),
        )
        .sort(["rows", "location_id"], descending=[True, False], nulls_last=True)
    )
    failures = collect(
        lf.filter(
            pl.col("status").is_in([Status.FAILED.value, Status.SKIPPED.value])
            & (pl.col("error_code") != Code.DRY_RUN.value)
        )
        .group_by("status", "error_code", "error_message")
        .len()
        .rename({"len": "rows"})
        .sort(["rows", "error_code"], descending=[True, False])
        .head(TOP_FAILURES)
    )
    dry_run_skip = (pl.col("status") == Status.SKIPPED.value) & (
        pl.col("error_code") == Code.DRY_RUN.value
    )
    # A conversation that exists without its id yet needs attention too: a rerun finds it.
    no_id_yet = (pl.col("error_code") == Code.ID_NOT_FOUND_YET.value).fill_null(False)
    problems = collect(
        lf.filter(
            (~pl.col("status").is_in([s.value for s in SUCCESS_STATUSES]) & ~dry_run_skip)
            | no_id_yet
        ).select(pl.len())
    ).item()
    return Report(
        rows=sum(by_status.values()),
        by_status=dict(
            sorted(
                by_status.items(),
                key=lambda kv: STATUS_ORDER.index(kv[0]) if kv[0] in STATUS_ORDER else 99,
            )
        ),
        by_error_code=counts("error_code"),
        by_location=per_location.head(TOP_LOCATIONS).to_dicts(),
        locations=per_location.height,
        rows_without_location=int(without_location),
        top_failures=failures.to_dicts(),
        problem_rows=int(problems),
        run=run,
    )


def read_results(path: str | Path) -> tuple[pl.DataFrame, RunInfo | None]:
    """A results file, or (a glob) the parts of a split run read together in input order,
    before ``pipeline merge`` (the parts' run figures are then not shown)."""
    found = named(path, kinds=("*.parquet",), list_remote=False)
    if not found.remote and not found.paths:
        raise UsageError(f"{path}: no files match")
    if not found.remote and not found.pattern and not Path(path).exists():
        journals = OutputFiles(Path(path)).existing_journals()
        if journals:  # the results are written at the end of the run that keeps this journal
            raise UsageError(
                f"{path}: no results yet: a run is writing them, or stopped before it could "
                f"(its journal: {journals[0]}); they are written when it ends, or by the same "
                "command with --resume"
            )
        raise UsageError(f"{path}: no such file")  # as the other commands say it
    if found.pattern and not found.remote and len(found.paths) > 1:
        _parts_of_one_run(str(path), [str(p) for p in found.paths])
    try:
        if found.pattern:
            parts = pl.read_parquet(path, missing_columns="insert")
            frame, metadata = parts.sort("row_index"), {}
        else:
            frame = pl.read_parquet(path)
            metadata = pl.read_parquet_metadata(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UsageError(unreadable(str(path), exc)) from exc
    missing = {"row_index", "status", "error_code", "location_id"} - set(frame.columns)
    if missing:
        raise UsageError(f"{path}: not a results file (no {', '.join(sorted(missing))} column)")
    return frame, RunInfo.from_metadata(metadata)


def _parts_of_one_run(pattern: str, paths: list[str]) -> None:
    """Files a glob reads together must be the parts of one split run (``--shard``): the
    rows of unrelated results files, added up, describe no run."""
    runs: dict[str, RunInfo] = {}
    for part_path in paths:
        try:
            run = RunInfo.from_metadata(pl.read_parquet_metadata(part_path))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise UsageError(unreadable(part_path, exc)) from exc
        if run is None or run.shard is None:
            raise UsageError(
                f"{pattern}: {part_path} is no part of a split run (--shard); a glob reads the "
                "parts of one run together: report each results file on its own"
            )
        runs[part_path] = run
    parts_by_index(runs)  # of one input, one count, each part once (as merge checks them)


# -- rendering ----------------------------------------------------------------------------


def render(report: Report, fmt: ReportFormat = "table", *, title: str = "") -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2)
    if fmt == "markdown":
        return _markdown(report, title)
    return _table(report, title)


def _cut(text: str, width: int) -> str:
    """``text`` in ``width`` characters, an ellipsis saying when some were left out (the
    whole is in ``--format markdown`` and ``json``)."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _run_line(run: RunInfo) -> str:
    if run.tasks:  # a merged array job: say what the figures are
        return (
            f"{plural(run.tasks, 'task')} over {run.elapsed_s:.2f}s, from the first task's start "
            f"to the last task's end (the slowest task: {run.slowest_task_s or 0:.2f}s); "
            f"{plural(run.requests, 'request')} ({run.requests_per_s:.1f} requests/s) counted "
            "from each task's last attempt only: earlier attempts of a task are not counted"
            + (
                f"; OAuth: {plural(run.token_refreshes, 'token refresh', 'token refreshes')}, "
                f"{plural(run.tokens_minted, 'token')} minted"
                if run.token_refreshes or run.tokens_minted
                else ""
            )
        )
    return (
        f"{plural(run.requests, 'request')} in {run.elapsed_s:.2f}s "
        f"({run.requests_per_s:.1f} requests/s)"
        + (
            f" over {run.runs} runs (the first and {plural(run.runs - 1, '--resume')})"
            if run.runs > 1
            else ""
        )
        + (
            f", at most {run.peak_in_flight} in flight, {run.mean_latency_ms:g} ms each on average"
            if run.peak_in_flight and run.mean_latency_ms is not None
            else ""
        )
        + (
            f" (p50 {run.p50_latency_ms:g} ms, p99 {run.p99_latency_ms:g} ms)"
            if run.peak_in_flight
            and run.p50_latency_ms is not None
            and run.p99_latency_ms is not None
            else ""
        )
        + (", dry run" if run.dry_run else "")
        + (
            f"; OAuth: {plural(run.token_refreshes, 'token refresh', 'token refreshes')}, "
            f"{plural(run.tokens_minted, 'token')} minted"
            if run.token_refreshes or run.tokens_minted
            else ""
        )
    )


def _table(report: Report, title: str) -> str:
    lines = [plural(report.rows, "row") + (f" -> {title}" if title else "")]
    lines += [f"  {status:<10} {count:>9}" for status, count in report.by_status.items()]
    if report.by_error_code:
        lines.append("error codes:")
        lines += [f"  {code:<24} {count:>9}" for code, count in report.by_error_code.items()]
    if report.locations > 1:
        shown = "" if report.locations <= TOP_LOCATIONS else f" (largest {TOP_LOCATIONS})"
        apart = (
            f"; {plural(report.rows_without_location, 'row')} without a usable location id"
            if report.rows_without_location
            else ""
        )
        lines.append(f"locations: {report.locations}{shown}{apart}")
        statuses = [s for s in STATUS_ORDER if s in report.by_status]
        lines.append(f"  {'location_id':<24} {'rows':>7} " + " ".join(f"{s:>9}" for s in statuses))
        for row in report.by_location:
            name = _cut(str(row["location_id"]), 24)
            lines.append(
                f"  {name:<24} {row['rows']:>7} " + " ".join(f"{row[s]:>9}" for s in statuses)
            )
    if report.top_failures:
        lines.append("top failures:")
        for failure in report.top_failures:
            code = failure["error_code"]
            message = _cut(failure["error_message"] or "", 70)
            lines.append(f"  {failure['rows']:>7}  {code}: {message}")
    if report.run is not None:
        lines.append(_run_line(report.run))
    return "\n".join(lines)


def _markdown(report: Report, title: str) -> str:
    out = [f"# Results{': ' + title if title else ''}", "", f"{plural(report.rows, 'row')}.", ""]
    out += ["| status | rows |", "| --- | ---: |"]
    out += [f"| {status} | {count} |" for status, count in report.by_status.items()]
    if report.by_error_code:
        out += ["", "| error code | rows |", "| --- | ---: |"]
        out += [f"| {code} | {count} |" for code, count in report.by_error_code.items()]
    if report.by_location:
        statuses = [s for s in STATUS_ORDER if s in report.by_status]
        apart = (
            f" {plural(report.rows_without_location, 'row')} "
            f"{'has' if report.rows_without_location == 1 else 'have'} no usable location id."
            if report.rows_without_location
            else ""
        )
        out += ["", f"Locations: {report.locations}.{apart}", ""]
        out += ["| location_id | rows | " + " | ".join(statuses) + " |"]
        out += ["| --- | ---: | " + " | ".join("---:" for _ in statuses) + " |"]
        for row in report.by_location:
            out.append(
                f"| {row['location_id']} | {row['rows']} | "
                + " | ".join(str(row[s]) for s in statuses)
                + " |"
            )
    if report.top_failures:
        out += ["", "| rows | error code | message |", "| ---: | --- | --- |"]
        for failure in report.top_failures:
            message = (failure["error_message"] or "").replace("|", "\\|")
            out.append(f"| {failure['rows']} | {failure['error_code']} | {message} |")
    if report.run is not None:
        out += ["", _run_line(report.run) + "."]
    return "\n".join(out)


# -- rows ---------------------------------------------------------------------------------

RowsFormat = Literal["table", "json", "markdown", "csv"]
# The columns a listing of rows shows in a table (a CSV or JSON listing has them all).
ROW_COLUMNS = (
    "row_index", "contact_id", "location_id", "status", "conversation_id", "error_code",
    "error_message",
)  # fmt: skip


def select_rows(frame: pl.DataFrame, statuses: str) -> pl.DataFrame:
    """The rows whose status or error code is one of ``statuses`` (comma-separated, or
    ``all``), ready to
    be read back as an input once fixed: a kept input column that would be taken for an
    ID column (``Contact Id`` beside ``contact_id``) is left out, since it holds the same
    ID."""
    wanted = {s.strip().lower() for s in statuses.split(",") if s.strip()}
    known = {s.value for s in Status}
    codes = {c.value for c in Code}
    unknown = sorted(wanted - known - codes - {"all"})
    if unknown or not wanted:
        raise UsageError(
            f"--rows {statuses!r}: expected statuses from {', '.join(sorted(known))} "
            "or error codes (such as id_not_found_yet), comma-separated, or all"
        )
    chosen = (
        frame
        if "all" in wanted
        else frame.filter(
            pl.col("status").is_in(sorted(wanted & known))
            | pl.col("error_code").is_in(sorted(wanted & codes)).fill_null(False)
        )
    )
    from pipeline.inputs.reading import CONTACT_KEY, LOCATION_KEY, normalise_header

    shadows = [
        name
        for name in chosen.columns
        if name not in ("contact_id", "location_id")
        and normalise_header(name) in (CONTACT_KEY, LOCATION_KEY)
    ]
    return chosen.drop(shadows)


def render_rows(rows: pl.DataFrame, fmt: RowsFormat) -> str:
    """A listing of rows: CSV and JSON with every column, a table or markdown with the
    columns that say what happened (the conversation id when any row has one)."""
    if fmt == "csv":
        return rows.write_csv()
    if fmt == "json":
        return json.dumps(rows.to_dicts(), indent=2, default=str)
    # The conversation's id when any row listed has one (created rows: what they are for).
    columns = [c for c in ROW_COLUMNS if c in rows.columns]
    if "conversation_id" in columns and rows["conversation_id"].null_count() == rows.height:
        columns.remove("conversation_id")
    shown = rows.select(columns)
    cells = [[("" if v is None else str(v)) for v in row] for row in shown.iter_rows()]
    if fmt == "markdown":
        head = "| " + " | ".join(shown.columns) + " |"
        rule = "|" + "|".join(" --- " for _ in shown.columns) + "|"
        body = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join([head, rule, *body])
    widths = [
        max(len(name), *(len(row[i]) for row in cells)) if cells else len(name)
        for i, name in enumerate(shown.columns)
    ]
    lines = ["  ".join(name.ljust(w) for name, w in zip(shown.columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.append(plural(len(cells), "row"))
    return "\n".join(line.rstrip() for line in lines)


def count_matching(results: str | Path, statuses: frozenset[str], codes: frozenset[str]) -> int:
    """Rows of a results file whose status or error code is one of these (``--fail-on``); a
    dry run's planned rows never count."""
    status, code = pl.col("status"), pl.col("error_code")
    dry_run = (status == Status.SKIPPED.value) & (code == Code.DRY_RUN.value).fill_null(False)
    matching = (
        status.is_in(sorted(statuses)) | code.is_in(sorted(codes)).fill_null(False)
    ) & ~dry_run
    return int(
        pl.scan_parquet(results)
        .filter(matching)
        .select(pl.len())
        .collect(engine="streaming")
        .item()
    )

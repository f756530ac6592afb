"""Stage 5, write results: one row per input data row, in input order, written atomically.

The results join what planning decided (invalid, duplicate) with what sending achieved. A
row that was planned for sending but has no outcome was not sent for a reason of the run
(dry run, interruption): it is ``skipped`` with that reason, never silently absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from pipeline.core.errors import first_line
from pipeline.core.outcomes import RESULT_SPEC, SKIP_MESSAGES, Code, ResultColumn, Status
from pipeline.core.schema import FEW_VALUED, OUTCOME_SCHEMA, RESULT_SCHEMA
from pipeline.state.output_files import OutputFiles

# The columns planning produces; any other column of the plan is carried into the results.
PLAN_COLUMNS = frozenset(
    {
        "row_index",
        "contact_id",
        "location_id",
        "status",
        "error_code",
        "error_message",
        "duplicate_of",
    }
)


def skipped_rows(rows: pl.DataFrame, code: Code, message: str | None = None) -> pl.DataFrame:
    """Outcomes for rows a run decided not to send (``skipped`` with ``code``, and ``message``
    or the code's usual one); every outcome column not named here is null."""
    given = {
        "row_index": pl.col("row_index"),
        "status": pl.lit(Status.SKIPPED.value),
        "error_code": pl.lit(code.value),
        "error_message": pl.lit(message or SKIP_MESSAGES[code]),
        "attempts": pl.lit(0),
    }
    outcomes = rows.select(given.get(name, pl.lit(None)).alias(name) for name in OUTCOME_SCHEMA)
    return outcomes.cast(OUTCOME_SCHEMA)  # type: ignore[arg-type]


def assemble(
    planned: pl.DataFrame | pl.LazyFrame, outcomes: pl.DataFrame, *, unsent: Code
) -> pl.LazyFrame:
    """Merge planning and sending into the results table of the README's "Results" (a lazy
    query: it is streamed into the results file, never held whole in memory).

    The columns are ``outcomes.RESULT_SPEC``'s, in order: the IDs from the plan, the rest as
    sending recorded them, but for those where the plan's verdict (invalid, duplicate) or the
    run's reason for not sending (``unsent``) has the say (``merged`` below)."""
    sent = outcomes.rename({c: f"{c}_sent" for c in outcomes.columns if c != "row_index"})
    copied = outcomes.select(
        pl.col("row_index").alias("duplicate_of"),
        pl.col("conversation_id").alias("conversation_id_dup"),
    )
    joined = (
        planned.lazy()
        .join(sent.lazy(), on="row_index", how="left", maintain_order="left")
        .join(copied.lazy(), on="duplicate_of", how="left", maintain_order="left")
    )
    joined = joined.with_columns(pl.col(*(f"{c}_sent" for c in FEW_VALUED)).cast(pl.String))
    planned_to_send = pl.col("status").is_null()
    not_sent = planned_to_send & pl.col("status_sent").is_null()
    merged = {
        "status": pl.coalesce("status", "status_sent", pl.lit(Status.SKIPPED.value)),
        "conversation_id": pl.coalesce("conversation_id_sent", "conversation_id_dup"),
        "error_code": pl.when(not_sent)
        .then(pl.lit(unsent.value))
        .when(planned_to_send)
        .then(pl.col("error_code_sent"))
        .otherwise(pl.col("error_code")),
        "error_message": pl.when(not_sent)
        .then(pl.lit(SKIP_MESSAGES[unsent]))
        .when(planned_to_send)
        .then(pl.col("error_message_sent"))
        .otherwise(pl.col("error_message")),
        "attempts": pl.col("attempts_sent").fill_null(0),
    }

    def column(spec: ResultColumn) -> pl.Expr:
        if spec.name in merged:
            return merged[spec.name].alias(spec.name)
        if spec.outcome and spec.name != "row_index":
            return pl.col(f"{spec.name}_sent").alias(spec.name)  # as sending recorded it
        return pl.col(spec.name)  # the row's position and IDs, from the plan

    extra = [
        c for c in planned.lazy().collect_schema() if c not in PLAN_COLUMNS
    ]  # --keep-columns, source_file
    # planned is in row_index order, and the joins keep it
    return joined.select(*map(column, RESULT_SPEC), *extra).cast(RESULT_SCHEMA)  # type: ignore[arg-type]


def write_atomically(
    frame: pl.DataFrame | pl.LazyFrame,
    files: OutputFiles,
    *,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write the results to a temporary file beside them, fsync, then rename over them.

    A reader (or a crash) sees either the old file or the complete new one, never half. In
    object storage (``s3://...``) a single PUT gives the same guarantee, so it is written
    directly.
    """
    if files.uri is not None:
        _write(frame, files.uri, metadata)
        return
    path = files.anchor
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = files.results_temp(os.getpid())
    try:
        _write(frame, tmp, metadata)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write(
    frame: pl.DataFrame | pl.LazyFrame, where: str | Path, metadata: dict[str, str] | None
) -> None:
    if isinstance(frame, pl.LazyFrame):
        frame.sink_parquet(where, compression="zstd", statistics=True, metadata=metadata)
    else:
        frame.write_parquet(where, compression="zstd", statistics=True, metadata=metadata)


def unreadable(path: str, exc: BaseException) -> str:
    """Why a results file (reported, retried, resumed, known) cannot be read, in a line: a
    file that is no Parquet at all is most often the run's input given by mistake."""
    if "PAR1" in str(exc) or "out of specification" in str(exc):
        return (
            f"{path}: not a results file (not Parquet); give the Parquet file a run wrote "
            "with -o, such as out/results.parquet"
        )
    return f"{path}: cannot be read as a results file ({first_line(exc)})"

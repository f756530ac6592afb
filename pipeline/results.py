"""Stage 5, write results: one row per input data row, in input order, written atomically.

The results join what planning decided (invalid, duplicate) with what sending achieved. A
row that was planned for sending but has no outcome was not sent for a reason of the run
(dry run, interruption): it is ``skipped`` with that reason, never silently absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import polars as pl

from pipeline.errors import UsageError
from pipeline.outcomes import RESENDABLE, SKIP_MESSAGES, Code, Status

RESULT_SCHEMA: dict[str, pl.DataType] = {
    "row_index": pl.Int64(),
    "contact_id": pl.String(),
    "location_id": pl.String(),
    "status": pl.String(),
    "conversation_id": pl.String(),
    "error_code": pl.String(),
    "http_status": pl.Int32(),
    "error_message": pl.String(),
    "attempts": pl.Int32(),
    "trace_id": pl.String(),
}

# What sending adds to a row (a journal record): the results without the IDs.
OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    name: dtype
    for name, dtype in RESULT_SCHEMA.items()
    if name not in ("contact_id", "location_id")
}


FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)


def compact(outcomes: pl.DataFrame) -> pl.DataFrame:
    """Outcomes as held in memory: the few-valued text columns categorical, 4 bytes a row
    instead of 16 or more. Every frame of outcomes passes through here before they meet."""
    return outcomes.with_columns(
        pl.col("status", "error_code", "error_message").cast(pl.Categorical)
    )


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


def settled(outcomes: FrameT) -> FrameT:
    """The outcomes a later run must not send again.

    Created and exists are settled; so is a failure that sending again would not change (a
    rejected ID, a 4xx). Transient failures (``RESENDABLE``) and skipped rows are not: a
    resumed run or ``pipeline retry`` sends them again.
    """
    status, code = pl.col("status"), pl.col("error_code")
    final = status.is_in([Status.CREATED.value, Status.EXISTS.value]) | (
        (status == Status.FAILED.value)
        & ~code.is_in([c.value for c in RESENDABLE]).fill_null(False)
    )
    return outcomes.filter(final)


def outcomes_from_results(path: str | Path, planned: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The settled rows of an earlier results file for the same input (resume and retry).

    The file is compared with the plan row by row (streaming) and refused if they differ;
    only its settled outcomes are held in memory."""
    ids = ["row_index", "contact_id", "location_id"]
    try:
        scanned = pl.scan_parquet(path)
        present = scanned.collect_schema()
        # Results written before a column existed (trace_id) still count: it reads as null.
        earlier = scanned.select(
            pl.col(name) if name in present else pl.lit(None, dtype).alias(name)
            for name, dtype in RESULT_SCHEMA.items()
        )
        earlier_rows = earlier.select(pl.len()).collect().item()
        mismatched = (
            earlier.select(ids)
            .join(planned.lazy().select(ids), on="row_index", how="left", suffix="_now")
            .filter(
                ~pl.col("contact_id").eq_missing(pl.col("contact_id_now"))
                | ~pl.col("location_id").eq_missing(pl.col("location_id_now"))
            )
            .head(1)
            .collect(engine="streaming")
        )
        outcomes = settled(earlier.select(list(OUTCOME_SCHEMA)).cast(OUTCOME_SCHEMA))  # type: ignore[arg-type]
        kept = outcomes.collect(engine="streaming")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UsageError(
            f"{path}: cannot be read as a results file ({str(exc).splitlines()[0]})"
        ) from exc
    planned_rows = planned.lazy().select(pl.len()).collect(engine="streaming").item()
    if earlier_rows != planned_rows or mismatched.height:
        raise UsageError(f"{path}: these results are of a different input (the rows do not match)")
    return kept


def skipped_rows(rows: pl.DataFrame, code: Code) -> pl.DataFrame:
    """Outcomes for rows a run decided not to send (``skipped`` with ``code``)."""
    return rows.select(
        pl.col("row_index"),
        pl.lit(Status.SKIPPED.value).alias("status"),
        pl.lit(None, pl.String).alias("conversation_id"),
        pl.lit(code.value).alias("error_code"),
        pl.lit(None, pl.Int32).alias("http_status"),
        pl.lit(SKIP_MESSAGES[code]).alias("error_message"),
        pl.lit(0, pl.Int32).alias("attempts"),
        pl.lit(None, pl.String).alias("trace_id"),
    ).cast(OUTCOME_SCHEMA)  # type: ignore[arg-type]


def assemble(
    planned: pl.DataFrame | pl.LazyFrame, outcomes: pl.DataFrame, *, unsent: Code
) -> pl.LazyFrame:
    """Merge planning and sending into the contract's results table (a lazy query: it is
    streamed into the results file, never held whole in memory)."""
    sent = outcomes.rename({c: f"{c}_sent" for c in outcomes.columns if c != "row_index"})
    copied = outcomes.select(
        pl.col("row_index").alias("duplicate_of"),
        pl.col("conversation_id").alias("conversation_id_dup"),
    )
    merged = (
        planned.lazy()
        .join(sent.lazy(), on="row_index", how="left", maintain_order="left")
        .join(copied.lazy(), on="duplicate_of", how="left", maintain_order="left")
    )
    merged = merged.with_columns(
        pl.col("status_sent", "error_code_sent", "error_message_sent").cast(pl.String)
    )
    planned_to_send = pl.col("status").is_null()
    not_sent = planned_to_send & pl.col("status_sent").is_null()
    extra = [
        c for c in planned.lazy().collect_schema() if c not in PLAN_COLUMNS
    ]  # --keep-columns, source_file
    return (
        merged.select(
            pl.col("row_index"),
            pl.col("contact_id"),
            pl.col("location_id"),
            pl.coalesce("status", "status_sent", pl.lit(Status.SKIPPED.value)).alias("status"),
            pl.coalesce("conversation_id_sent", "conversation_id_dup").alias("conversation_id"),
            pl.when(not_sent)
            .then(pl.lit(unsent.value))
            .when(planned_to_send)
            .then(pl.col("error_code_sent"))
            .otherwise(pl.col("error_code"))
            .alias("error_code"),
            pl.col("http_status_sent").alias("http_status"),
            pl.when(not_sent)
            .then(pl.lit(SKIP_MESSAGES[unsent]))
            .when(planned_to_send)
            .then(pl.col("error_message_sent"))
            .otherwise(pl.col("error_message"))
            .alias("error_message"),
            pl.col("attempts_sent").fill_null(0).alias("attempts"),
            pl.col("trace_id_sent").alias("trace_id"),
            *extra,
        ).cast(RESULT_SCHEMA)  # type: ignore[arg-type]
    )  # planned is in row_index order, and the joins keep it


def write_atomically(
    frame: pl.DataFrame | pl.LazyFrame, where: str | Path, *, metadata: dict[str, str] | None = None
) -> None:
    """Write to a temporary file beside the target, fsync, then rename over it.

    A reader (or a crash) sees either the old file or the complete new one, never half. In
    object storage (``s3://...``) a single PUT gives the same guarantee, so it is written
    directly.
    """
    if "://" in str(where):
        _write(frame, str(where), metadata)
        return
    path = Path(where)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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

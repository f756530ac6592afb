"""The outcome schema in polars types, derived from ``outcomes.RESULT_SPEC``.

Kept apart from ``outcomes`` so that the sending side (client, sender) can use the
vocabulary without importing polars, and apart from ``results`` so that the journal, the
finding of earlier state and the writing of results each read the one schema without
knowing each other.
"""

from __future__ import annotations

import polars as pl

from pipeline.core.outcomes import RESULT_SPEC, ColumnType

_TYPES: dict[ColumnType, pl.DataType] = {
    "Int64": pl.Int64(),
    "Int32": pl.Int32(),
    "String": pl.String(),
    "Datetime": pl.Datetime("us", "UTC"),
}

# The results file's columns and their Parquet types, in order.
RESULT_SCHEMA: dict[str, pl.DataType] = {column.name: _TYPES[column.type] for column in RESULT_SPEC}

# What sending adds to a row (a journal record): the results without the input's IDs.
OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    column.name: _TYPES[column.type] for column in RESULT_SPEC if column.outcome
}

# The outcome columns with few distinct values, held categorical in memory (``compact``).
FEW_VALUED: tuple[str, ...] = ("status", "error_code", "error_message")


def compact(outcomes: pl.DataFrame) -> pl.DataFrame:
    """Outcomes as held in memory: the few-valued text columns categorical, 4 bytes a row
    instead of 16 or more. Every frame of outcomes passes through here before they meet."""
    return outcomes.with_columns(pl.col(*FEW_VALUED).cast(pl.Categorical))


def no_outcomes() -> pl.DataFrame:
    """An empty frame of outcomes, as ``compact`` holds them: where nothing was recorded."""
    return compact(pl.DataFrame(schema=OUTCOME_SCHEMA))

"""Finding earlier state: what earlier runs settled, which this run keeps and does not send.

Four sources, read after planning and before sending, later ones winning for a row:

1. ``--known``: earlier runs' results, matched by (location, contact) (``known``);
2. ``pipeline retry RESULTS``: the results file being retried;
3. ``--resume`` over an existing results file: that file;
4. the journals an unfinished run left beside the output (``OutputFiles.existing_journals``),
   which must be resumed (``--resume``) and must belong to the same input (the fingerprint
   in their header).

Of each only the *settled* outcomes count (``settled``): a transient failure or a skipped row
is sent again; a row whose conversation exists but whose id is missing (``to_look_up``) is
only searched for. A results file is compared with the plan row by row, a journal by its
fingerprint, so that the outcomes of another input are never applied to this one.

This module knows the journal's format and the results' schema, and nothing of sending or of
how results are assembled: it is the stage between planning and sending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import polars as pl

from pipeline.core.errors import UsageError, first_line
from pipeline.core.outcomes import RESENDABLE, Status
from pipeline.core.schema import OUTCOME_SCHEMA, RESULT_SCHEMA, compact, no_outcomes
from pipeline.inputs.known import known_outcomes
from pipeline.state import objects
from pipeline.state.journal import fingerprint, read_journal
from pipeline.state.output_files import OutputFiles
from pipeline.state.results import unreadable

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)


@dataclass(frozen=True, slots=True)
class EarlierState:
    """What earlier runs left that this run builds on."""

    # The settled outcomes: this run keeps them and does not send their rows.
    outcomes: pl.DataFrame = field(default_factory=no_outcomes)
    # The valid length of each journal found: a resumed journal is appended to from there.
    journal_ends: dict[Path, int] = field(default_factory=dict)
    # The metadata of the output's own results file, when resumed: the figures of the runs
    # that wrote it, which this run's add to.
    results_metadata: dict[str, str] = field(default_factory=dict)


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


def to_look_up(outcomes: FrameT) -> FrameT:
    """The settled outcomes whose conversation exists without its id (``id_not_found_yet``:
    the search index lagged; or an older run's ``conversation_exists`` without one): a later
    run searches for their ids, and never creates them again."""
    no_id = pl.col("conversation_id").is_null() | (pl.col("conversation_id") == "")
    return outcomes.filter((pl.col("status") == Status.EXISTS.value) & no_id)


def results_exist(files: OutputFiles) -> bool:
    """Whether the output's results file is there (for a remote output, asking the store,
    which ``objects.reach`` first makes sure answers: this is a run's first request to it)."""
    if files.uri is None:
        return files.anchor.exists()
    objects.reach(files.uri)
    try:
        pl.read_parquet_metadata(files.uri)
    except FileNotFoundError:
        return False
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UsageError(f"{files.uri}: cannot be reached ({first_line(exc)})") from exc
    return True


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
        raise UsageError(unreadable(str(path), exc)) from exc
    planned_rows = planned.lazy().select(pl.len()).collect(engine="streaming").item()
    if earlier_rows != planned_rows or mismatched.height:
        raise UsageError(f"{path}: these results are of a different input (the rows do not match)")
    return kept


def find_earlier(
    files: OutputFiles,
    planned: pl.LazyFrame,
    *,
    resume: bool,
    retry_from: str | Path | None,
    known: str | None = None,
) -> EarlierState:
    """The settled outcomes of earlier runs for ``planned``, and the journals to append to.

    Journals found without ``--resume`` stop the run: starting over would send again every
    row they hold. ``known``: earlier results matched by pair (``--known``); what this
    output's own runs settled wins over them."""
    found = files.existing_journals()
    if found and not resume:
        raise UsageError(
            f"{found[0]}: an unfinished run left this journal; add --resume to continue it "
            "(or delete the journal to start over)"
        )
    parts: list[pl.DataFrame] = []
    if known is not None:
        parts.append(known_outcomes(planned, known))
    if retry_from is not None:
        parts.append(outcomes_from_results(retry_from, planned))
    metadata: dict[str, str] = {}
    if resume and results_exist(files):
        parts.append(outcomes_from_results(files.results, planned))
        metadata = _metadata(files.results)
    ends: dict[Path, int] = {}
    expected = fingerprint(planned) if found else ""
    for journal in found:
        contents = read_journal(journal)
        if contents.valid_bytes and contents.fingerprint != expected:
            raise UsageError(
                f"{journal}: the journal belongs to a different input (the rows differ); "
                "use the input it was written for, or another -o"
            )
        ends[journal] = contents.valid_bytes
        parts.append(settled(contents.outcomes))
    if not parts:
        return EarlierState(journal_ends=ends)
    outcomes = pl.concat([compact(p) for p in parts]).unique(
        subset="row_index", keep="last", maintain_order=True
    )
    return EarlierState(outcomes, ends, metadata)


def _metadata(path: str | Path) -> dict[str, str]:
    """A results file's metadata (just read whole: it is there and readable)."""
    try:
        return pl.read_parquet_metadata(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UsageError(unreadable(str(path), exc)) from exc

"""``--known``: earlier runs' results, so that a re-exported file sends only what is new.

A nightly export holds yesterday's rows and today's new contacts. The pairs (location,
contact) that already have a conversation id in any earlier results file are not sent: their
rows end ``exists`` / ``known_from_earlier_run`` with that id, at no cost to the location's
quota. Pairs that failed earlier have no id there, so they are sent again; pairs whose
conversation existed without an id yet (``id_not_found_yet``: the search index lagged) are
looked up, never created again.

Earlier results are matched by pair, not by row (unlike ``--resume``, which continues one
file): the export's rows move between nights. Only the three columns the match needs are
read from each file, so results of older versions (without later columns) and of runs with
other ``--keep-columns`` count alike. The match is one streaming polars join: millions of
known pairs against a large input in bounded memory (BENCHMARKS.md, "Known pairs").
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import structlog

from pipeline.core.errors import UsageError, first_line
from pipeline.core.outcomes import Code, Status
from pipeline.core.schema import OUTCOME_SCHEMA, compact, no_outcomes
from pipeline.inputs.planning import to_send
from pipeline.state.paths import named
from pipeline.state.results import unreadable

log = structlog.get_logger("pipeline.inputs.known")

_PAIR = ["location_id", "contact_id"]
_NEEDED = {
    "location_id": pl.String,
    "contact_id": pl.String,
    "status": pl.String,  # may be absent (a file made by hand): then no pair lacks an id
    "conversation_id": pl.String,
}
MESSAGE = "an earlier run's results hold this pair's conversation id; not sent"
NO_ID_MESSAGE = (
    "an earlier run's results say this pair's conversation exists, without its id; "
    "its id is looked up (a search), never created again"
)
_HAS_ID = pl.col("conversation_id").is_not_null() & (pl.col("conversation_id") != "")


def known_paths(spec: str) -> list[str]:
    """The results files ``--known`` names: a file, a glob, a folder (its ``.parquet``
    files), a URI, a glob of URIs (listed; read by polars when the glob is not in the last
    segment), or a folder in object storage
    (a URI ending in ``/``: every ``.parquet`` under it, none in a hidden folder, such as a
    task's checkpoint). A glob or a folder that holds none yet is the first night of a
    nightly job: nothing is known, and that is no error."""
    found = named(spec, kinds=("*.parquet",), recursive=True)
    if not found.pattern and not found.remote and not Path(spec).is_file():
        raise UsageError(f"--known {spec}: no such file or folder")
    # A glob that matches other files beside the results (a log, a CSV) keeps the results.
    files = [p for p in found.paths if p.endswith(".parquet")] if found.pattern else found.paths
    if not files:
        log.info("no earlier results yet", known=spec)
    for name in files:
        _check_results(name)
    return files


def _check_results(path: str) -> None:
    """A file that is not a results file would silently know nothing: refuse it."""
    try:
        schema = pl.read_parquet_schema(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UsageError(f"--known {unreadable(str(path), exc)}") from exc
    missing = [name for name in _NEEDED if name not in schema and name != "status"]
    if missing:
        raise UsageError(f"--known {path}: not a results file (no {', '.join(missing)} column)")


def known_pairs(paths: list[str], wanted: pl.LazyFrame) -> pl.LazyFrame:
    """The pairs of ``wanted`` that have a conversation id in ``paths`` (a pair may be in
    several files: every night since it was created holds it).

    The earlier results (millions of pairs, growing every night) are streamed against the
    rows to send, not the other way round: only tonight's pairs are held in a hash table,
    so memory follows the input, not the history."""
    return _earlier(paths, wanted).filter(_HAS_ID)


def pairs_without_id(paths: list[str], wanted: pl.LazyFrame) -> pl.LazyFrame:
    """The pairs of ``wanted`` whose conversation an earlier run found to exist without its
    id, and that no file holds an id for."""
    earlier = _earlier(paths, wanted)
    exists = (pl.col("status") == Status.EXISTS.value) & ~_HAS_ID
    return (
        earlier.filter(exists)
        .select(_PAIR)
        .unique()
        .join(earlier.filter(_HAS_ID).select(_PAIR), on=_PAIR, how="anti")
    )


def _earlier(paths: list[str], wanted: pl.LazyFrame) -> pl.LazyFrame:
    return pl.scan_parquet(
        paths,
        schema=_NEEDED,
        extra_columns="ignore",  # kept columns differ from run to run
        missing_columns="insert",  # only "status": the others are checked (_check_results)
    ).join(wanted.select(_PAIR), on=_PAIR, how="semi")


def known_outcomes(planned: pl.LazyFrame, spec: str) -> pl.DataFrame:
    """The rows of ``planned`` to send whose pair is known: as outcomes, ``exists`` with
    the earlier id, no request made."""
    paths = known_paths(spec)
    if not paths:
        return no_outcomes()
    sendable = to_send(planned)
    matched = sendable.join(
        known_pairs(paths, sendable).select(*_PAIR, "conversation_id"), on=_PAIR, how="inner"
    ).unique(subset="row_index", keep="any")
    without_id = sendable.join(pairs_without_id(paths, sendable), on=_PAIR, how="semi")
    outcomes = pl.concat(
        [
            _outcomes(matched, Code.KNOWN_FROM_EARLIER_RUN, MESSAGE),
            _outcomes(
                without_id.with_columns(conversation_id=pl.lit(None, pl.String)),
                Code.ID_NOT_FOUND_YET,
                NO_ID_MESSAGE,
            ),
        ]
    )
    try:
        return compact(outcomes.sort("row_index").collect(engine="streaming"))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UsageError(f"--known {spec}: cannot be read ({first_line(exc)})") from exc


def _outcomes(rows: pl.LazyFrame, code: Code, message: str) -> pl.LazyFrame:
    """``exists`` outcomes for ``rows`` (with their ``conversation_id``), no request made."""
    return rows.select(
        "row_index",
        pl.lit(Status.EXISTS.value).alias("status"),
        "conversation_id",
        pl.lit(code.value).alias("error_code"),
        pl.lit(None).alias("http_status"),
        pl.lit(message).alias("error_message"),
        pl.lit(0).alias("attempts"),
        pl.lit(None).alias("trace_id"),
        pl.lit(None).alias("finished_at"),
    ).cast(OUTCOME_SCHEMA)  # type: ignore[arg-type]

"""``--known``: earlier runs' results, so that a re-exported file sends only what is new.

A nightly export holds yesterday's rows and today's new contacts. The pairs (location,
contact) that already have a conversation id in any earlier results file are not sent: their
rows end ``exists`` / ``known_from_earlier_run`` with that id, at no cost to the location's
quota. Pairs that failed earlier have no id there, so they are sent again.

Earlier results are matched by pair, not by row (unlike ``--resume``, which continues one
file): the export's rows move between nights. Only the three columns the match needs are
read from each file, so results of older versions (without later columns) and of runs with
other ``--keep-columns`` count alike. The match is one streaming polars join: millions of
known pairs against a large input in bounded memory (BENCHMARKS.md, "Known pairs").
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import polars as pl
import structlog

from pipeline import objects
from pipeline.errors import UsageError, first_line
from pipeline.outcomes import Code, Status
from pipeline.planning import to_send
from pipeline.schema import OUTCOME_SCHEMA, compact, no_outcomes
from pipeline.settings import is_uri

log = structlog.get_logger("pipeline.known")

_PAIR = ["location_id", "contact_id"]
_NEEDED = {"location_id": pl.String, "contact_id": pl.String, "conversation_id": pl.String}
_GLOB = re.compile(r"[*?\[]")
MESSAGE = "an earlier run's results hold this pair's conversation id; not sent"


def known_paths(spec: str) -> list[str]:
    """The results files ``--known`` names: a file, a glob, a folder (its ``.parquet``
    files), a URI, a glob of URIs (read as polars reads it), or a folder in object storage
    (a URI ending in ``/``: every ``.parquet`` under it, none in a hidden folder, such as a
    task's checkpoint). A glob or a folder that holds none yet is the first night of a
    nightly job: nothing is known, and that is no error."""
    if is_uri(spec) and not spec.endswith("/"):
        return [spec]
    path = Path(spec)
    if is_uri(spec):
        found = objects.parquet_under(spec)
    elif path.is_dir():
        found = sorted(
            str(p) for p in path.iterdir() if p.suffix == ".parquet" and not p.name.startswith(".")
        )
    elif _GLOB.search(spec):
        found = sorted(p for p in glob.glob(spec) if p.endswith(".parquet"))  # noqa: PTH207
    elif path.is_file():
        found = [spec]
    else:
        raise UsageError(f"--known {spec}: no such file or folder")
    if not found:
        log.info("no earlier results yet", known=spec)
    for name in found:
        _check_results(name)
    return found


def _check_results(path: str) -> None:
    """A file that is not a results file would silently know nothing: refuse it."""
    try:
        schema = pl.read_parquet_schema(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UsageError(f"--known {path}: cannot be read as Parquet ({first_line(exc)})") from exc
    missing = [name for name in _NEEDED if name not in schema]
    if missing:
        raise UsageError(f"--known {path}: not a results file (no {', '.join(missing)} column)")


def known_pairs(paths: list[str], wanted: pl.LazyFrame) -> pl.LazyFrame:
    """The pairs of ``wanted`` that have a conversation id in ``paths`` (a pair may be in
    several files: every night since it was created holds it).

    The earlier results (millions of pairs, growing every night) are streamed against the
    rows to send, not the other way round: only tonight's pairs are held in a hash table,
    so memory follows the input, not the history."""
    return (
        pl.scan_parquet(
            paths,
            schema=_NEEDED,
            extra_columns="ignore",  # kept columns differ from run to run
            missing_columns="raise",
        )
        .filter(pl.col("conversation_id").is_not_null() & (pl.col("conversation_id") != ""))
        .join(wanted.select(_PAIR), on=_PAIR, how="semi")
    )


def known_outcomes(planned: pl.LazyFrame, spec: str) -> pl.DataFrame:
    """The rows of ``planned`` to send whose pair is known: as outcomes, ``exists`` with
    the earlier id, no request made."""
    paths = known_paths(spec)
    if not paths:
        return no_outcomes()
    sendable = to_send(planned)
    matched = sendable.join(known_pairs(paths, sendable), on=_PAIR, how="inner").unique(
        subset="row_index", keep="any"
    )
    outcomes = matched.select(
        "row_index",
        pl.lit(Status.EXISTS.value).alias("status"),
        "conversation_id",
        pl.lit(Code.KNOWN_FROM_EARLIER_RUN.value).alias("error_code"),
        pl.lit(None).alias("http_status"),
        pl.lit(MESSAGE).alias("error_message"),
        pl.lit(0).alias("attempts"),
        pl.lit(None).alias("trace_id"),
        pl.lit(None).alias("finished_at"),
    ).cast(OUTCOME_SCHEMA)  # type: ignore[arg-type]
    try:
        return compact(outcomes.sort("row_index").collect(engine="streaming"))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UsageError(f"--known {spec}: cannot be read ({first_line(exc)})") from exc

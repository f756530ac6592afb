"""``pipeline merge``: the parts of a split run (``--shard``) into one results file.

Each task of an array job writes its part (``NAME.part-KKKKK-of-NNNNN.parquet``), whose
metadata says which part it is and of what input (the whole plan's fingerprint and row
count). A merge that quietly dropped a missing part, or counted a part of yesterday's
input, would lose rows or report wrong ids: so every part must be of the same input, all N
must be there exactly once, and together they must hold every input row exactly once.
Anything else is refused with one line that says which part and what is wrong.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import structlog

from pipeline.core.errors import UsageError, first_line
from pipeline.core.values import is_uri
from pipeline.inputs.shards import Shard
from pipeline.observe.run_figures import RunInfo, parts_by_index
from pipeline.state import objects
from pipeline.state.output_files import OutputFiles
from pipeline.state.paths import named
from pipeline.state.results import write_atomically

log = structlog.get_logger("pipeline.app.merging")

_PARTS = "*.part-*-of-*.parquet"  # the parts in a folder
CHUNK_ROWS = 500_000  # rows of the merged file sorted at a time


def part_paths(spec: str) -> list[str]:
    """The parts PARTS names: a glob, a folder (its ``.part-*.parquet`` files) or a URI
    (itself, a glob of object names, or a folder ending in ``/``)."""
    found = named(spec, kinds=(_PARTS,))
    parts = [p for p in found.paths if found.remote or found.pattern or Path(p).exists()]
    if not parts:
        raise UsageError(f"{spec}: no parts there")
    return parts


def merge_if_complete(shard: Shard, output: str, *, state_dir: Path) -> RunInfo | None:
    """``run --merge``: write OUTPUT from the parts once all of them are there; None while
    some are missing (the task that writes the last one merges). Two tasks that finish at
    once may both merge: both write the same file."""
    parts = [replace(shard, index=k).part_name(output) for k in range(shard.count)]
    if is_uri(output):  # one listing of the folder, not one request a part
        there = set(objects.names(output.rpartition("/")[0] + "/"))
        missing = [k for k, part in enumerate(parts) if part.rpartition("/")[2] not in there]
    else:
        missing = [k for k, part in enumerate(parts) if not Path(part).is_file()]
    if missing:
        log.info("parts still missing; the task that writes the last one merges", missing=missing)
        return None
    run = merge_parts(parts, output, state_dir=state_dir, spec=output)
    log.info("merged the parts", parts=shard.count, output=output)
    return run


def _run_info(path: str) -> RunInfo:
    try:
        metadata = pl.read_parquet_metadata(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UsageError(f"{path}: cannot be read as a results part ({first_line(exc)})") from exc
    run = RunInfo.from_metadata(metadata)
    if run is None or run.shard is None or run.input_fingerprint is None:
        raise UsageError(f"{path}: not a part of a split run (no --shard in its metadata)")
    return run


def _span(runs: list[RunInfo]) -> tuple[str, float]:
    """The job's wall clock: the first task's start, and the seconds from it to the last
    task's end (not the slowest task's time: tasks start apart, and a task run again later
    ends later)."""
    starts = [datetime.fromisoformat(r.started_at) for r in runs]
    ends = [at + timedelta(seconds=r.elapsed_s) for at, r in zip(starts, runs, strict=True)]
    first = min(starts)
    return runs[starts.index(first)].started_at, round((max(ends) - first).total_seconds(), 3)


def merge(spec: str, output: str, *, state_dir: Path) -> RunInfo:
    """Check the parts PARTS names and write the one results file, in input order."""
    return merge_parts(part_paths(spec), output, state_dir=state_dir, spec=spec)


def merge_parts(paths: list[str], output: str, *, state_dir: Path, spec: str) -> RunInfo:
    """Check the parts and write the one results file, in input order; its run info.
    ``spec``: how the parts were named, for the messages."""
    runs = {path: _run_info(path) for path in paths}
    first = next(iter(runs.values()))
    count, seen = parts_by_index(runs)
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        listed = ", ".join(str(k) for k in missing)
        raise UsageError(f"{spec}: missing part(s) {listed} of {count}")
    expected = first.input_rows or 0
    started, span_s = _span(list(runs.values()))
    run = replace(
        first,
        shard=None,
        started_at=started,
        elapsed_s=span_s,
        tasks=count,
        slowest_task_s=max(r.elapsed_s for r in runs.values()),
        requests=sum(r.requests for r in runs.values()),
        workers=sum(r.workers for r in runs.values()),
        peak_in_flight=None,
        mean_latency_ms=None,
        throttled=sum(r.throttled for r in runs.values()),
        token_refreshes=sum(r.token_refreshes for r in runs.values()),
        tokens_minted=sum(r.tokens_minted for r in runs.values()),
        daily_remaining={k: v for r in runs.values() for k, v in r.daily_remaining.items()},
    )
    scratch = state_dir if is_uri(output) else Path(output).parent
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".merge-", dir=scratch) as folder:
        try:
            chunks = _sorted_chunks(list(runs), expected, Path(folder), spec)
            merged = pl.scan_parquet(chunks) if chunks else pl.read_parquet(next(iter(runs)))
        except (pl.exceptions.PolarsError, OSError) as exc:  # a part the store lost meanwhile
            raise UsageError(f"{spec}: the parts cannot be read ({first_line(exc)})") from exc
        write_atomically(merged, OutputFiles.of(output, state_dir), metadata=run.to_metadata())
    return run


def _sorted_chunks(paths: list[str], expected: int, folder: Path, spec: str) -> list[Path]:
    """The parts' rows in input order, as files of ``CHUNK_ROWS`` rows each, checked on
    the way: no row in two parts, every input row in one.

    The parts interleave (a part is its locations' rows, from all over the input), so the
    merge is a sort by ``row_index``; done a range of rows at a time, it holds one range in
    memory, not the whole input (each part is in row order, so the row groups' statistics
    let every range read only its own slice of each part). Merging 8 M rows at once took
    3.4 GB; by ranges, about one range's worth."""
    rows = pl.concat([pl.scan_parquet(path) for path in paths], how="diagonal_relaxed")
    total = sum(pl.scan_parquet(path).select(pl.len()).collect().item() for path in paths)
    covered = 0
    chunks = []
    for start in range(0, expected, CHUNK_ROWS):
        index = pl.col("row_index")
        chunk = rows.filter(index.is_between(start, start + CHUNK_ROWS, closed="left"))
        frame = chunk.collect().sort("row_index")
        indexes = frame["row_index"]
        if indexes.n_unique() != frame.height:
            row = int(indexes.filter(indexes.is_duplicated()).min())  # type: ignore[arg-type]
            raise UsageError(f"{spec}: row {row} is in more than one part")
        covered += frame.height
        chunks.append(folder / f"{start // CHUNK_ROWS:08d}.parquet")
        frame.write_parquet(chunks[-1], compression="lz4")
    if total != expected or covered != expected:
        raise UsageError(f"{spec}: the parts hold {total} rows; the input has {expected}")
    return chunks

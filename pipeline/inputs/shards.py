"""Past one machine: the part of a run that one task of an array job sends (``--shard``).

Batch engines (Kubernetes Indexed Jobs, Cloud Run Jobs, AWS Batch array jobs, Slurm arrays)
start N copies of one container, each told its index. A task sends the rows of the
locations it owns, by a stable hash of the location id (CRC-32, the same on every machine
and every run), so a location's limit lives in one task, as ``--workers`` keeps it in one
process. The shard's hash is salted, so that shards and workers split independently: the
locations of one task still spread over its ``--workers``. Rows that are never sent because
they are invalid belong to shard 0, so every input row is in exactly one part.

Each task writes its own results part beside the output it names
(``results.parquet`` -> ``results.part-00003-of-00008.parquet``); ``pipeline merge`` checks
the parts and writes the one results file (``pipeline.app.merging``).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.core.errors import UsageError
from pipeline.core.outcomes import Status

if TYPE_CHECKING:  # polars costs ~130 ms to import; --help and usage errors need none of it
    import polars as pl

# Each engine's index variable, and its count variable where it has one.
ENGINES: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("Kubernetes Indexed Job", "JOB_COMPLETION_INDEX", None, None),
    ("Cloud Run Jobs", "CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_COUNT", None),
    ("AWS Batch array job", "AWS_BATCH_JOB_ARRAY_INDEX", None, None),
    ("Slurm array", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),
)
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_SALT = b"shard\x00"  # so that shards and --workers split the locations independently


@dataclass(frozen=True, slots=True)
class Shard:
    """Task ``index`` of ``count``; ``source`` says where that came from (for the log)."""

    index: int
    count: int
    source: str

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def part_name(self, output: str) -> str:
        """The task's results part beside ``output``: ``NAME.part-KKKKK-of-NNNNN.parquet``."""
        stem = output.removesuffix(".parquet")
        return f"{stem}.part-{self.index:05d}-of-{self.count:05d}.parquet"

    def restrict(self, planned: pl.LazyFrame) -> pl.LazyFrame:
        """The planned rows of this part: those of the locations it owns, and (shard 0)
        the invalid rows, which no task sends."""
        import polars as pl

        locations = (
            planned.filter(pl.col("status").is_null() | (pl.col("status") != Status.INVALID.value))
            .select(pl.col("location_id").unique())
            .collect(engine="streaming")["location_id"]
            .to_list()
        )
        owned = [
            loc for loc in locations if loc is not None and owner(loc, self.count) == self.index
        ]
        mine = pl.col("location_id").is_in(owned) & (
            pl.col("status").is_null() | (pl.col("status") != Status.INVALID.value)
        )
        if self.index == 0:
            mine = mine | (pl.col("status") == Status.INVALID.value).fill_null(False)
        return planned.filter(mine.fill_null(False))


def owner(location_id: str, count: int) -> int:
    """The shard that sends ``location_id``'s rows."""
    return zlib.crc32(_SALT + location_id.encode()) % count


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"``: task K (from 0) of N."""
    match = _SHARD.match(text)
    if match is None:
        raise UsageError(f"--shard {text!r}: expected K/N, such as 3/8 (K counts from 0)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise UsageError(f"--shard {text!r}: K must be from 0 to N-1, and N at least 1")
    return index, count


def resolve_shard(given: str | None, count: int | None, environ: Mapping[str, str]) -> Shard | None:
    """``--shard K/N``, else the engine's own environment (the count from the engine, else
    ``--shard-count``); None when neither says (the run is not split)."""
    if given is not None:
        index, of = parse_shard(given)
        return Shard(index, of, "--shard")
    for engine, index_var, count_var, base_var in ENGINES:
        raw = environ.get(index_var)
        if raw is None or not raw.strip():
            continue
        total: int | None = count
        try:
            index = int(raw) - (int(environ.get(base_var, "0") or 0) if base_var else 0)
            if count_var and environ.get(count_var):
                total = int(environ[count_var])
        except ValueError as exc:
            raise UsageError(f"{index_var}={raw!r}: not a task index") from exc
        if total is None:
            raise UsageError(
                f"{engine} ({index_var}={raw}): the task count is not in the environment; "
                "give it with --shard-count N (or GHL_SHARD_COUNT)"
            )
        if not 0 <= index < total:
            raise UsageError(f"{engine} ({index_var}={raw}): index outside 0..{total - 1}")
        return Shard(index, total, f"{engine} ({index_var})")
    return None

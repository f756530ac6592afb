"""A run's figures that its results table cannot hold (when it started, how long it took,
how many requests it made, the latencies and limits it met), kept in the results file's
Parquet metadata under ``pipeline.run`` as JSON. ``pipeline report``, the summary, the HTML
report, notifications and ``pipeline merge`` read them back from there."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from pipeline.core.errors import UsageError

RUN_METADATA_KEY = "pipeline.run"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a results file cannot say by itself about the run that wrote it."""

    started_at: str  # ISO-8601, UTC
    elapsed_s: float
    requests: int
    dry_run: bool
    rate: str
    workers: int
    peak_in_flight: int | None = None  # requests in flight at once, at most (all workers)
    mean_latency_ms: float | None = None  # from sending a request to its answer
    p50_latency_ms: float | None = None  # ... the median of those times
    p99_latency_ms: float | None = None  # ... and their 99th percentile
    throttled: int = 0  # 429 answers
    # One task's part of a split run (--shard): "K/N", the whole input's fingerprint and
    # row count, which pipeline merge checks the parts against.
    shard: str | None = None
    input_fingerprint: str | None = None
    input_rows: int | None = None
    token_refreshes: int = 0  # OAuth access tokens refreshed (--oauth-file)
    tokens_minted: int = 0  # location tokens minted from an agency's (--oauth-file)
    # Each location's daily quota left (X-RateLimit-Daily-Remaining), as its last answer said.
    daily_remaining: dict[str, int] = field(default_factory=dict)
    # The parts of an array job merged (pipeline merge): how many tasks. Then started_at and
    # elapsed_s span the first task's start to the last task's end, the longest task took
    # slowest_task_s, and requests are those of each task's last attempt (a part holds only
    # the attempt that wrote it: an earlier, interrupted or retried attempt's are not in it).
    tasks: int | None = None
    slowest_task_s: float | None = None
    # The runs that wrote this file: the first, and each --resume over it (``after``).
    runs: int = 1

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def after(self, earlier: RunInfo | None) -> RunInfo:
        """This run's figures added to those of the runs that wrote the file it resumed, so
        that a ``--resume`` (one that finds nothing left to send included) does not replace
        the first run's figures with its own. Counts and sending times add up (``elapsed_s``
        is the time spent running, not the days between runs); the start is the first
        run's; the mean latency is weighted by requests, and p50/p99 are the slower
        run's (percentiles of two runs do not combine; this bounds them).

        A part of a split run (``--shard``) keeps its last attempt's figures: ``pipeline
        merge`` spans the job from each part's start and time, which a sum would not give."""
        if earlier is None or earlier.dry_run or self.dry_run or earlier.tasks or self.shard:
            return self
        mean = _weighted(
            (self.mean_latency_ms, self.requests), (earlier.mean_latency_ms, earlier.requests)
        )
        return replace(
            self,
            started_at=earlier.started_at,
            elapsed_s=round(earlier.elapsed_s + self.elapsed_s, 3),
            requests=earlier.requests + self.requests,
            peak_in_flight=max(earlier.peak_in_flight or 0, self.peak_in_flight or 0) or None,
            mean_latency_ms=mean,
            p50_latency_ms=_slower(earlier.p50_latency_ms, self.p50_latency_ms),
            p99_latency_ms=_slower(earlier.p99_latency_ms, self.p99_latency_ms),
            throttled=earlier.throttled + self.throttled,
            token_refreshes=earlier.token_refreshes + self.token_refreshes,
            tokens_minted=earlier.tokens_minted + self.tokens_minted,
            daily_remaining={**earlier.daily_remaining, **self.daily_remaining},
            runs=earlier.runs + self.runs,
        )

    def to_metadata(self) -> dict[str, str]:
        return {RUN_METADATA_KEY: json.dumps(asdict(self))}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> RunInfo | None:
        raw = metadata.get(RUN_METADATA_KEY)
        if raw is None:
            return None
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None


def _weighted(*figures: tuple[float | None, int]) -> float | None:
    """The mean of means, each weighted by its count; None when no figure has a count."""
    known = [(value, count) for value, count in figures if value is not None and count > 0]
    total = sum(count for _, count in known)
    return round(sum(value * count for value, count in known) / total, 1) if total else None


def _slower(*values: float | None) -> float | None:
    return max((v for v in values if v is not None), default=None)


def parts_by_index(runs: dict[str, RunInfo]) -> tuple[int, dict[int, str]]:
    """The parts of one split run (each file's figures, every one with a ``shard``): how
    many the run has, and each part's file by its index. Parts of another input or of
    another count, and one part twice, are refused: read together (``pipeline report`` of a
    glob, ``pipeline merge``) they would describe no run."""
    first_path, first = next(iter(runs.items()))
    count = int(str(first.shard).split("/")[1])
    seen: dict[int, str] = {}
    for path, run in runs.items():
        if run.input_fingerprint != first.input_fingerprint or run.input_rows != first.input_rows:
            raise UsageError(f"{path}: a part of another input than {first_path}")
        index, of = (int(n) for n in str(run.shard).split("/"))
        if of != count:
            raise UsageError(f"{path}: part {index} of {of}, but {first_path} is of {count}")
        if index in seen:
            raise UsageError(f"{path} and {seen[index]}: both are part {index} of {count}")
        seen[index] = path
    return count, seen

"""A results file's run figures when a --resume adds to them (``RunInfo.after``)."""

from __future__ import annotations

from dataclasses import replace

from pipeline.observe.run_figures import RunInfo

FIRST = RunInfo(
    started_at="2026-12-06T10:00:00.000+00:00",
    elapsed_s=10.0,
    requests=300,
    dry_run=False,
    rate="as announced",
    workers=1,
    peak_in_flight=40,
    mean_latency_ms=100.0,
    p50_latency_ms=90.0,
    p99_latency_ms=400.0,
    throttled=2,
    token_refreshes=1,
    daily_remaining={"L1": 1000, "L2": 500},
)
SECOND = replace(
    FIRST,
    started_at="2026-12-07T08:00:00.000+00:00",
    elapsed_s=5.0,
    requests=100,
    peak_in_flight=60,
    mean_latency_ms=200.0,
    p50_latency_ms=80.0,
    p99_latency_ms=900.0,
    throttled=0,
    token_refreshes=0,
    tokens_minted=3,
    daily_remaining={"L2": 400},
)


def test_counts_and_times_add_and_the_start_is_the_first_runs() -> None:
    both = SECOND.after(FIRST)
    assert both.started_at == FIRST.started_at
    assert (both.elapsed_s, both.requests, both.throttled) == (15.0, 400, 2)
    assert (both.token_refreshes, both.tokens_minted, both.runs) == (1, 3, 2)
    assert both.peak_in_flight == 60
    assert both.daily_remaining == {"L1": 1000, "L2": 400}  # the later answer wins


def test_the_mean_is_weighted_by_requests_and_percentiles_are_the_slower_runs() -> None:
    both = SECOND.after(FIRST)
    assert both.mean_latency_ms == 125.0  # (300 * 100 + 100 * 200) / 400
    assert (both.p50_latency_ms, both.p99_latency_ms) == (90.0, 900.0)


def test_a_resume_that_sent_nothing_keeps_the_first_runs_figures() -> None:
    idle = replace(
        SECOND,
        elapsed_s=0.1,
        requests=0,
        peak_in_flight=0,
        mean_latency_ms=None,
        p50_latency_ms=None,
        p99_latency_ms=None,
        tokens_minted=0,
        daily_remaining={},
    )
    kept = idle.after(FIRST)
    assert (kept.requests, kept.mean_latency_ms, kept.p99_latency_ms) == (300, 100.0, 400.0)
    assert (kept.peak_in_flight, kept.daily_remaining) == (40, FIRST.daily_remaining)
    assert kept.runs == 2
    assert idle.after(kept).runs == 3


def test_nothing_to_add_to() -> None:
    assert SECOND.after(None) is SECOND
    assert SECOND.after(replace(FIRST, dry_run=True)) is SECOND  # a dry run sent nothing
    assert replace(SECOND, dry_run=True).after(FIRST).requests == 100
    merged = replace(FIRST, tasks=4, slowest_task_s=3.0)  # an array job's: not one run's
    assert SECOND.after(merged) is SECOND
    part = replace(SECOND, shard="1/2")  # merge spans the job by each part's start and time
    assert part.after(replace(FIRST, shard="1/2")) is part


def test_older_files_without_the_count_read_as_one_run() -> None:
    metadata = FIRST.to_metadata()
    metadata["pipeline.run"] = metadata["pipeline.run"].replace(', "runs": 1', "")
    assert "runs" not in metadata["pipeline.run"]
    read = RunInfo.from_metadata(metadata)
    assert read is not None and read.runs == 1

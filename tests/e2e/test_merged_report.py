"""``pipeline report`` of a merged array job: the job's wall clock, and which requests count."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from pipeline.observe.run_figures import RunInfo
from pipeline.sandbox import SandboxThread
from tests.conftest import run_cli, write_csv
from tests.e2e.test_end_to_end import fast_limits
from tests.e2e.test_shards import LOCATIONS, run_shards


def run_of(path: Path) -> RunInfo:
    run = RunInfo.from_metadata(pl.read_parquet_metadata(path))
    assert run is not None
    return run


def test_a_merged_job_reports_its_span_and_says_which_requests_it_counts(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"c{i}", LOCATIONS[i % 12]) for i in range(240)])
    out = tmp_path / "out" / "results.parquet"
    paths = run_shards(sandbox, src, out, 2)
    time.sleep(1.5)  # index 1 is run again later, by hand: its part is written once more
    rerun = run_cli(
        "run", str(src), "-o", str(out), *fast_limits(sandbox), "--resume", "--shard", "1/2"
    )  # fmt: skip
    assert rerun.code == 0, rerun.stderr[-2000:]
    parts = [run_of(part) for part in paths]
    assert parts[0].requests > 0 and parts[1].requests == 0  # the rerun sent nothing
    merged = tmp_path / "out" / "merged.parquet"
    done = run_cli("merge", str(tmp_path / "out" / "results.part-*.parquet"), "-o", str(merged))
    assert done.code == 0, done.stderr
    run = run_of(merged)
    starts = [datetime.fromisoformat(p.started_at) for p in parts]
    ends = [s + timedelta(seconds=p.elapsed_s) for s, p in zip(starts, parts, strict=True)]
    assert run.started_at == parts[0].started_at  # the tasks ran one after the other
    assert run.tasks == 2 and run.slowest_task_s == max(p.elapsed_s for p in parts)
    assert abs(run.elapsed_s - (max(ends) - min(starts)).total_seconds()) < 0.01
    assert run.elapsed_s > run.slowest_task_s + 1.4  # the span, not the slowest task
    assert run.requests == sum(p.requests for p in parts)
    shown = run_cli("report", str(merged))
    assert shown.code == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith("2 tasks over "))
    assert re.fullmatch(
        rf"2 tasks over {run.elapsed_s:.2f}s, from the first task's start to the last task's "
        rf"end \(the slowest task: {run.slowest_task_s:.2f}s\); {run.requests} requests? "
        r"\([\d.]+ requests/s\) counted from each task's last attempt only: earlier attempts "
        r"of a task are not counted",
        line,
    ), line

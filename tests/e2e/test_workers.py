"""--workers N: locations split across processes, one results file, same guarantees."""

from __future__ import annotations

import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl

from pipeline.sandbox import SandboxThread
from pipeline.send.workers import owner, split
from pipeline.state.output_files import OutputFiles
from tests.conftest import run_cli, wait_until, write_csv
from tests.e2e.test_end_to_end import fast_limits, max_in_any_window
from tests.e2e.test_resilience import assert_all_settled_right, journal_lines, rows_for, start_cli


def test_split_gives_each_location_to_one_worker_in_input_order() -> None:
    sendable = pl.DataFrame(
        {
            "row_index": range(60),
            "location_id": [f"L{i % 7}" for i in range(60)],
            "contact_id": [f"c{i}" for i in range(60)],
        }
    )
    parts = split(sendable, 3)
    assert sum(p.height for p in parts) == 60
    for k, part in enumerate(parts):
        assert part["row_index"].is_sorted()
        assert all(owner(loc, 3) == k for loc in part["location_id"].unique())
    # Stable across processes, runs and Python versions (not ``hash``, which is salted per
    # process): the values for fixed inputs, computed once and written down here.
    assert [owner("tDtDnQdgm2LXpyiqYvZ6", n) for n in (2, 3, 4, 7)] == [0, 1, 2, 5]
    assert [owner(f"L{i}", 3) for i in range(7)] == [0, 0, 1, 2, 2, 2, 1]


def test_two_workers_one_results_file_limits_kept(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(
        tmp_path / "in.csv", [*rows_for(6, 40), ("dup", "L0"), ("dup", "L0"), ("", "L1")]
    )
    out = tmp_path / "out.parquet"
    done = run_cli(
        "run", str(src), "-o", str(out), "--workers", "2", *fast_limits(sandbox, 20, 500)
    )
    assert done.code == 1, done.stderr[-2000:]  # one invalid row
    results = pl.read_parquet(out)
    assert results["row_index"].to_list() == list(range(243))
    assert Counter(results["status"].to_list()) == {"created": 241, "duplicate": 1, "invalid": 1}
    created = sandbox.state.conversations()
    for row in results.filter(pl.col("status") == "created").iter_rows(named=True):
        assert row["conversation_id"] == created[(row["location_id"], row["contact_id"])]
    times: dict[str | None, list[float]] = defaultdict(list)
    for r in sandbox.state.requests():
        times[r.location_id].append(r.t)
    assert all(max_in_any_window(t, 0.5) <= 20 for t in times.values())
    assert not OutputFiles(out).existing_journals()


def test_sigterm_with_workers_writes_results(sandbox: SandboxThread, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", rows_for(4, 200))
    out = tmp_path / "out.parquet"
    args = ["run", str(src), "-o", str(out), "--workers", "2", *fast_limits(sandbox, 30, 500)]
    proc = start_cli(*args)
    wait_until(lambda: len(sandbox.state.requests()) >= 100, timeout=30)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr[-2000:]
    results = pl.read_parquet(out)
    counts = Counter(results["status"].to_list())
    assert results.height == 800 and counts["created"] > 0 and counts["skipped"] > 0
    assert len(sandbox.state.conversations()) == counts["created"]
    done = run_cli(*args, "--resume")
    assert done.code == 0, done.stderr[-2000:]
    assert_all_settled_right(sandbox, out, 800)


def test_killed_parent_stops_its_workers_and_resume_finishes(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "in.csv", rows_for(4, 200))
    out = tmp_path / "out.parquet"
    args = ["run", str(src), "-o", str(out), "--workers", "2", *fast_limits(sandbox, 30, 500)]
    proc = start_cli(*args)
    wait_until(lambda: len(sandbox.state.requests()) >= 100, timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.5)  # the orphaned workers notice within half a second and stop
    settled_count = len(sandbox.state.requests())
    time.sleep(1.0)
    assert len(sandbox.state.requests()) == settled_count  # nobody is sending any more
    assert journal_lines(out) == 0  # no journal of a run in one process, but the workers' ones:
    assert OutputFiles(out).existing_journals() == OutputFiles(out).journals(2)
    done = run_cli(*args, "--resume")
    assert done.code == 0, done.stderr[-2000:]
    assert_all_settled_right(sandbox, out, 800)

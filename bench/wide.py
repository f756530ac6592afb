"""Benchmark 4: large CSV."""

from __future__ import annotations

from bench.harness import Options, failed_run, log
from bench.inputs import result_statuses, write_export_csv
from bench.metrics import Table, fmt_mib
from bench.processes import child_env, pipeline_argv, run_child

# Targets, from the issue.
WIDE_TARGET_FILE_BYTES = 4_500_000_000  # the "5 GB CSV" of the issue (16M export rows)
WIDE_RSS_TARGET_BYTES = 1024**3


def bench_wide_csv(options: Options, rows: int, locations: int = 1_000) -> Table:
    """Benchmark 4: a dry run over a HighLevel-style export CSV (12 columns, ~310 bytes a
    row): the peak RSS against the file's size. A large CSV must not need its size in
    memory; the target is set for the 5 GB file of ``--large``."""
    table = Table(f"4. Large CSV: pipeline run --dry-run over a contacts export, {rows:,} rows")
    work = options.workdir / "wide"
    work.mkdir()
    log(f"wide: generating {rows:,} rows")
    path = write_export_csv(work / f"export-{rows}.csv", rows, locations)
    size = path.stat().st_size
    label = f"{rows:,} rows, CSV ({size / 2**30:,.2f} GiB)"
    output = work / "results.parquet"
    argv = pipeline_argv(path, output, None, "--dry-run")
    run = run_child(argv, child_env(None), work, f"wide-{rows}", 120 + rows / 20_000)
    path.unlink()
    if run.timed_out or run.code not in (0, 1) or not output.exists():
        failed_run(table, label, run)
        return table
    with_target = size >= WIDE_TARGET_FILE_BYTES
    table.add(f"{label}: wall time", f"{run.wall_s:.2f} s")
    table.add(
        f"{label}: peak RSS",
        f"{fmt_mib(run.max_rss_bytes)} ({run.max_rss_bytes / size:.0%} of the file)",
        f"< {fmt_mib(WIDE_RSS_TARGET_BYTES)}" if with_target else "",
        run.max_rss_bytes < WIDE_RSS_TARGET_BYTES if with_target else None,
    )
    statuses = result_statuses(output)
    complete = sum(statuses.values()) == rows
    table.add(f"{label}: every row in results", "yes" if complete else "no", "", complete)
    table.notes.append(
        f"{label}: exit {run.code} (1 expected: invalid rows), CPU {run.cpu_s:.2f} s, "
        f"results by status {dict(sorted(statuses.items()))}"
    )
    return table

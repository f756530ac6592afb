"""Benchmark 3: scale of input."""

from __future__ import annotations

from collections.abc import Sequence

from bench.harness import Options, failed_run, log
from bench.inputs import result_statuses, scale_frame, write_frame
from bench.metrics import Table, fmt_mib
from bench.processes import child_env, pipeline_argv, run_child

# Targets, from the issue.
SCALE_WALL_TARGET_S = 10.0
SCALE_RSS_TARGET_BYTES = 1024**3
SCALE_TARGET_ROWS = 1_000_000


def bench_scale(options: Options, sizes: Sequence[int], locations: int = 1_000) -> Table:
    """Benchmark 3: a dry run over a big file: wall time and the process's peak RSS."""
    table = Table(f"3. Scale of input: pipeline run --dry-run over {locations:,} locations")
    work = options.workdir / "scale"
    work.mkdir()
    for rows in sizes:
        log(f"scale: generating {rows:,} rows")
        frame = scale_frame(rows, locations)
        paths = [write_frame(frame, work / f"input-{rows}.{ext}") for ext in ("parquet", "csv")]
        expected_invalid = frame.filter(
            (frame["contactId"].str.contains(" ")) | (frame["locationId"] == "")
        ).height
        del frame
        for path in paths:
            kind = path.suffix.lstrip(".").replace("parquet", "Parquet").replace("csv", "CSV")
            label = f"{rows:,} rows, {kind} ({path.stat().st_size / 2**20:,.1f} MiB)"
            log(f"scale: {label}")
            output = work / f"results-{rows}-{path.suffix.lstrip('.')}.parquet"
            argv = pipeline_argv(path, output, None, "--dry-run")
            run = run_child(argv, child_env(None), work, f"dry-{rows}-{kind}", 120 + rows / 10_000)
            if run.timed_out or run.code not in (0, 1) or not output.exists():
                failed_run(table, label, run)
                continue
            statuses = result_statuses(output)
            with_target = rows == SCALE_TARGET_ROWS
            table.add(
                f"{label}: wall time",
                f"{run.wall_s:.2f} s",
                f"< {SCALE_WALL_TARGET_S:g} s" if with_target else "",
                run.wall_s < SCALE_WALL_TARGET_S if with_target else None,
            )
            table.add(
                f"{label}: peak RSS",
                fmt_mib(run.max_rss_bytes),
                f"< {fmt_mib(SCALE_RSS_TARGET_BYTES)}" if with_target else "",
                run.max_rss_bytes < SCALE_RSS_TARGET_BYTES if with_target else None,
            )
            complete = (
                sum(statuses.values()) == rows and statuses.get("invalid") == expected_invalid
            )
            table.add(f"{label}: every row in results", "yes" if complete else "no", "", complete)
            table.notes.append(
                f"{label}: exit {run.code} (1 expected: invalid rows), CPU {run.cpu_s:.2f} s, "
                f"results by status {dict(sorted(statuses.items()))}"
            )
        for path in paths:
            path.unlink()
    return table

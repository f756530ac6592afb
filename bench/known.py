"""Benchmark 7: ``--known``: a re-exported file against millions of known pairs.

A nightly job passes every earlier night's results with ``--known``. The match is one
streaming join, so its cost should stay seconds and its memory bounded however many pairs
are known: measured as a dry run (the match is the same as in a sending run, and a dry run
sends nothing), side by side with the same dry run without ``--known``.
"""

from __future__ import annotations

from bench.harness import Options, failed_run, log
from bench.inputs import scale_frame, write_frame
from bench.metrics import Table, fmt_mib
from bench.processes import child_env, pipeline_argv, run_child

KNOWN_WALL_TARGET_S = 10.0


def bench_known(
    options: Options, rows: int = 1_000_000, known: int = 10_000_000, locations: int = 1_000
) -> Table:
    """A dry run of ``rows`` rows with ``known`` known pairs, 90% of the rows among them."""
    import polars as pl

    table = Table(
        f"7. Known pairs: pipeline run --dry-run --known, {rows:,} rows against "
        f"{known:,} known pairs over {locations:,} locations"
    )
    work = options.workdir / "known"
    work.mkdir()
    log(f"known: generating {rows:,} input rows and {known:,} known pairs")
    frame = scale_frame(rows, locations)
    source = write_frame(frame, work / "input.parquet")
    # Earlier nights' results: the first 90% of tonight's rows, plus pairs of contacts that
    # are no longer in the export, in several files as a nightly job leaves them.
    seen = frame.head(rows * 9 // 10).rename(
        {"contactId": "contact_id", "locationId": "location_id"}
    )
    others = scale_frame(known - seen.height, locations, start=rows * 10).rename(
        {"contactId": "contact_id", "locationId": "location_id"}
    )
    pairs = pl.concat([seen, others]).with_columns(
        conversation_id=pl.lit("conv-") + pl.int_range(pl.len()).cast(pl.String),
        status=pl.lit("created"),
    )
    del frame, seen, others
    parts = 10
    size = -(-pairs.height // parts)
    for k in range(parts):
        pairs.slice(k * size, size).write_parquet(work / f"results-night{k:02d}.parquet")
    del pairs
    glob = str(work / "results-night*.parquet")
    cases: list[tuple[str, tuple[str, ...]]] = [
        ("without --known", ()),
        (f"with --known ({known // 1_000_000}M pairs)", ("--known", glob)),
        (f"with --known ({2 * known // 1_000_000}M pairs)", ("--known", glob)),
    ]
    for case, (label, extra) in enumerate(cases):
        if case == 2:  # twice the history: each night's file again, as ten more nights
            for k in range(parts):
                night = work / f"results-night{k:02d}.parquet"
                (work / f"results-night{parts + k:02d}.parquet").write_bytes(night.read_bytes())
        output = work / f"plan-{case}.parquet"
        argv = pipeline_argv(source, output, None, "--dry-run", *extra)
        log(f"known: dry run {label}")
        run = run_child(argv, child_env(None), work, f"known-{case}", 600)
        if run.timed_out or run.code not in (0, 1) or not output.exists():
            failed_run(table, label, run)
            continue
        counts = pl.read_parquet(output, columns=["error_code"])["error_code"].value_counts()
        matched = dict(counts.iter_rows()).get("known_from_earlier_run", 0)
        checked = "--known" in extra
        table.add(
            f"{label}: wall time",
            f"{run.wall_s:.2f} s",
            f"< {KNOWN_WALL_TARGET_S:g} s" if checked else "",
            run.wall_s < KNOWN_WALL_TARGET_S if checked else None,
        )
        # Memory follows the input (tonight's pairs are the hash table), not the history:
        # twice the known pairs should cost little more.
        table.add(f"{label}: peak RSS", fmt_mib(run.max_rss_bytes))
        if checked:
            table.add("rows found known", f"{matched:,}")
        table.notes.append(f"{label}: exit {run.code}, CPU {run.cpu_s:.2f} s")
    return table

"""Benchmark 1: limit utilization, against a latency that varies as a real network's does
(80 ms, uniform +-50%: requests arrive in another order than they left, issue 23)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from bench.harness import Options, failed_run, log
from bench.inputs import even_frame, result_statuses, write_frame
from bench.metrics import (
    Table,
    first_window_waits,
    fmt_share,
    ideal_span,
    limit_metrics,
    save_requests,
    status_counts,
)
from bench.network import UNIFORM_80, Network
from bench.processes import (
    MACHINE,
    TOKEN,
    Child,
    CpuSampler,
    SandboxProcess,
    child_env,
    pipeline_argv,
)

# Targets, from the issues.
SPAN_RATIO_TARGET = 1.05
SHARE_429_TARGET = 0.01
LIMIT_USED_TARGET = 0.97  # issue 23


def limit_used(spans: Sequence[float], rows: int, rate_max: int, interval_s: float) -> float:
    """The mean share of its limit a location used: its rows over what the limit allows from
    its first request to the end of its last window, ``(span + interval) x rate``.

    Exactly 1.0 for the ideal schedule (full bursts one interval apart) when ``rows`` is a
    multiple of ``rate_max``; every round trip or ragged burst between windows lowers it.
    """
    return statistics.fmean(rows / ((s + interval_s) * rate_max / interval_s) for s in spans)


def bench_limit(
    options: Options, locations: int, rows_per_location: int = 300, network: Network = UNIFORM_80
) -> Table:
    """Benchmark 1: how close the pipeline comes to the ideal schedule under 100/10 s."""
    rate_max, interval_s = 100, 10.0
    rate = f"{rate_max}/{interval_s:g}s"
    rows = locations * rows_per_location
    ideal = ideal_span(rows_per_location, rate_max, interval_s)
    table = Table(
        f"1. Limit utilization: {locations} locations x {rows_per_location} rows, "
        f"sandbox {rate} per location, {network.label}"
    )
    work = options.workdir / f"limit-{locations}"
    work.mkdir()
    input_path = write_frame(even_frame(locations, rows_per_location), work / "input.parquet")
    output = work / "results.parquet"
    deadline = max(180.0, ideal * 6 + rows / 200)
    with (
        SandboxProcess.playing(work, network, rate=rate, config={}) as sandbox,
        CpuSampler() as sampler,
    ):
        log(f"limit: {rows} rows over {locations} locations (deadline {deadline:.0f} s)")
        sampler.watch("sandbox", sandbox.pid)
        # No --rate: the pipeline follows the limit the sandbox announces, as users run it.
        tuned = ("--concurrency", str(options.concurrency)) if options.concurrency else ()
        argv = pipeline_argv(input_path, output, sandbox.base_url, *tuned)
        child = Child(argv, child_env(TOKEN), work, "pipeline", deadline)
        sampler.watch("pipeline", child.pid, tree=True)
        run = child.wait()  # kills the child if interrupted
        sampler.finish("pipeline", run.ended, run.cpu_s)
        requests = sandbox.requests()
    save_requests(requests, work / "requests.jsonl")
    if run.timed_out or run.code not in (0, 1) or not output.exists():
        failed_run(table, "pipeline", run)
        return table
    statuses = result_statuses(output)
    created = statuses.get("created", 0)
    table.add("rows created", f"{created:,} / {rows:,}", "all", created == rows)
    table.add("pipeline exit code", str(run.code), "0", run.code == 0)
    if not any(r.location_id is not None for r in requests):
        failed_run(table, "pipeline", run)
        table.notes.append(f"the sandbox received no request; results by status {statuses}")
        return table
    metrics = limit_metrics(requests, interval_s, rate_max)
    table.add("mean span per location", f"{metrics.mean_span_s:.2f} s", f"ideal {ideal:g} s")
    table.add("max span per location", f"{metrics.max_span_s:.2f} s")
    needed = math.ceil(rows_per_location / rate_max)
    table.add(
        f"locations with span >= ideal + {interval_s / 2:g} s",
        f"{metrics.late_locations(ideal, interval_s)} of {metrics.locations}",
    )
    table.add(
        f"locations that needed more than {needed} windows",
        f"{metrics.extra_window_locations(needed)} of {metrics.locations}",
    )
    ratio = metrics.mean_span_s / ideal
    table.add(
        f"mean span / ideal {ideal:g} s",
        f"{ratio:.3f}",
        f"<= {SPAN_RATIO_TARGET:g}",
        ratio <= SPAN_RATIO_TARGET,
    )
    used = limit_used(metrics.spans, rows_per_location, rate_max, interval_s)
    table.add(
        "share of the per-location limit used, last window counted whole (mean)",
        f"{used:.3f}",
        f">= {LIMIT_USED_TARGET:g}",
        used >= LIMIT_USED_TARGET,
    )
    table.add(
        "429 answers",
        f"{metrics.share_429 * 100:.2f}% ({metrics.too_many} of {metrics.requests:,})",
        f"<= {SHARE_429_TARGET * 100:g}%",
        metrics.share_429 <= SHARE_429_TARGET,
    )
    table.add(
        f"most requests of one location in any {interval_s:g} s",
        str(metrics.max_in_window),
        f"<= {rate_max}",
        metrics.max_in_window <= rate_max,
    )
    table.add(
        f"a location's first {rate_max} requests arrive within",
        f"{metrics.mean_first_burst_s:.2f} s",
        "ideal 0 s (mean)",
    )
    # A round trip waited is a gap of at least the shortest latency (the spread's floor).
    waits = first_window_waits(requests, rate_max, network.low_ms / 1000)
    table.add(
        f"round trips waited in a location's first {rate_max} requests",
        f"mean {sum(waits) / len(waits):.2f}, max {max(waits)}",
        "mean <= 1.2 (the first request alone)",
        sum(waits) / len(waits) <= 1.2,
    )
    table.add(
        f"all locations' first {rate_max} requests arrived after",
        f"{metrics.first_bursts_done_s:.2f} s",
    )
    table.add("sending time, all locations", f"{metrics.sending_s:.2f} s")
    table.add("pipeline wall time", f"{run.wall_s:.2f} s")
    first_burst_end = metrics.first_t + metrics.first_bursts_done_s
    table.add(
        "CPU during the first bursts",
        f"sandbox {fmt_share(sampler.share('sandbox', metrics.first_t, first_burst_end))}, "
        f"pipeline {fmt_share(sampler.share('pipeline', metrics.first_t, first_burst_end))}, "
        f"machine {fmt_share(sampler.share(MACHINE, metrics.first_t, first_burst_end))}",
    )
    table.add(
        "CPU while sending",
        f"sandbox {fmt_share(sampler.share('sandbox', metrics.first_t, metrics.last_t))}, "
        f"pipeline {fmt_share(sampler.share('pipeline', metrics.first_t, metrics.last_t))}, "
        f"machine {fmt_share(sampler.share(MACHINE, metrics.first_t, metrics.last_t))}",
    )
    settings = f"--concurrency {options.concurrency}" if options.concurrency else "(defaults)"
    table.notes.append(
        f"pipeline run {settings} (no --rate: as announced); "
        f"{metrics.requests:,} API requests for {metrics.locations} locations, "
        f"answers by status {status_counts(requests)}; "
        f"span min {metrics.min_span_s:.2f} s"
    )
    if options.concurrency:
        floor = locations * rate_max * network.mean_ms / 1000 / options.concurrency
        table.notes.append(
            f"the first bursts ({locations} x {rate_max} requests) at --concurrency "
            f"{options.concurrency} and {network.mean_ms:g} ms mean latency need at least "
            f"{floor:.2f} s; if the pipeline interleaves locations, every location's bursts "
            "spread that much"
        )
    table.notes.append(
        f"the sandbox's network: {network.label} (pipeline sandbox "
        f"{' '.join(network.sandbox_flags())}); half of each request's latency passes before "
        "it arrives (its logged time, its rate slot), half before its answer leaves; share "
        f"of the limit used: a location's rows / ((span + {interval_s:g} s) x {rate_max} per "
        f"{interval_s:g} s), 1.000 for the ideal schedule"
    )
    return table

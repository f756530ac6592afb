"""Benchmark 9: ``pipeline check`` then ``pipeline run``, beside a run alone (issue 23).

The README's own sequence is a check, then the run. The check sends one request per
location, and that request is still in the location's window when the run starts: the run
must spend one permit less in its first window and no more. Before issue 23 it read that
request as another client and went on in single requests two seconds apart once its first
window was spent: 35-50% slower than a run alone.

Each pair runs the sample (``data/sample.csv``) against a fresh sandbox (uniform latency,
100 per 10 s): first the run alone, then check-then-run; the span is the sandbox's first to
last create of the run (the check's searches left out). Pairs are interleaved, so a machine
that gets busier shifts both; the figure is the ratio of the medians.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.harness import Options, failed_run, log
from bench.metrics import Request, Table, is_create, span
from bench.network import UNIFORM_80, Network
from bench.processes import (
    REPO,
    TOKEN,
    Child,
    Finished,
    SandboxProcess,
    child_env,
    pipeline_argv,
)

SAMPLE = REPO / "data" / "sample.csv"
PAIRS = 5
RATIO_TARGET = 1.05


def run_span(work: Path, network: Network, *, checked: bool) -> tuple[float, Finished]:
    """One run of the sample against a fresh sandbox: the span of its creates, the run."""
    output = work / "results.parquet"
    with SandboxProcess.playing(work, network, rate="100/10s", config={}) as sandbox:
        since = 0
        if checked:
            check = [
                *pipeline_argv(SAMPLE, output, sandbox.base_url)[:3],
                "check",
                str(SAMPLE),
                "--base-url",
                sandbox.base_url,
            ]
            done = Child(check, child_env(TOKEN), work, "check", 120.0).wait()
            if done.code not in (0, 1):
                raise RuntimeError(f"pipeline check exited {done.code}: {done.stderr_tail()}")
            since = len(sandbox.requests())
        argv = pipeline_argv(SAMPLE, output, sandbox.base_url, "--overwrite")
        run = Child(argv, child_env(TOKEN), work, "pipeline", 180.0).wait()
        requests: list[Request] = sandbox.requests()[since:]
    creates = sorted(r.t for r in requests if is_create(r))
    return span(creates), run


def bench_check_then_run(options: Options, network: Network = UNIFORM_80) -> Table:
    table = Table(
        f"9. pipeline check, then pipeline run, beside a run alone: the sample, {PAIRS} "
        f"interleaved pairs, fresh sandbox each, 100/10s, {network.label}, default settings"
    )
    alone: list[float] = []
    after_check: list[float] = []
    for pair in range(PAIRS):
        for checked, spans in ((False, alone), (True, after_check)):
            work = options.workdir / f"checkrun-{pair}-{'checked' if checked else 'alone'}"
            work.mkdir()
            try:
                seconds, run = run_span(work, network, checked=checked)
            except RuntimeError as exc:
                table.add("could not run", str(exc), "finishes", False)
                table.error = True
                return table
            if run.code not in (0, 1):  # 1: the sample's invalid rows
                failed_run(table, "pipeline run", run)
                return table
            spans.append(seconds)
            log(f"checkrun: pair {pair + 1}, {'after a check' if checked else 'alone'}: "
                f"{seconds:.2f} s")  # fmt: skip
    ratio = statistics.median(after_check) / statistics.median(alone)
    for name, spans in (("run alone", alone), ("after pipeline check", after_check)):
        every = ", ".join(f"{s:.2f}" for s in spans)
        table.add(f"{name}: span of creates, median (all)",
                  f"{statistics.median(spans):.2f} s ({every})")  # fmt: skip
    table.add("after a check / alone", f"{ratio:.3f}", f"<= {RATIO_TARGET}", ratio <= RATIO_TARGET)
    table.notes.append(
        "span: the sandbox's first to last create request of the run (the check's searches "
        "left out); the sample: 1,000 rows, 984 to create over 5 locations (2 windows each)"
    )
    return table

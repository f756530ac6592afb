"""``python -m bench``: the command line; the package's docstring says what it measures."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.array import CASES as ARRAY_CASES
from bench.array import bench_array
from bench.capacity import bench_capacity
from bench.checkrun import bench_check_then_run
from bench.harness import Options, log
from bench.known import bench_known
from bench.latency import CASES, bench_latency
from bench.limit import bench_limit
from bench.metrics import Table, render_markdown, render_text
from bench.scale import bench_scale
from bench.startup import bench_startup
from bench.wide import bench_wide_csv

BENCHMARKS = (
    "limit",
    "capacity",
    "scale",
    "wide",
    "startup",
    "latency",
    "known",
    "array",
    "checkrun",
)
# Too slow for the quick default set (latency ~5 min, array ~2-3 min).
LARGE_ONLY = frozenset({"latency", "array", "checkrun"})


def chosen_benchmarks(only: Sequence[str] | None, *, large: bool) -> frozenset[str]:
    """The benchmarks ``--only`` names, or by default all but the slow ones (``--large``:
    all)."""
    if only:
        return frozenset(only)
    return frozenset(b for b in BENCHMARKS if large or b not in LARGE_ONLY)


def machine_lines() -> list[str]:
    """Where the figures come from."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    return [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {os.cpu_count()} cores, {cpu}, {memory} RAM",
        f"Python {platform.python_version()} on {platform.platform()}",
    ]


def run_benchmarks(options: Options) -> list[Table]:
    plan: list[tuple[str, Callable[[], Table]]] = []
    if "limit" in options.only:
        plan.append(("limit", lambda: bench_limit(options, 20)))
        if options.large:
            plan.append(("limit", lambda: bench_limit(options, 200)))
    if "capacity" in options.only:
        plan.append(("capacity", lambda: bench_capacity(options, options.capacity_rows)))
    if "scale" in options.only:
        sizes = [1_000_000, 10_000_000] if options.large else [1_000_000]
        plan.append(("scale", lambda: bench_scale(options, sizes)))
    if "wide" in options.only:
        wide_rows = 16_000_000 if options.large else 3_000_000
        plan.append(("wide", lambda: bench_wide_csv(options, wide_rows)))
    if "known" in options.only:
        plan.append(("known", lambda: bench_known(options)))
    if "startup" in options.only:
        plan.append(("startup", lambda: bench_startup(options)))
    if "latency" in options.only:
        for case in CASES:
            plan.append(("latency", functools.partial(bench_latency, options, case)))
    if "checkrun" in options.only:
        plan.append(("checkrun", lambda: bench_check_then_run(options)))
    if "array" in options.only:
        for array_case in ARRAY_CASES:
            plan.append(("array", functools.partial(bench_array, options, array_case)))
    tables = []
    for name, bench in plan:
        started = time.monotonic()
        try:
            table = bench()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            table = Table(f"{name}: could not run", error=True)
            table.add("ran", f"{type(exc).__name__}: {exc}", "finishes", False)
        table.notes.append(f"benchmark took {time.monotonic() - started:.0f} s")
        log(f"{name} done in {time.monotonic() - started:.0f} s")
        tables.append(table)
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the pipeline against a local sandbox (loopback only).",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="the default: 20 locations, 10k rows, 1M rows"
    )
    size.add_argument(
        "--large",
        action="store_true",
        help="also 200 locations x 300 rows, 10M rows and the latency cases",
    )
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, help="run only these (repeatable)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="pipeline --concurrency in benchmark 1 (default: none, the pipeline's own: what "
        "users get)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each capacity variant")
    parser.add_argument(
        "--capacity-rows", type=int, default=10_000, help="rows per capacity run (benchmark 2)"
    )
    parser.add_argument(
        "--markdown",
        nargs="?",
        const="-",
        metavar="FILE",
        help="also write the tables as Markdown to FILE (or stdout)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(args_in)
    if min(args.repeats, args.concurrency or 1) < 1 or args.capacity_rows < 200:
        parser.error("--repeats and --concurrency must be >= 1, --capacity-rows >= 200")

    # SIGTERM unwinds like Ctrl-C, so the sandbox and any child still running are stopped.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    options = Options(
        large=args.large,
        workdir=workdir,
        concurrency=args.concurrency,
        repeats=args.repeats,
        capacity_rows=args.capacity_rows,
        only=chosen_benchmarks(args.only, large=args.large),
    )
    started = time.monotonic()
    try:
        tables = run_benchmarks(options)
    finally:
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    header = [
        f"$ python -m bench {' '.join(args_in)}".rstrip(),
        *machine_lines(),
        f"total time: {time.monotonic() - started:.0f} s",
    ]
    print("\n".join(header) + "\n")
    print(render_text(tables))
    figures = [f for t in tables for f in t.figures if f.ok is not None]
    print(
        f"{sum(1 for f in figures if f.ok)} PASS, {sum(1 for f in figures if not f.ok)} MISS "
        f"of {len(figures)} figures with a target"
    )
    if args.markdown:
        text = "\n".join(f"- {line}" for line in header) + "\n\n" + render_markdown(tables)
        _write_or_print(args.markdown, text)
    if args.json:
        payload = {"header": header, "tables": [_table_json(t) for t in tables]}
        _write_or_print(args.json, json.dumps(payload, indent=2) + "\n")
    if any(t.error for t in tables):
        return 2
    return 1 if any(t.missed for t in tables) else 0


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _table_json(table: Table) -> dict[str, Any]:
    return {
        "title": table.title,
        "figures": [
            {"name": f.name, "value": f.value, "target": f.target, "result": f.verdict}
            for f in table.figures
        ],
        "notes": table.notes,
    }


def _write_or_print(destination: str, text: str) -> None:
    if destination == "-":
        sys.stdout.write(text)
    else:
        Path(destination).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())

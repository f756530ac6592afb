"""``python -m pipeline.benchmark [--quick | --large]``: measure the pipeline against its targets.

Everything runs on this machine over loopback, each program in its own process, the way a
user runs them: the sandbox API (``python -m pipeline.sandbox``) in one, the pipeline
(``python -m pipeline run ...``) in another, and the harness only generates inputs, starts
and times processes, and reads the sandbox's request log afterwards. Server-side figures come
from that log (``GET /_sandbox/state``: receipt time ``t`` on the system-wide monotonic
clock, ``locationId``, ``status`` of every API request), so they describe what the API saw,
not what the client believes it did.

Four benchmarks, each bounded in time:

1. **Limit utilization**: L locations x 300 rows against a sandbox limited to 100 requests
   per 10 s per location with 80 ms latency. Per location span (last receipt - first
   receipt) against the ideal 20 s, the share of 429 answers, the most requests of one
   location in any 10 s window, exit code, rows created, wall time.
2. **Client capacity**: an unlimited, zero-latency sandbox; a bare aiohttp loop and the
   pipeline take turns on the same 10,000 rows (sandbox reset between), 3 times
   interleaved; medians. Also ``--workers 2`` when the CLI offers it, and the sandbox's own
   ceiling (two bare clients at once against one), with the CPU share of every process
   during the sending window, to say which one is the bottleneck.
3. **Scale of input**: ``pipeline run --dry-run`` over 1,000,000 generated rows (10,000,000
   with ``--large``), Parquet and CSV: wall time and peak RSS of the pipeline process.
4. **Large CSV**: ``pipeline run --dry-run`` over a HighLevel-style contacts export of
   3,000,000 rows and 12 columns (~0.9 GB; 16,000,000 rows, ~5 GB, with ``--large``),
   written to disk a chunk at a time: peak RSS against the file's size.

Exit status: 0 when every figure with a target meets it, 1 when one misses, 2 when a
benchmark could not run at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import polars as pl

REPO = Path(__file__).resolve().parent.parent
TOKEN = "sandbox-token"  # noqa: S105 - the sandbox's public demo token
API_VERSION = "2021-07-28"
CREATE_PATH = "/conversations/"
LOOPBACK = "127.0.0.1"
_LISTENING = re.compile(r"listening on (http://\S+)")
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")

# Targets, from the issue.
SPAN_RATIO_TARGET = 1.05
SHARE_429_TARGET = 0.01
CAPACITY_RATIO_TARGET = 0.8
SCALE_WALL_TARGET_S = 10.0
SCALE_RSS_TARGET_BYTES = 1024**3
SCALE_TARGET_ROWS = 1_000_000
WIDE_TARGET_FILE_BYTES = 4_500_000_000  # the "5 GB CSV" of the issue (16M export rows)
WIDE_RSS_TARGET_BYTES = 1024**3
# "The second client added this much throughput" above which one client was the limit.
CLIENT_BOUND_GAIN = 1.3
# A capacity run during which other work took more than this share of a core is disturbed:
# it is run again (at most DISTURBED_RETRIES times) and left out of the medians.
DISTURBED_CPU = 0.25
DISTURBED_RETRIES = 2


# -- metrics from the sandbox's request log (pure) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One API request as the sandbox logged it; ``t`` is its receipt time (monotonic s)."""

    t: float
    method: str
    path: str
    location_id: str | None
    status: int


def parse_requests(records: Iterable[Mapping[str, Any]]) -> list[Request]:
    """The ``requests`` list of ``GET /_sandbox/state``, oldest first."""
    return [
        Request(
            t=float(r["t"]),
            method=str(r["method"]),
            path=str(r["path"]),
            location_id=r.get("locationId"),
            status=int(r["status"]),
        )
        for r in records
    ]


def is_create(request: Request) -> bool:
    """A Create Conversation request."""
    return request.method == "POST" and request.path == CREATE_PATH


def times_by_location(requests: Iterable[Request]) -> dict[str, list[float]]:
    """Sorted receipt times of the requests that name a location, per location."""
    out: dict[str, list[float]] = {}
    for request in requests:
        if request.location_id is not None:
            out.setdefault(request.location_id, []).append(request.t)
    for times in out.values():
        times.sort()
    return out


def span(times: Sequence[float]) -> float:
    """Last minus first of sorted times; 0 for fewer than two."""
    return times[-1] - times[0] if len(times) > 1 else 0.0


def max_in_window(times: Sequence[float], window_s: float) -> int:
    """Most of the sorted ``times`` inside any half-open window ``[t, t + window_s)``.

    Half-open as the sandbox counts: a request received exactly ``window_s`` after another
    no longer shares its window.
    """
    best = 0
    start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def bursts(times: Sequence[float], gap_s: float) -> list[int]:
    """Sizes of the runs of sorted ``times`` separated by more than ``gap_s``."""
    sizes: list[int] = []
    previous = -math.inf
    for t in times:
        if t - previous > gap_s or not sizes:
            sizes.append(0)
        sizes[-1] += 1
        previous = t
    return sizes


def ideal_span(rows_per_location: int, rate_max: int, interval_s: float) -> float:
    """Shortest possible first-to-last span: full bursts, one interval apart."""
    return (math.ceil(rows_per_location / rate_max) - 1) * interval_s


@dataclass(frozen=True, slots=True)
class LimitMetrics:
    """What the request log says about how well a run used the per-location limit."""

    locations: int
    requests: int
    too_many: int
    mean_span_s: float
    min_span_s: float
    max_span_s: float
    max_in_window: int
    mean_first_burst_s: float  # a location's first ``burst`` requests, first to last
    first_bursts_done_s: float  # from the first request to the end of the last first burst
    first_t: float
    last_t: float
    spans: tuple[float, ...] = ()
    windows: tuple[int, ...] = ()  # per location: bursts separated by a third of an interval

    def late_locations(self, ideal_s: float, interval_s: float) -> int:
        """Locations whose span took at least half an interval more than the ideal."""
        return sum(1 for s in self.spans if s >= ideal_s + interval_s / 2)

    def extra_window_locations(self, needed: int) -> int:
        """Locations that sent in more bursts than ``needed``: a window left partly unused,
        so its last few rows waited for one more."""
        return sum(1 for w in self.windows if w > needed)

    @property
    def share_429(self) -> float:
        return self.too_many / self.requests if self.requests else 0.0

    @property
    def sending_s(self) -> float:
        return self.last_t - self.first_t


def limit_metrics(requests: Sequence[Request], window_s: float, burst: int = 100) -> LimitMetrics:
    """Spans, 429 share and the densest window, over every request that names a location.

    Also how long each location's first ``burst`` requests took to arrive: ideally they all
    arrive at once, and any spread there delays every later burst of that location too.
    """
    by_location = times_by_location(requests)
    spans = [span(times) for times in by_location.values()]
    located = [r for r in requests if r.location_id is not None]
    if not located:
        raise ValueError("the request log holds no request for any location")
    first_t = min(r.t for r in located)
    burst_ends = [times[: max(1, burst)][-1] for times in by_location.values()]
    return LimitMetrics(
        locations=len(by_location),
        requests=len(located),
        too_many=sum(1 for r in located if r.status == 429),
        mean_span_s=statistics.fmean(spans),
        min_span_s=min(spans),
        max_span_s=max(spans),
        max_in_window=max(max_in_window(times, window_s) for times in by_location.values()),
        mean_first_burst_s=statistics.fmean(
            end - times[0] for end, times in zip(burst_ends, by_location.values(), strict=True)
        ),
        first_bursts_done_s=max(burst_ends) - first_t,
        first_t=first_t,
        last_t=max(r.t for r in located),
        spans=tuple(spans),
        windows=tuple(len(bursts(times, window_s / 3)) for times in by_location.values()),
    )


@dataclass(frozen=True, slots=True)
class SendRate:
    """Create requests per second between the first and the last receipt."""

    creates: int
    first_t: float
    last_t: float

    @property
    def seconds(self) -> float:
        return self.last_t - self.first_t

    @property
    def per_s(self) -> float:
        return self.creates / self.seconds if self.seconds > 0 else 0.0


def send_rate(requests: Sequence[Request]) -> SendRate:
    """Rate of create requests as the server received them (no start-up, no file I/O)."""
    times = [r.t for r in requests if is_create(r)]
    if len(times) < 2:
        raise ValueError("fewer than two create requests in the request log")
    return SendRate(len(times), min(times), max(times))


def save_requests(requests: Iterable[Request], path: Path) -> None:
    """The request log as JSON lines, for a look afterwards (``--keep``)."""
    with path.open("w", encoding="utf-8") as out:
        for r in requests:
            out.write(json.dumps([r.t, r.method, r.path, r.location_id, r.status]) + "\n")


def status_counts(requests: Iterable[Request]) -> dict[int, int]:
    """Answers by HTTP status."""
    return dict(sorted(Counter(r.status for r in requests).items()))


def cpu_share(
    samples: Sequence[tuple[float, float]], start: float, end: float, *, ended: bool = False
) -> float | None:
    """CPU seconds used per wall second in ``[start, end]``, from ``(time, cpu_s)`` samples.

    Linear interpolation between samples; None when the samples do not cover the interval.
    ``ended``: the last sample is the process's exit, so it used nothing after it.
    1.0 means one core busy all the time.
    """
    if end <= start or len(samples) < 2 or samples[0][0] > start:
        return None
    if samples[-1][0] < end:
        if not ended:
            return None
        samples = [*samples, (end, samples[-1][1])]

    def at(t: float) -> float:
        times = [s[0] for s in samples]
        i = bisect_left(times, t)
        if i < len(samples) and samples[i][0] == t:
            return samples[i][1]
        (t0, c0), (t1, c1) = samples[i - 1], samples[i]
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0)

    return (at(end) - at(start)) / (end - start)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def bottleneck(
    one_per_s: float,
    two_per_s: float,
    sandbox_cpu: float | None,
    client_cpu: float | None,
    machine_cpu: float | None,
    cores: int,
) -> str:
    """Which resource limited a single client's run against the sandbox.

    A second client at once adding a good deal means one client could not keep the sandbox
    busy. Adding little means the sandbox is at its ceiling: because its one event loop is
    saturated, or because the machine has no CPU left for it (the processes share it).
    CPU figures are in cores (1.0 = one core busy); ``machine_cpu`` is all cores together.
    """
    gain = two_per_s / one_per_s if one_per_s > 0 else math.nan
    added = f"a 2nd client adds {gain - 1:+.0%}"
    if gain >= CLIENT_BOUND_GAIN:
        return f"the client ({added})"
    if sandbox_cpu is not None and sandbox_cpu >= 0.9:
        return f"the sandbox: its core is saturated ({added})"
    if machine_cpu is None and sandbox_cpu is not None and client_cpu is not None:
        machine_cpu = sandbox_cpu + client_cpu
    if machine_cpu is not None and machine_cpu >= 0.85 * cores:
        client_bound = client_cpu is not None and client_cpu >= 0.9
        return (
            f"the machine: its {cores} cores are {machine_cpu / cores:.0%} busy"
            f"{', the client alone keeps one busy' if client_bound else ''} ({added})"
        )
    return f"the sandbox ({added})"


# -- results and tables (pure) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figure:
    """One line of a results table; ``ok`` None means "for information, no target"."""

    name: str
    value: str
    target: str = ""
    ok: bool | None = None

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


@dataclass
class Table:
    """The figures of one benchmark, and notes on how to read them."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: bool = False

    def add(self, name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        self.figures.append(Figure(name, value, target, ok))

    @property
    def missed(self) -> list[Figure]:
        return [f for f in self.figures if f.ok is False]


def render_text(tables: Sequence[Table]) -> str:
    """Plain, aligned tables for a terminal."""
    out: list[str] = []
    for table in tables:
        rows = [("figure", "value", "target", "result")] + [
            (f.name, f.value, f.target, f.verdict) for f in table.figures
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        out.append(table.title)
        out.append("=" * len(table.title))
        for n, row in enumerate(rows):
            out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        out.extend(f"  * {note}" for note in table.notes)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(tables: Sequence[Table]) -> str:
    """The same tables as GitHub Markdown, for BENCHMARKS.md."""
    out: list[str] = []
    for table in tables:
        out.append(f"### {table.title}")
        out.append("")
        out.append("| figure | value | target | result |")
        out.append("| --- | ---: | --- | --- |")
        for f in table.figures:
            verdict = f"**{f.verdict}**" if f.verdict else ""
            cells = (f.name, f.value, f.target, verdict)
            out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        if table.notes:
            out.append("")
            out.extend(f"- {note}" for note in table.notes)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def fmt_rate(per_s: float) -> str:
    return f"{per_s:,.0f}/s"


def fmt_mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def fmt_share(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.0f}%"


# -- input files ---------------------------------------------------------------------------------


def location_id(k: int) -> str:
    """``loc0001`` for k = 0."""
    return f"loc{k + 1:04d}"


def even_frame(locations: int, rows_per_location: int, prefix: str = "c") -> pl.DataFrame:
    """Every location with the same number of rows, interleaved; contacts all distinct."""
    import polars as pl

    n = locations * rows_per_location
    i = pl.int_range(0, n, dtype=pl.Int64)
    return pl.select(
        contactId=pl.lit(prefix) + i.cast(pl.String).str.zfill(9),
        locationId=pl.lit("loc") + (i % locations + 1).cast(pl.String).str.zfill(4),
    )


def scale_frame(rows: int, locations: int, *, start: int = 0) -> pl.DataFrame:
    """``rows`` rows over ``locations``: ~1% invalid (half bad contact, half empty location)
    and ~1% duplicates of a row 50 earlier. Contact ids are hash-like, ~20 characters, and
    rows come in no particular location order, so neither file format compresses unfairly."""
    import polars as pl

    i = pl.int_range(start, start + rows, dtype=pl.Int64)

    def contact(k: pl.Expr) -> pl.Expr:
        return pl.lit("c") + k.hash(seed=7).cast(pl.String)

    def location(k: pl.Expr) -> pl.Expr:
        k = k.hash(seed=11) % locations + 1
        return pl.lit("loc") + k.cast(pl.String).str.zfill(4)

    duplicate = (i % 100 == 71) & (i >= 100)
    return pl.select(
        contactId=pl.when(duplicate)
        .then(contact(i - 50))
        .when(i % 200 == 37)
        .then(pl.lit("bad id ") + i.cast(pl.String))
        .otherwise(contact(i)),
        locationId=pl.when(duplicate)
        .then(location(i - 50))
        .when(i % 200 == 137)
        .then(pl.lit(""))
        .otherwise(location(i)),
    )


EXPORT_TEXT_COLUMNS = (
    "First Name",
    "Last Name",
    "Email",
    "Phone",
    "Company Name",
    "Address",
    "City",
    "Tags",
    "Source",
    "Notes",
)


def write_export_csv(path: Path, rows: int, locations: int, chunk: int = 1_000_000) -> Path:
    """A HighLevel-style contacts export of ``rows`` rows: ``Contact Id``, ``Location Id``
    and ten text columns, about 330 bytes a row. The rows follow ``scale_frame`` (about 1%
    invalid, 1% duplicates). Written a chunk at a time, so a file of any size can be made
    without holding it in memory."""
    import polars as pl

    with path.open("wb") as handle:
        for start in range(0, rows, chunk):
            ids = scale_frame(min(chunk, rows - start), locations, start=start)
            k = pl.int_range(start, start + ids.height, dtype=pl.Int64)
            text = [
                (pl.lit(f"{name.lower()} ") + k.hash(seed=n).cast(pl.String)).alias(name)
                for n, name in enumerate(EXPORT_TEXT_COLUMNS)
            ]
            frame = ids.rename({"contactId": "Contact Id", "locationId": "Location Id"})
            frame.with_columns(text).write_csv(handle, include_header=start == 0)
    return path


def write_frame(frame: pl.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


def result_statuses(path: Path) -> dict[str, int]:
    """Rows of a results file by status."""
    import polars as pl

    counts = pl.read_parquet(path, columns=["status"])["status"].value_counts()
    return {str(s): int(n) for s, n in counts.iter_rows()}


# -- processes ---------------------------------------------------------------------------------


def child_env(token: str | None) -> dict[str, str]:
    """The environment for a child: no GHL_* settings, no proxies, the token if wanted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHL_") and k not in _PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = f"{LOOPBACK},localhost"
    env["PYTHONUNBUFFERED"] = "1"
    if token is not None:
        env["GHL_TOKEN"] = token
    return env


def require_loopback(url: str) -> str:
    """Refuse any URL that is not plain http on 127.0.0.1: benchmarks never leave the box."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != LOOPBACK:
        raise ValueError(f"benchmark traffic must stay on http://{LOOPBACK}, got {url!r}")
    return url.rstrip("/")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int, *, tree: bool = False) -> float | None:
    """User + system CPU seconds of a process (plus its reaped children, and with ``tree``
    its live descendants); None once it is gone."""
    fields = _proc_stat(pid)
    if fields is None:
        return None
    total = sum(int(x) for x in fields[11:15])
    if tree:
        parents = {pid}
        stats: dict[int, list[str]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != pid:
                child = _proc_stat(int(entry.name))
                if child is not None:
                    stats[int(entry.name)] = child
        grew = True
        while grew:
            grew = False
            for other, st in stats.items():
                if other not in parents and int(st[1]) in parents:
                    parents.add(other)
                    total += sum(int(x) for x in st[11:13])
                    grew = True
    return total / _TICK


def machine_busy_s() -> float | None:
    """CPU seconds all cores together spent busy (not idle, not waiting) since boot."""
    try:
        with Path("/proc/stat").open() as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7)) / _TICK


MACHINE = "machine"


class CpuSampler:
    """Samples the CPU time of named processes every ``interval_s`` on a daemon thread.

    Sample times are ``time.monotonic()``, the clock the sandbox stamps requests with, so
    a process's CPU share can be read over exactly the window the request log shows.
    ``MACHINE`` is sampled too: the busy time of all cores together.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self._interval = interval_s
        self._watched: dict[str, tuple[int, bool]] = {}
        self._ended: set[str] = set()
        self.samples: dict[str, list[tuple[float, float]]] = {MACHINE: []}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def watch(self, name: str, pid: int, *, tree: bool = False) -> None:
        with self._lock:
            self._watched[name] = (pid, tree)
            self.samples[name] = []
        self._sample_once()

    def finish(self, name: str, ended: float, cpu_s: float) -> None:
        """The last point of a process that ended: its total CPU (from ``wait4``) at exit."""
        with self._lock:
            self._watched.pop(name, None)
            self._ended.add(name)
            self.samples.setdefault(name, []).append((ended, cpu_s))

    def _sample_once(self) -> None:
        with self._lock:
            watched = dict(self._watched)
        busy = machine_busy_s()
        if busy is not None:
            now = time.monotonic()
            with self._lock:
                self.samples[MACHINE].append((now, busy))
        for name, (pid, tree) in watched.items():
            cpu = process_cpu_s(pid, tree=tree)
            now = time.monotonic()
            if cpu is not None:
                with self._lock:
                    if name in self._watched:
                        self.samples[name].append((now, cpu))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample_once()

    def share(self, name: str, start: float, end: float) -> float | None:
        with self._lock:
            samples = sorted(self.samples.get(name, []))  # two threads append
            ended = name in self._ended
        return cpu_share(samples, start, end, ended=ended)

    def __enter__(self) -> CpuSampler:
        self._sample_once()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True, slots=True)
class Finished:
    """A child process that ran to its end (or was killed at its deadline)."""

    argv: list[str]
    code: int
    ended: float  # time.monotonic() when reaped
    wall_s: float
    max_rss_bytes: int
    cpu_s: float
    timed_out: bool
    stdout_path: Path
    stderr_path: Path

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_tail(self, lines: int = 5) -> str:
        text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])


class Child:
    """A child process whose resource usage is collected by ``wait4`` when it ends.

    ``wait4`` gives this very child's peak RSS and CPU time (and those of the children it
    reaped), which is what the scale benchmark reports. The child leads its own process
    group, so a deadline kill takes its helpers with it.
    """

    def __init__(
        self, argv: list[str], env: Mapping[str, str], workdir: Path, name: str, deadline_s: float
    ) -> None:
        self.argv = argv
        self.deadline_s = deadline_s
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, env=dict(env), cwd=REPO, start_new_session=True
            )
        self._status: tuple[int, Any] | None = None
        self.ended = math.nan
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _reap(self) -> None:
        _pid, status, usage = os.wait4(self.proc.pid, 0)
        self.ended = time.monotonic()
        self._status = (status, usage)

    def kill(self) -> None:
        """SIGKILL the child's process group (it and any helpers it started), if still there.

        Asks ``_status`` rather than ``Thread.is_alive()``: after a join interrupted by a
        signal, Python 3.11 may report the reaper thread as stopped while it still waits."""
        if self._status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self) -> Finished:
        remaining = self.deadline_s - (time.monotonic() - self.started)
        try:
            self._reaper.join(max(0.0, remaining))
        except BaseException:  # Ctrl-C: a child in its own session would outlive us
            self.kill()
            raise
        timed_out = self._status is None
        if timed_out:
            self.kill()
            self._reaper.join(30)
        assert self._status is not None
        status, usage = self._status
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code  # reaped here; Popen must not wait for it again
        return Finished(
            argv=self.argv,
            code=code,
            ended=self.ended,
            wall_s=self.ended - self.started,
            max_rss_bytes=int(usage.ru_maxrss) * 1024,  # kilobytes on Linux
            cpu_s=float(usage.ru_utime + usage.ru_stime),
            timed_out=timed_out,
            stdout_path=self.stdout_path,
            stderr_path=self.stderr_path,
        )


def run_child(
    argv: list[str], env: Mapping[str, str], workdir: Path, name: str, deadline_s: float
) -> Finished:
    """Run ``argv`` to the end; its peak RSS and CPU are measured by a small launcher.

    Linux carries a process's RSS high-water mark across ``exec`` into the new program's
    ``ru_maxrss``: a child forked from this harness would report at least the harness's own
    peak (it generates the inputs). The launcher (``_rusage``) is small, and forks the
    program itself, so the figure is the program's alone."""
    report = workdir / f"{name}.rusage.json"
    launcher = [sys.executable, "-m", "pipeline.benchmark", "_rusage", str(report), "--"]
    finished = Child([*launcher, *argv], env, workdir, name, deadline_s).wait()
    with contextlib.suppress(OSError, ValueError, KeyError):
        measured = json.loads(report.read_text())
        finished = replace(
            finished,
            argv=argv,
            max_rss_bytes=int(measured["max_rss_bytes"]),
            cpu_s=float(measured["cpu_s"]),
        )
    return finished


def rusage_main(argv: Sequence[str]) -> int:
    """``_rusage REPORT -- PROGRAM ARGS...``: run the program, write its peak RSS and CPU
    (from ``wait4``) to REPORT as JSON, and exit as it did."""
    report, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: _rusage REPORT -- PROGRAM [ARGS...]")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child becomes the program
        try:
            os.execvp(command[0], command)  # noqa: S606 - argv from this harness
        finally:
            os._exit(127)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda received, _frame: os.kill(pid, received))
    _pid, status, usage = os.wait4(pid, 0)
    Path(report).write_text(
        json.dumps(
            {
                "max_rss_bytes": usage.ru_maxrss * 1024,  # kilobytes on Linux
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        )
    )
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    return os.waitstatus_to_exitcode(status)


class SandboxProcess:
    """``python -m pipeline.sandbox`` in its own process, and its admin endpoints."""

    def __init__(
        self, workdir: Path, *, rate: str, latency_ms: float, config: Mapping[str, Any]
    ) -> None:
        self._argv = [
            sys.executable,
            "-m",
            "pipeline.sandbox",
            "--host",
            LOOPBACK,
            "--port",
            "0",
            "--rate",
            rate,
            "--latency-ms",
            f"{latency_ms:g}",
            "--config-json",
            json.dumps(dict(config)),
        ]
        self._stderr_path = workdir / f"sandbox-{os.getpid()}-{time.monotonic_ns()}.stderr"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> SandboxProcess:
        with self._stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                self._argv,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=child_env(None),
                cwd=REPO,
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30.0)
        line = self.proc.stdout.readline() if ready else ""
        match = _LISTENING.search(line)
        if match is None:
            self.__exit__()
            raise RuntimeError(
                f"the sandbox did not start: {line.strip()!r} "
                f"{self._stderr_path.read_text(errors='replace')[-500:]!r}"
            )
        self.base_url = require_loopback(match.group(1))
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def admin(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - base_url checked: http://127.0.0.1
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with self._opener.open(request, timeout=timeout) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self.admin("POST", "/_sandbox/reset")

    def requests(self) -> list[Request]:
        return parse_requests(self.admin("GET", "/_sandbox/state?since=0")["requests"])


def pipeline_argv(input_path: Path, output: Path, base_url: str | None, *options: str) -> list[str]:
    argv = [sys.executable, "-m", "pipeline", "run", str(input_path), "-o", str(output)]
    if base_url is not None:
        argv += ["--base-url", require_loopback(base_url)]
    return [*argv, *options, "--log-format", "json"]


def pipeline_has_option(option: str) -> bool:
    """Whether ``pipeline run --help`` lists ``option`` (the CLI is still growing)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--help"],
        capture_output=True,
        text=True,
        env=child_env(None),
        cwd=REPO,
        timeout=60,
        check=False,
    ).stdout
    return re.search(rf"(^|\s){re.escape(option)}([\s=,]|$)", help_text) is not None


# -- the bare client (run as its own process) --------------------------------------------------


async def bare_client(
    base_url: str, rows: int, locations: int, prefix: str, concurrency: int
) -> dict[str, Any]:
    """The floor any client library adds to: aiohttp, N workers, one pooled session."""
    import aiohttp

    url = require_loopback(base_url) + CREATE_PATH
    headers = {"Authorization": f"Bearer {TOKEN}", "Version": API_VERSION}
    statuses: Counter[int] = Counter()
    indices = iter(range(rows))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            for i in indices:
                body = {"locationId": location_id(i % locations), "contactId": f"{prefix}{i:09d}"}
                async with session.post(url, json=body) as response:
                    await response.read()
                    statuses[response.status] += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {
        "requests": sum(statuses.values()),
        "elapsed_s": elapsed,
        "per_s": sum(statuses.values()) / elapsed if elapsed > 0 else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def bare_client_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.benchmark _bare-client")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--locations", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    result = asyncio.run(
        bare_client(args.base_url, args.rows, args.locations, args.prefix, args.concurrency)
    )
    print(json.dumps(result), flush=True)
    return 0


def bare_argv(base_url: str, rows: int, locations: int, prefix: str, concurrency: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.benchmark",
        "_bare-client",
        "--base-url",
        require_loopback(base_url),
        "--rows",
        str(rows),
        "--locations",
        str(locations),
        "--prefix",
        prefix,
        "--concurrency",
        str(concurrency),
    ]


# -- the benchmarks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    large: bool
    workdir: Path
    concurrency: int  # the pipeline's --concurrency in the limit benchmark
    repeats: int
    capacity_rows: int
    only: frozenset[str]


def log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def failed_run(table: Table, what: str, run: Finished) -> None:
    why = "timed out" if run.timed_out else f"exit code {run.code}"
    table.add(f"{what} ran", why, "finishes", False)
    table.notes.append(f"{what} stderr: {run.stderr_tail()}")
    table.error = True


def bench_limit(options: Options, locations: int, rows_per_location: int = 300) -> Table:
    """Benchmark 1: how close the pipeline comes to the ideal schedule under 100/10 s."""
    rate_max, interval_s, latency_ms = 100, 10.0, 80.0
    rate = f"{rate_max}/{interval_s:g}s"
    rows = locations * rows_per_location
    ideal = ideal_span(rows_per_location, rate_max, interval_s)
    table = Table(
        f"1. Limit utilization: {locations} locations x {rows_per_location} rows, "
        f"sandbox {rate} per location, {latency_ms:g} ms latency"
    )
    work = options.workdir / f"limit-{locations}"
    work.mkdir()
    input_path = write_frame(even_frame(locations, rows_per_location), work / "input.parquet")
    output = work / "results.parquet"
    deadline = max(180.0, ideal * 6 + rows / 200)
    with (
        SandboxProcess(work, rate=rate, latency_ms=latency_ms, config={}) as sandbox,
        CpuSampler() as sampler,
    ):
        log(f"limit: {rows} rows over {locations} locations (deadline {deadline:.0f} s)")
        sampler.watch("sandbox", sandbox.pid)
        # No --rate: the pipeline follows the limit the sandbox announces, as users run it.
        argv = pipeline_argv(
            input_path, output, sandbox.base_url, "--concurrency", str(options.concurrency),
        )  # fmt: skip
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
    table.notes.append(
        f"pipeline run --concurrency {options.concurrency} (no --rate: as announced); "
        f"{metrics.requests:,} API requests for {metrics.locations} locations, "
        f"answers by status {status_counts(requests)}; "
        f"span min {metrics.min_span_s:.2f} s"
    )
    floor = locations * rate_max * latency_ms / 1000 / options.concurrency
    table.notes.append(
        f"the first bursts ({locations} x {rate_max} requests) at --concurrency "
        f"{options.concurrency} and {latency_ms:g} ms latency need at least {floor:.2f} s; "
        "if the pipeline interleaves locations, every location's bursts spread that much"
    )
    return table


@dataclass
class Sample:
    """One capacity run: server-side rate, client wall time, CPU shares while sending."""

    per_s: float
    wall_s: float
    sandbox_cpu: float | None
    client_cpu: float | None
    machine_cpu: float | None
    ok: bool

    @property
    def disturbed(self) -> bool:
        others = self.others_cpu
        return others is not None and others > DISTURBED_CPU

    @property
    def others_cpu(self) -> float | None:
        """CPU the machine spent on anything else: the kernel, this harness, other programs.

        High values mark a run disturbed by a noisy neighbour."""
        parts = (self.machine_cpu, self.sandbox_cpu, self.client_cpu)
        if any(p is None for p in parts):
            return None
        machine, sandbox, client = (p or 0.0 for p in parts)
        return max(0.0, machine - sandbox - client)


def _capacity_sample(
    sandbox: SandboxProcess,
    sampler: CpuSampler,
    argvs: Sequence[tuple[str, list[str]]],
    env: Mapping[str, str],
    work: Path,
    deadline_s: float,
    *,
    tree: bool = False,
) -> tuple[Sample, list[Finished]]:
    sandbox.reset()
    children: list[Child] = []
    try:
        for name, argv in argvs:
            children.append(Child(argv, env, work, name, deadline_s))
            sampler.watch(name, children[-1].pid, tree=tree)
        finished = [child.wait() for child in children]
    except BaseException:
        for child in children:
            child.kill()
        raise
    for (name, _), run in zip(argvs, finished, strict=True):
        sampler.finish(name, run.ended, run.cpu_s)
    try:
        rate = send_rate(sandbox.requests())
    except ValueError as exc:
        why = "; ".join(
            f"{name}: exit {run.code}, stderr {run.stderr_tail(2)[-400:]!r}"
            for (name, _), run in zip(argvs, finished, strict=True)
        )
        raise RuntimeError(f"{exc} ({why})") from exc
    shares = [sampler.share(name, rate.first_t, rate.last_t) for name, _ in argvs]
    client_cpu = None if any(s is None for s in shares) else sum(s or 0.0 for s in shares)
    ok = all(f.code in (0,) and not f.timed_out for f in finished)
    sample = Sample(
        per_s=rate.per_s,
        wall_s=max(f.wall_s for f in finished),
        sandbox_cpu=sampler.share("sandbox", rate.first_t, rate.last_t),
        client_cpu=client_cpu,
        machine_cpu=sampler.share(MACHINE, rate.first_t, rate.last_t),
        ok=ok,
    )
    return sample, finished


def bench_capacity(options: Options, rows: int = 10_000, locations: int = 200) -> Table:
    """Benchmark 2: the pipeline's sending rate against a bare aiohttp loop, side by side."""
    concurrency = 64
    table = Table(
        f"2. Client capacity: {rows:,} rows over {locations} locations, "
        f"unlimited zero-latency sandbox, concurrency {concurrency}"
    )
    work = options.workdir / "capacity"
    work.mkdir()
    input_path = write_frame(even_frame(locations, rows // locations), work / "input.parquet")
    with_workers = pipeline_has_option("--workers")
    variants = ["bare", "pipeline"] + (["pipeline-w2"] if with_workers else [])
    samples: dict[str, list[Sample]] = {v: [] for v in [*variants, "bare-x2"]}
    created_ok = True
    problems: list[str] = []
    failures: list[str] = []
    deadline = 180.0
    config = {"daily_limit": 0}
    with (
        SandboxProcess(work, rate="0/1s", latency_ms=0, config=config) as sandbox,
        CpuSampler() as sampler,
    ):
        sampler.watch("sandbox", sandbox.pid)
        url = sandbox.base_url

        def run_variant(variant: str, name: str, rep: int) -> tuple[Sample, list[Finished]]:
            nonlocal created_ok
            if variant == "bare":
                argv = bare_argv(url, rows, locations, f"b{rep}-", concurrency)
                return _capacity_sample(
                    sandbox, sampler, [(name, argv)], child_env(None), work, deadline
                )
            output = work / f"{name}.parquet"
            extra = ["--workers", "2"] if variant == "pipeline-w2" else []
            # No --rate: the sandbox announces its limit switched off (10^9 per 10 s).
            argv = pipeline_argv(
                input_path, output, url, "--concurrency", str(concurrency), *extra,
            )  # fmt: skip
            sample, runs = _capacity_sample(
                sandbox, sampler, [(name, argv)], child_env(TOKEN), work, deadline, tree=True
            )
            created = result_statuses(output).get("created", 0) if output.exists() else 0
            if created != rows:
                created_ok = False
                problems.append(f"{name}: {created:,} of {rows:,} rows created")
            return sample, runs

        for rep in range(options.repeats):
            for variant in variants:
                name = f"{variant}-{rep}"
                for attempt in range(1 + DISTURBED_RETRIES):
                    name = f"{variant}-{rep}" + (f"-again{attempt}" if attempt else "")
                    log(f"capacity: {name}")
                    try:
                        sample, runs = run_variant(variant, name, rep)
                    except RuntimeError as exc:  # one broken run: note it, keep the others
                        problems.append(f"{name} failed: {exc}")
                        failures.append(name)
                        break
                    if not sample.ok:  # left out of the medians
                        problems.append(f"{name}: exit {runs[0].code}: {runs[0].stderr_tail(2)}")
                        failures.append(name)
                        break
                    samples[variant].append(sample)
                    if not sample.disturbed:
                        break
            for attempt in range(1 + DISTURBED_RETRIES):
                tag = f"{rep}" + (f"-again{attempt}" if attempt else "")
                log(f"capacity: two bare clients at once, {tag}")
                pair = [
                    (
                        f"bare-x2-{tag}-{k}",
                        bare_argv(url, rows, locations, f"p{tag}-{k}-", concurrency),
                    )
                    for k in (1, 2)
                ]
                try:
                    sample, runs = _capacity_sample(
                        sandbox, sampler, pair, child_env(None), work, deadline
                    )
                except RuntimeError as exc:
                    problems.append(f"bare-x2-{tag} failed: {exc}")
                    failures.append(f"bare-x2-{tag}")
                    break
                if not sample.ok:
                    problems.append(f"bare-x2-{tag}: exit codes {[r.code for r in runs]}")
                    failures.append(f"bare-x2-{tag}")
                    break
                samples["bare-x2"].append(sample)
                if not sample.disturbed:
                    break

    def counted(variant: str) -> list[Sample]:
        """The undisturbed runs, or every run if all were disturbed."""
        clean = [s for s in samples[variant] if not s.disturbed]
        return clean or samples[variant]

    def med(variant: str, attr: str) -> float | None:
        values = [getattr(s, attr) for s in counted(variant) if getattr(s, attr) is not None]
        return median(values) if values else None

    def runs_note(variant: str) -> str:
        return ", ".join(
            f"{s.per_s:,.0f} (others {fmt_share(s.others_cpu)}"
            f"{', disturbed' if s.disturbed else ''})"
            for s in samples[variant]
        )

    bare = med("bare", "per_s") or math.nan
    pipe = med("pipeline", "per_s") or math.nan
    table.add("bare aiohttp loop", fmt_rate(bare), f"median of {len(counted('bare'))}")
    table.add(
        "pipeline, rows/s while sending", fmt_rate(pipe), f"median of {len(counted('pipeline'))}"
    )
    ratio = pipe / bare
    table.add(
        "pipeline / bare", f"{ratio:.3f}", f">= {CAPACITY_RATIO_TARGET:g}",
        ratio >= CAPACITY_RATIO_TARGET,
    )  # fmt: skip
    table.add("pipeline wall time (start to exit)", f"{med('pipeline', 'wall_s') or 0:.2f} s")
    if with_workers:
        pipe2 = med("pipeline-w2", "per_s") or math.nan
        table.add("pipeline --workers 2, rows/s while sending", fmt_rate(pipe2))
        table.add(
            "pipeline --workers 2 / bare", f"{pipe2 / bare:.3f}", f">= {CAPACITY_RATIO_TARGET:g}",
            pipe2 / bare >= CAPACITY_RATIO_TARGET,
        )  # fmt: skip
        table.add("pipeline --workers 2 wall time", f"{med('pipeline-w2', 'wall_s') or 0:.2f} s")
    else:
        table.notes.append("`pipeline run --help` lists no --workers option: not measured")
    table.add(
        "rows created in every pipeline run", "yes" if created_ok else "no", "all", created_ok
    )
    table.add("runs that failed", str(len(failures)), "0", not failures)
    table.error = bool(failures)
    disturbed = sum(1 for v in samples.values() for s in v if s.disturbed)
    table.add("runs disturbed by other work, re-run", str(disturbed))
    two = med("bare-x2", "per_s") or math.nan
    table.add(
        "sandbox ceiling: two bare clients at once", fmt_rate(two), f"x{two / bare:.2f} of one"
    )
    table.add(
        "bottleneck of a single bare client",
        bottleneck(
            bare,
            two,
            med("bare", "sandbox_cpu"),
            med("bare", "client_cpu"),
            med("bare", "machine_cpu"),
            os.cpu_count() or 1,
        ),
    )
    for variant in [*variants, "bare-x2"]:
        table.add(
            f"{variant}: CPU while sending",
            f"sandbox {fmt_share(med(variant, 'sandbox_cpu'))}, "
            f"client{'s' if variant == 'bare-x2' else ''} {fmt_share(med(variant, 'client_cpu'))}, "
            f"machine {fmt_share(med(variant, 'machine_cpu'))} of {(os.cpu_count() or 1) * 100}%"
            f" (others {fmt_share(med(variant, 'others_cpu'))})",
        )
        table.notes.append(f"{variant}: requests/s by run: {runs_note(variant)}")
    table.notes.append(
        "CPU: share of one core (100% = one core busy) between the first and the last request "
        "the sandbox received, from /proc samples every 50 ms; machine: all cores together; "
        "others: machine - sandbox - client(s), i.e. the kernel's network work, this harness "
        "(~5%) and any other program: a run with high 'others' was disturbed"
    )
    table.notes.extend(problems)
    return table


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


# -- main ----------------------------------------------------------------------------------------

BENCHMARKS = ("limit", "capacity", "scale", "wide")


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
    if args_in[:1] == ["_bare-client"]:
        return bare_client_main(args_in[1:])
    if args_in[:1] == ["_rusage"]:
        return rusage_main(args_in[1:])
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.benchmark",
        description="Benchmark the pipeline against a local sandbox (loopback only).",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="the default: 20 locations, 10k rows, 1M rows"
    )
    size.add_argument(
        "--large", action="store_true", help="also 200 locations x 300 rows and 10M rows"
    )
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, help="run only these (repeatable)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=256, help="pipeline --concurrency in benchmark 1"
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
    if min(args.repeats, args.concurrency) < 1 or args.capacity_rows < 200:
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
        only=frozenset(args.only or BENCHMARKS),
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
        f"$ python -m pipeline.benchmark {' '.join(args_in)}".rstrip(),
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

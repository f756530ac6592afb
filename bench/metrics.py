"""What the sandbox's request log says about a run (pure): spans, windows, send rates,
CPU shares, the bottleneck; and the results tables the harness prints."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CREATE_PATH = "/conversations/"

# "The second client added this much throughput" above which one client was the limit.
CLIENT_BOUND_GAIN = 1.3


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


def first_window_waits(requests: Iterable[Request], burst: int, latency_s: float) -> list[int]:
    """Per location, how many times its first ``burst`` requests paused for an answer.

    A pause is a gap between two arrivals of at least three quarters of the round trip: the
    location's first request going alone is one; a first burst sent in halves would be
    two. What learning the budget costs, in round trips, whatever the concurrency spreads.
    """
    return [
        sum(1 for a, b in itertools.pairwise(times[:burst]) if b - a >= 0.75 * latency_s)
        for times in times_by_location(requests).values()
    ]


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


def fmt_us(micros: float | None) -> str:
    return "n/a" if micros is None or math.isnan(micros) else f"{micros:,.0f} µs"


def fmt_share(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.0f}%"

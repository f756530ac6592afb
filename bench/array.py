"""Benchmark 8: one task of an array job (issue 18), as it runs in production: input and
output in object storage (moto's S3 server on loopback), ``--shard 0/N`` owning L
locations, HighLevel's limit (100 requests per 10 s per location), 80 ms latency varying by
+-50% (a real network's), default settings. What one task sustains against the limit, its
memory and CPU, and the checkpoint traffic its journal costs the object store."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import Options, failed_run, log
from bench.inputs import even_frame, location_id, result_statuses, write_frame
from bench.latency import parse_summary
from bench.metrics import (
    Table,
    fmt_mib,
    fmt_rate,
    fmt_share,
    is_create,
    limit_metrics,
    save_requests,
    send_rate,
    status_counts,
)
from bench.network import UNIFORM_80
from bench.processes import (
    LOOPBACK,
    MACHINE,
    TOKEN,
    Child,
    CpuSampler,
    Finished,
    SandboxProcess,
    child_env,
    require_loopback,
    stop_process,
)

RATE_MAX, INTERVAL_S = 100, 10.0  # HighLevel's limit per location
NETWORK = UNIFORM_80  # the sandbox's latency
SHARDS = 4  # the array's tasks; the measured one is task 0
BUCKET = "bench-array"
SHARE_429_TARGET = 0.01
DEFAULT_INTERVAL_S = 5.0  # the pipeline's --checkpoint-interval
# Checkpoint requests a task pays once, whatever its length (pipeline.state.checkpoints): the
# epoch claim (list + conditional put), restore (list), the last copy when the task stops
# (list + put), the fence check after it (list) and clear (a list of each of its two
# subfolders + delete). Every periodic copy with new lines costs a list and a put.
FIXED_STORE_REQUESTS = 9
# One request in moto's (werkzeug's) access log.
_COLOUR = re.compile(r"\x1b\[[\d;]*m")
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


@dataclass(frozen=True, slots=True)
class Case:
    """One task owning ``locations`` locations of ``rows_per_location`` rows each, with
    each of ``intervals`` as ``--checkpoint-interval`` (None: the default)."""

    locations: int
    rows_per_location: int
    intervals: tuple[float | None, ...] = (None,)


CASES = (
    Case(100, 300, (None, 1.0)),
    # 2 windows; its limit (6,000/s) is above what a 2-core machine carries (~2,000/s with
    # the sandbox on it), so this one measures the machine, the one above the limit.
    Case(600, 200),
)


def total_locations(owned: int, shards: int) -> int:
    """The smallest count of input locations (``loc0001``...) of which shard 0 owns
    exactly ``owned``, by the pipeline's own hash."""
    from pipeline.inputs.shards import owner

    count = total = 0
    while count < owned:
        count += owner(location_id(total), shards) == 0
        total += 1
    return total


# -- moto's S3 server --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class MotoProcess:
    """``moto_server`` (from this venv) on loopback with one bucket; the environment a
    pipeline needs to use it; and the harness's own uploads and downloads (boto3)."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.log_path = workdir / "moto.stderr"

    def __enter__(self) -> MotoProcess:
        port = _free_port()
        moto = Path(sys.executable).with_name("moto_server")
        with self.log_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(moto), "-H", LOOPBACK, "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=child_env(None),
                cwd=self._workdir,
            )
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": require_loopback(f"http://{LOOPBACK}:{port}"),
        }
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection((LOOPBACK, port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError("moto_server did not start") from None
                    time.sleep(0.1)
            self.client().create_bucket(Bucket=BUCKET)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        stop_process(proc, 10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def requests_since(self, offset: int) -> list[StoreRequest]:
        """The requests moto logged after ``offset`` (once its log stops growing: it
        writes a request's line just after the answer)."""
        size = -1
        for _ in range(20):
            if self.log_offset() == size:
                break
            size = self.log_offset()
            time.sleep(0.1)
        with self.log_path.open("rb") as handle:
            handle.seek(offset)
            return parse_store_log(handle.read().decode(errors="replace"))

    def client(self) -> Any:
        boto3: Any = importlib.import_module("boto3")  # untyped; the tests' client too
        return boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_REGION"],
        )


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One request as moto's access log shows it."""

    method: str
    target: str  # path and query
    status: int

    @property
    def checkpoint(self) -> bool:
        """A request of the checkpoint folder (its listings name it; a delete of several
        keys, ``POST /BUCKET?delete``, is only ever the checkpoint's clear here)."""
        return ".checkpoint" in self.target or self.target.endswith("?delete")

    @property
    def kind(self) -> str:
        if self.method == "GET" and "list-type=" in self.target:
            return "list"
        if self.method == "POST" and self.target.endswith("?delete"):
            return "delete"
        return self.method.lower()


def parse_store_log(text: str) -> list[StoreRequest]:
    """The requests in moto's access log (werkzeug colours some lines even in a file)."""
    plain = _COLOUR.sub("", text)
    return [
        StoreRequest(m["method"], m["target"], int(m["status"])) for m in _ACCESS.finditer(plain)
    ]


def kinds(requests: Sequence[StoreRequest]) -> str:
    """``10 list, 7 put, 1 delete``."""
    counted = Counter(r.kind for r in requests)
    return ", ".join(f"{n} {kind}" for kind, n in counted.most_common())


# -- one run -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The task's ``checkpoints`` log line."""

    segments: int
    bytes: int
    requests: int


def parse_checkpoints(stderr: str) -> Checkpoint | None:
    """The last JSON log line whose event is ``checkpoints``; None without one."""
    found = None
    for line in stderr.splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == "checkpoints":
                found = Checkpoint(
                    int(record["segments"]), int(record["bytes"]), int(record["requests"])
                )
    return found


def per_hour(count: float, seconds: float) -> str:
    return f"{count / seconds * 3600:,.0f}" if seconds > 0 else "n/a"


def per_thousand(count: float, rows: int) -> str:
    return f"{count / rows * 1000:,.1f}" if rows else "n/a"


def _run_task(
    options: Options,
    moto: MotoProcess,
    case: Case,
    interval: float | None,
    source: str,
    table: Table,
) -> None:
    """One task against a fresh sandbox; its figures go into ``table``."""
    label = "default" if interval is None else f"--checkpoint-interval {interval:g}"
    name = f"array-{case.locations}-{'default' if interval is None else f'{interval:g}s'}"
    work = options.workdir / name
    work.mkdir()
    output = f"s3://{BUCKET}/{name}/results.parquet"
    part_key = f"{name}/results.part-{0:05d}-of-{SHARDS:05d}.parquet"
    rows = case.locations * case.rows_per_location
    ideal = (math.ceil(case.rows_per_location / RATE_MAX) - 1) * INTERVAL_S
    deadline = max(240.0, ideal * 8 + rows / 100)
    rate = f"{RATE_MAX}/{INTERVAL_S:g}s"
    env = {**child_env(TOKEN), **moto.env}
    extra = [] if interval is None else ["--checkpoint-interval", f"{interval:g}"]
    with (
        SandboxProcess.playing(work, NETWORK, rate=rate, config={}) as sandbox,
        CpuSampler() as sampler,
    ):
        log(f"array: task 0/{SHARDS}, {rows:,} rows over {case.locations} locations, {label}")
        sampler.watch("sandbox", sandbox.pid)
        sampler.watch("moto", moto.pid)
        argv = [
            *(sys.executable, "-m", "pipeline", "run", source, "-o", output),
            *("--base-url", require_loopback(sandbox.base_url)),
            *("--shard", f"0/{SHARDS}", "--state-dir", str(work / "state"), *extra),
            *("--log-format", "json"),
        ]
        # The small launcher measures the pipeline's own peak RSS (see run_child).
        report = work / "pipeline.rusage.json"
        launcher = [sys.executable, "-m", "bench.processes", str(report), "--"]
        store_from = moto.log_offset()
        child = Child([*launcher, *argv], env, work, "pipeline", deadline)
        try:
            sampler.watch("pipeline", child.pid, tree=True)
            run = child.wait()
        finally:
            child.kill()
        with contextlib.suppress(OSError, ValueError, KeyError):
            measured = json.loads(report.read_text())
            run = Finished(
                argv=argv,
                code=run.code,
                ended=run.ended,
                wall_s=run.wall_s,
                max_rss_bytes=int(measured["max_rss_bytes"]),
                cpu_s=float(measured["cpu_s"]),
                timed_out=run.timed_out,
                stdout_path=run.stdout_path,
                stderr_path=run.stderr_path,
            )
        sampler.finish("pipeline", run.ended, run.cpu_s)
        requests = sandbox.requests()
    store = moto.requests_since(store_from)
    save_requests(requests, work / "requests.jsonl")
    part = work / "results.parquet"
    if not run.timed_out and run.code in (0, 1):
        with contextlib.suppress(Exception):  # a missing part is reported below
            moto.client().download_file(BUCKET, part_key, str(part))
    if run.timed_out or run.code not in (0, 1) or not part.exists():
        failed_run(table, f"{label}: pipeline", run)
        return
    if sum(1 for r in requests if is_create(r)) < 2:
        failed_run(table, f"{label}: pipeline", run)
        table.notes.append(f"{label}: the sandbox received fewer than two create requests")
        return

    statuses = result_statuses(part)
    created = statuses.get("created", 0)
    sent = send_rate(requests)
    metrics = limit_metrics(requests, INTERVAL_S, RATE_MAX)
    located = metrics.requests
    limit_per_s = case.locations * RATE_MAX / INTERVAL_S
    sending = sent.seconds
    table.add(f"{label}: rows created", f"{created:,} / {rows:,}", "all", created == rows)
    table.add(f"{label}: pipeline exit code", str(run.code), "0", run.code == 0)
    table.add(
        f"{label}: locations sent to",
        f"{metrics.locations} (input: {total_locations(case.locations, SHARDS):,})",
        str(case.locations),
        metrics.locations == case.locations,
    )
    table.add(f"{label}: sending, first to last create", f"{sending:.2f} s", f"ideal {ideal:g} s")
    table.add(
        f"{label}: rows/s sustained (created / sending)",
        f"{fmt_rate(created / sending)} = {created / sending / limit_per_s:.2f} x limit",
        f"limit {fmt_rate(limit_per_s)}",
    )
    table.add(
        f"{label}: requests/s sustained (API requests / sending)",
        f"{fmt_rate(located / sending)} = {located / sending / limit_per_s:.2f} x limit",
    )
    whole = sending + INTERVAL_S
    table.add(
        f"{label}: share of the limit, last window counted whole",
        f"{created / whole / limit_per_s:.2f}",
        "ideal 1.00",
    )
    table.add(
        f"{label}: 429 answers",
        f"{metrics.too_many} of {located:,}",
        f"<= {SHARE_429_TARGET * 100:g}%",
        metrics.share_429 <= SHARE_429_TARGET,
    )
    table.add(
        f"{label}: most requests of one location in any {INTERVAL_S:g} s",
        str(metrics.max_in_window),
        f"<= {RATE_MAX}",
        metrics.max_in_window <= RATE_MAX,
    )
    table.add(f"{label}: pipeline peak RSS", fmt_mib(run.max_rss_bytes))
    cpu = {
        who: sampler.share(who, sent.first_t, sent.last_t)
        for who in ("pipeline", "sandbox", "moto", MACHINE)
    }
    known = [v for k, v in cpu.items() if k != MACHINE]
    machine = cpu[MACHINE]
    others = (
        None
        if machine is None or any(v is None for v in known)
        else machine - sum(v for v in known if v is not None)
    )
    table.add(
        f"{label}: CPU while sending (100% = one core of {os.cpu_count()})",
        ", ".join(f"{who} {fmt_share(share)}" for who, share in cpu.items())
        + f", others {fmt_share(others)}",
    )
    summary = parse_summary(run.stdout())
    table.add(
        f"{label}: pipeline's summary",
        "n/a"
        if summary is None
        else f"at most {summary.peak_in_flight:,} in flight, {summary.latency_text}",
        f"sandbox's mean {NETWORK.mean_ms:g} ms",
    )
    table.add(f"{label}: pipeline wall time", f"{run.wall_s:.2f} s")
    cp = parse_checkpoints(run.stderr_path.read_text(errors="replace"))
    if cp is None:
        table.add(f"{label}: checkpoints log line", "missing", "present", False)
        table.error = True
    else:
        table.add(
            f"{label}: checkpoint segments / bytes / store requests, the task's count",
            f"{cp.segments} / {cp.bytes:,} / {cp.requests}",
        )
    saved = [r for r in store if r.checkpoint]
    table.add(
        f"{label}: checkpoint requests S3 received (moto's log)",
        f"{len(saved)}: {kinds(saved)}" if saved else "none",
    )
    if cp is not None:
        table.add(
            f"{label}: checkpoint per hour of sending",
            f"{per_hour(cp.segments, sending)} segments, "
            f"{fmt_mib(cp.bytes / sending * 3600)}, {per_hour(len(saved), sending)} requests",
        )
        table.add(
            f"{label}: checkpoint per 1,000 rows",
            f"{per_thousand(cp.segments, created)} segments, "
            f"{per_thousand(cp.bytes / 1024, created)} KiB, "
            f"{per_thousand(len(saved), created)} requests",
        )
    every = DEFAULT_INTERVAL_S if interval is None else interval
    table.add(
        f"{label}: checkpoint requests per hour of sending, less {FIXED_STORE_REQUESTS} paid once",
        per_hour(max(0, len(saved) - FIXED_STORE_REQUESTS), sending),
        f"<= ~{2 * 3600 / every:,.0f} (2 per {every:g} s of new rows)",
    )
    other = [r for r in store if not r.checkpoint]
    table.add(
        f"{label}: other S3 requests (input, results part)",
        f"{len(other)}: {kinds(other)}" if other else "none",
    )
    table.notes.append(
        f"{label}: answers by status {status_counts(requests)}, results by status {statuses}, "
        f"pipeline CPU {run.cpu_s:.1f} s over its wall time "
        f"({run.cpu_s / run.wall_s * 100:.0f}% of one core)"
    )


def bench_array(options: Options, case: Case) -> Table:
    """Benchmark 8: one task of an array job, each checkpoint interval of ``case``."""
    total = total_locations(case.locations, SHARDS)
    rows = total * case.rows_per_location
    table = Table(
        f"8. One task of an array job: --shard 0/{SHARDS} owning {case.locations} of "
        f"{total:,} locations x {case.rows_per_location} rows, input and output on S3 (moto), "
        f"sandbox {RATE_MAX}/{INTERVAL_S:g}s per location, {NETWORK.label}"
    )
    work = options.workdir / f"array-{case.locations}"
    work.mkdir()
    log(f"array: {rows:,} input rows over {total:,} locations, task 0 owns {case.locations}")
    local = write_frame(even_frame(total, case.rows_per_location), work / "input.parquet")
    with MotoProcess(work) as moto:
        key = f"input-{case.locations}/input.parquet"
        moto.client().upload_file(str(local), BUCKET, key)
        source = f"s3://{BUCKET}/{key}"
        for interval in case.intervals:
            _run_task(options, moto, case, interval, source, table)
    table.notes.append(
        f"each task against a fresh sandbox, one moto S3 server for the case; pipeline run "
        f"INPUT -o s3://... --shard 0/{SHARDS} (no --concurrency, no --rate: the defaults); "
        f"the input holds every task's rows ({rows:,}), the task sends its own"
    )
    table.notes.append(
        f"sending: the sandbox's first to last create; rows/s and requests/s over it. With "
        f"{math.ceil(case.rows_per_location / RATE_MAX)} windows per location the ideal "
        f"schedule sends more than the long-run limit over that span (its last window is "
        f"not waited out); 'last window counted whole' divides by sending + {INTERVAL_S:g} s, "
        "which is exactly 1.00 for the ideal schedule"
    )
    table.notes.append(
        "CPU: others = machine - pipeline - sandbox - moto: the kernel's network work, this "
        "harness and any other program on the machine (it is shared: high 'others' means a "
        "disturbed run); the pipeline's summary: its own count of requests in flight and "
        "their mean time, against the sandbox's latency"
    )
    table.notes.append(
        "checkpoint segments and bytes from the task's 'checkpoints' log line; its requests "
        "as S3 received them (moto's access log: listings of the checkpoint folder, puts of "
        "the epoch and the segments, the final delete), and the task's own count beside; a "
        "copy with new lines costs 2 requests (fence listing + put), a copy with nothing new "
        f"none (between a location's windows), and {FIXED_STORE_REQUESTS} are paid once per "
        "task (claim, restore, the last copy and fence check, clear); other S3 requests: the "
        "output's existence check, the input's reads, the part's write and the summary's "
        "reads of it"
    )
    return table

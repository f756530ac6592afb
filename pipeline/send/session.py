"""One sending session in one process: the client, the sender, the journal, the signals.

Used by a plain run (in the main process) and by each ``--workers`` process alike, so both
behave the same: SIGINT/SIGTERM stop the session gracefully, a second one leaves at once
with the journal intact, and every row handed in is journalled exactly once. A
``StopSwitch`` stops it the same way from another thread, with no signal at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import signal
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import polars as pl
import structlog

from pipeline.auth.signing import signer_for
from pipeline.auth.tokens import Tokens
from pipeline.core.outcomes import Code
from pipeline.highlevel.client import ConversationsClient
from pipeline.send.inflight import (
    DEFAULT_CEILING,
    DEFAULT_FLOOR,
    DEFAULT_INITIAL,
    Gauge,
    InFlightLimit,
    raise_fd_limit,
)
from pipeline.send.latencies import Latencies
from pipeline.send.lookups import LookupSchedule
from pipeline.send.peers import Peers
from pipeline.send.retrying import RetryPolicy
from pipeline.send.rows import LocationBatch
from pipeline.send.sender import Sender
from pipeline.send.watchdog import Watchdog, bound_for
from pipeline.state.journal import JournalWriter

if TYPE_CHECKING:  # the invocation: the engine reads it, the app builds it
    from pipeline.app.job import Job

log = structlog.get_logger("pipeline.send.session")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SessionResult:
    requests: int
    stop_code: Code | None  # why the session stopped early, if it did
    signal: int | None  # the signal that stopped it, if one did
    stop_detail: str | None = None  # the reason in a line, when it stopped itself
    peak_in_flight: int = 0
    latencies: Latencies = field(default_factory=Latencies)  # every request's time
    throttled: int = 0  # 429 answers
    daily_remaining: dict[str, int] = field(default_factory=dict)  # by location, last seen
    token_refreshes: int = 0  # OAuth
    tokens_minted: int = 0  # OAuth


class StopSwitch:
    """Stops the sending from any thread as Ctrl-C does, with no signal to this process.

    What the signal handlers do for the command line (``send_session``'s own, and the
    parent's that forwards SIGINT/SIGTERM to each ``--workers`` process), this does for
    whoever owns no signal: ``run`` stops through it when a newer attempt takes the output's
    checkpoint over, where a signal to this process would kill the host of a library call
    (a notebook's kernel). In this process, the session's ``Sender.stop``; with ``workers``
    above 1, each worker process gets the SIGTERM a Ctrl-C would have forwarded to it. A
    stop asked before the session sends applies as it starts; after it ended, nothing."""

    def __init__(self, workers: int = 1) -> None:
        self._workers = workers
        self._lock = threading.Lock()
        self._running: tuple[asyncio.AbstractEventLoop, Sender] | None = None
        self._asked: tuple[Code, str | None] | None = None

    def stop(self, code: Code = Code.INTERRUPTED, detail: str | None = None) -> None:
        with self._lock:
            self._asked = self._asked or (code, detail)
            if self._running is not None:
                loop, sender = self._running
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(sender.stop, *self._asked)
        if self._workers > 1:  # ``workers`` names them so; each stops as on Ctrl-C
            for child in multiprocessing.active_children():
                if child.name.startswith("pipeline-worker-") and child.pid is not None:
                    os.kill(child.pid, signal.SIGTERM)

    @contextlib.contextmanager
    def attached(self, sender: Sender) -> Iterator[None]:
        """The ``with`` block runs ``sender`` on this thread's loop; a stop reaches it then.
        (A stop asked already is called soon: after ``Sender.run`` has started its
        dispatchers, whose first step it then cancels.)"""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._running = (loop, sender)
            if self._asked is not None:
                loop.call_soon(sender.stop, *self._asked)
        try:
            yield
        finally:
            with self._lock:
                self._running = None


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run the sending loop on uvloop where it is installed (it is on Linux and macOS).

    uvloop's event loop costs less CPU per request than asyncio's own, and at thousands of
    requests per second the client's CPU is what bounds a run whose rate limits are
    generous (BENCHMARKS.md). Behaviour is the same on either loop.
    """
    with _sending_gc():
        try:
            import uvloop
        except ImportError:  # pragma: no cover - Windows
            return asyncio.run(main)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)


# While sending, the youngest generation is collected every this many new objects (Python's
# default is 700; see ``_sending_gc``).
SENDING_GC_THRESHOLD = 10_000


@contextlib.contextmanager
def _sending_gc() -> Iterator[None]:
    """The cycle collector, tuned for the sending loop; as it was again afterwards.

    Nearly everything a request allocates is freed by reference counting, yet Python's
    defaults collect the youngest generation every 700 new objects and, every few hundred
    requests, walk every object in the process: the ~75,000 that importing polars, aiohttp
    and the rest leave behind, and every row's task waiting for a slot. In the capacity
    benchmark that was a sixth of the sending process's CPU (54 µs a request, measured with
    ``gc.callbacks``; 4.5 µs so). So the objects alive before sending are moved out of the
    collector's sight (``gc.freeze``: they live for the whole run anyway), and the youngest
    generation waits for ``SENDING_GC_THRESHOLD`` new objects. Cycles are still collected,
    a little later."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(SENDING_GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def location_batches(sendable: pl.DataFrame) -> Iterator[LocationBatch]:
    """The rows to send grouped by location, locations in order of first appearance; rows
    whose ``lookup`` column is true (their conversation exists, its id is still to be found)
    are only looked up.

    A location's rows are named by their positions in ``sendable`` (4 bytes a row), not
    copied out of it."""
    lookup = pl.col("lookup") if "lookup" in sendable.columns else pl.lit(False)
    groups = (
        sendable.select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("at"),
            "location_id",
            lookup.fill_null(False).alias("lookup"),
        )
        .group_by("location_id", maintain_order=True)
        .agg(
            pl.col("at").filter(~pl.col("lookup")).alias("create"),
            pl.col("at").filter(pl.col("lookup")).alias("look"),
        )
    )
    for location_id, create, look in zip(
        groups["location_id"], groups["create"], groups["look"], strict=True
    ):
        yield LocationBatch(str(location_id), _pairs(sendable, create), _pairs(sendable, look))


def _pairs(
    sendable: pl.DataFrame, positions: pl.Series, chunk: int = 256
) -> Iterator[tuple[int, str]]:
    """(row_index, contact_id) pairs, turned into Python objects a chunk at a time.

    Every location holds one chunk at once, so it is small: 1,000 locations of 4,096-row
    chunks held ~400 MB of Python objects; of 256 rows, ~25 MB."""
    for offset in range(0, len(positions), chunk):
        piece = sendable[positions.slice(offset, chunk)]
        yield from zip(piece["row_index"].to_list(), piece["contact_id"].to_list(), strict=True)


async def send_session(
    job: Job,
    tokens: Tokens,
    sendable: pl.DataFrame,
    journal: JournalWriter,
    *,
    parent_pid: int | None = None,
    gauge: Gauge | None = None,
    switch: StopSwitch | None = None,
    leaving: str | None = None,
) -> SessionResult:
    """Send ``sendable``; a worker passes ``parent_pid`` so that it stops if orphaned;
    ``gauge`` shows the requests in flight to the progress display; ``switch`` stops the
    session from another thread; ``leaving`` is the line a second signal prints as it
    leaves at once (the journal kept, and the command that continues)."""
    loop = asyncio.get_running_loop()
    received: list[int] = []
    in_flight = in_flight_limit(job.config.concurrency)
    connections = in_flight if isinstance(in_flight, int) else in_flight.ceiling
    signer = signer_for(
        tokens,
        base_url=job.config.base_url,
        api_version=job.config.api_version,
        timeout=job.config.timeout,
    )
    locations = sendable["location_id"].unique().to_list()
    peers = Peers(job.config.base_url, locations)
    async with (
        ConversationsClient(
            base_url=job.config.base_url,
            signer=signer,
            api_version=job.config.api_version,
            timeout=job.config.timeout,
            concurrency=connections,  # the pool holds as many connections as may be in flight
            http_stack=job.config.http_stack,
        ) as client,
        _entered(peers),
    ):
        sender = Sender(
            client,
            rate=job.rate,
            concurrency=in_flight,
            policy=RetryPolicy.of(job.config),
            lookup=LookupSchedule(wait_s=job.config.lookup_wait),
            watchdog=Watchdog(bound_for(job.config.timeout)),
            sink=journal.add,
            grace_s=min(job.config.timeout, 10.0),
            daily_reserve=job.config.daily_reserve,
            record_unstarted=parent_pid is not None,  # a worker; see Sender
            gauge=gauge,
            peers=peers,
        )

        def on_signal(signum: int) -> None:
            if received:  # a second signal: leave now; the journal holds what is done
                journal.flush()
                if leaving is not None:  # written at once: os._exit flushes no buffer
                    os.write(2, f"{chr(10) if os.isatty(2) else ''}{leaving}\n".encode())
                os._exit(128 + signum)
            received.append(signum)
            log.warning(
                "signal received: finishing requests in flight", signal=signal.Signals(signum).name
            )
            sender.stop(Code.INTERRUPTED)

        signals = (signal.SIGINT, signal.SIGTERM) if job.handle_signals else ()
        for signum in signals:
            loop.add_signal_handler(signum, on_signal, signum)
        helpers = [asyncio.create_task(journal.flush_periodically())]
        if parent_pid is not None:
            helpers.append(asyncio.create_task(_stop_when_orphaned(parent_pid, sender)))
        try:
            with (switch or StopSwitch()).attached(sender):
                await sender.run(location_batches(sendable))
        finally:
            for helper in helpers:
                helper.cancel()
            for signum in signals:
                loop.remove_signal_handler(signum)
    detail = sender.stop_detail
    if detail is not None and sender.stop_code is Code.UNREACHABLE:
        detail = f"{job.config.base_url}: {detail}"
    return SessionResult(
        sender.requests,
        sender.stop_code,
        received[0] if received else None,
        detail,
        sender.peak_in_flight,
        sender.latencies,
        sender.throttled,
        sender.daily_remaining,
        getattr(signer, "refreshes", 0),
        getattr(signer, "mints", 0),
    )


@contextlib.asynccontextmanager
async def _entered(peers: Peers) -> AsyncIterator[None]:
    """The run's lease for as long as it sends (``peers``)."""
    with peers:
        yield


def in_flight_limit(concurrency: int | Literal["auto"]) -> int | InFlightLimit:
    """``--concurrency``: a fixed number, or (``auto``) a controller sized to the latency,
    capped by what the open-file limit allows once raised toward its hard limit."""
    wanted = DEFAULT_CEILING if concurrency == "auto" else concurrency
    allowed = raise_fd_limit(wanted)
    if allowed < wanted:
        log.warning(
            "the open-file limit caps the requests in flight", wanted=wanted, allowed=allowed
        )
    if concurrency != "auto":
        return allowed
    return InFlightLimit(
        initial=min(DEFAULT_INITIAL, allowed), floor=min(DEFAULT_FLOOR, allowed), ceiling=allowed
    )


async def _stop_when_orphaned(parent_pid: int, sender: Sender) -> None:
    """A worker whose parent died (``kill -9``) stops, so a ``--resume`` never races it."""
    while os.getppid() == parent_pid:  # noqa: ASYNC110 - polling is the only way to notice
        await asyncio.sleep(0.5)
    log.error("parent process is gone; stopping")
    sender.stop(Code.INTERRUPTED)

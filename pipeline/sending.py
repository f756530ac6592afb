"""Stage 3, send: every planned row through the API, under the limits, with retries.

Shape of the machinery: one dispatcher per location walks that location's rows in input
order; for each it takes a permit from the location's ``WindowLimiter`` and then a slot from
the global concurrency semaphore, and starts the row's task. Taking the location permit
first means a location that is waiting on its own limit holds no global slot, so a slow or
throttled location never stalls the others. A row's task owns its retries: between attempts
it holds nothing, and each new attempt takes a permit and a slot again.

Each finished row is handed to ``sink`` once, as a ``RowOutcome``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from pipeline.backoff import Backoff
from pipeline.client import Answer
from pipeline.limiter import WindowLimiter
from pipeline.outcomes import RETRYABLE, Code, RowOutcome, Status
from pipeline.settings import Rate

log = structlog.get_logger("pipeline.sending")


class CreatesConversations(Protocol):
    async def create_conversation(self, location_id: str, contact_id: str) -> Answer: ...


@dataclass(frozen=True, slots=True)
class LocationBatch:
    """The rows of one location, in input order."""

    location_id: str
    row_indices: Sequence[int]
    contact_ids: Sequence[str]


@dataclass(slots=True)
class SendStats:
    requests: int = 0
    rows: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    status_counts: dict[str, int] = field(default_factory=dict)

    @property
    def elapsed_s(self) -> float:
        return max(0.0, self.finished_at - self.started_at)


class Sender:
    def __init__(
        self,
        client: CreatesConversations,
        *,
        rate: Rate,
        concurrency: int,
        max_attempts: int,
        max_total_backoff_s: float,
        sink: Callable[[RowOutcome], None],
        backoff: Backoff | None = None,
    ) -> None:
        self._client = client
        self._rate = rate
        self._slots = asyncio.Semaphore(concurrency)
        self._max_attempts = max_attempts
        self._max_total_backoff_s = max_total_backoff_s
        self._sink = sink
        self._backoff = backoff or Backoff()
        self._limiters: dict[str, WindowLimiter] = {}
        self.stats = SendStats()

    def limiter(self, location_id: str) -> WindowLimiter:
        limiter = self._limiters.get(location_id)
        if limiter is None:
            limiter = WindowLimiter(self._rate.max_requests, self._rate.interval_s)
            self._limiters[location_id] = limiter
        return limiter

    async def run(self, batches: Iterable[LocationBatch]) -> SendStats:
        self.stats.started_at = time.monotonic()
        try:
            async with asyncio.TaskGroup() as group:
                for batch in batches:
                    group.create_task(self._dispatch(batch))
        finally:
            self.stats.finished_at = time.monotonic()
        return self.stats

    async def _dispatch(self, batch: LocationBatch) -> None:
        limiter = self.limiter(batch.location_id)
        tasks: set[asyncio.Task[None]] = set()
        for row_index, contact_id in zip(batch.row_indices, batch.contact_ids, strict=True):
            await limiter.acquire()
            await self._slots.acquire()
            task = asyncio.create_task(
                self._send_row(batch.location_id, row_index, contact_id, limiter)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def _send_row(
        self, location_id: str, row_index: int, contact_id: str, limiter: WindowLimiter
    ) -> None:
        """Send one row until it succeeds or runs out of attempts.

        Entered holding a location permit and a global slot.
        """
        attempt = 0
        waited = 0.0
        answer: Answer | None = None
        try:
            while True:
                attempt += 1
                try:
                    answer = await self._client.create_conversation(location_id, contact_id)
                finally:
                    limiter.release()
                    self._slots.release()
                    self.stats.requests += 1
                if answer.code not in RETRYABLE or attempt >= self._max_attempts:
                    break
                delay = self._backoff.delay(attempt, answer)
                if waited + delay > self._max_total_backoff_s:
                    break
                if answer.code is Code.RATE_LIMITED:
                    limiter.block_for(delay)
                log.debug(
                    "retrying",
                    row_index=row_index,
                    location_id=location_id,
                    attempt=attempt,
                    error_code=answer.code,
                    delay_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                waited += delay
                await limiter.acquire()
                await self._slots.acquire()
        except Exception as exc:  # a bug must cost one row's result, never the run's
            log.exception("row failed unexpectedly", row_index=row_index, location_id=location_id)
            answer = Answer(
                Status.FAILED, Code.INTERNAL_ERROR, message=f"internal error: {type(exc).__name__}"
            )
        self._finish(row_index, answer, attempt)

    def _finish(self, row_index: int, answer: Answer, attempts: int) -> None:
        outcome = RowOutcome(
            row_index=row_index,
            status=answer.status,
            conversation_id=answer.conversation_id,
            error_code=answer.code,
            http_status=answer.http_status,
            error_message=answer.message,
            attempts=attempts,
        )
        self.stats.rows += 1
        self.stats.status_counts[answer.status] = self.stats.status_counts.get(answer.status, 0) + 1
        self._sink(outcome)

"""Every row's outcome, once: to the sink (the journal, the progress), and to the log when it
failed.

While the API is silent (``watchdog``), or once the run stopped because it was lost, rows
that failed with no answer are counted and told in one line at the end (``close``), not one
warning a row: a dead host would otherwise print as many lines as there are rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from pipeline.core.outcomes import Code, RowOutcome, Status
from pipeline.highlevel.answers import Answer
from pipeline.send.requests import NO_ANSWER
from pipeline.send.rows import Row
from pipeline.send.watchdog import Watchdog

log = structlog.get_logger("pipeline.send.recording")


class Recorder:
    def __init__(
        self,
        sink: Callable[[RowOutcome], None],
        watchdog: Watchdog,
        stopped: Callable[[], Code | None],
    ) -> None:
        """``sink``: where each row's outcome goes; ``stopped()``: why the run stopped."""
        self._sink = sink
        self._watchdog = watchdog
        self._stopped = stopped
        self.quiet_failures = 0  # rows failed with no answer while the API was silent

    def finish(self, row: Row, answer: Answer) -> None:
        """The row ends with ``answer``."""
        silent_failure = answer.http_status is None and answer.code in NO_ANSWER
        if not silent_failure:
            self._watchdog.progressed()
        if silent_failure and (self._watchdog.silent or self._stopped() is Code.UNREACHABLE):
            self.quiet_failures += 1  # one line for them all (``close``), not one each
        elif answer.status is Status.FAILED:
            log.warning(
                "row failed",
                row_index=row.row_index,
                location_id=row.location.location_id,
                error_code=answer.code,
                http_status=answer.http_status,
                message=answer.message,
                attempts=row.attempts,
                trace_id=answer.trace_id,
            )
        self._sink(
            RowOutcome(
                row_index=row.row_index,
                status=answer.status,
                conversation_id=answer.conversation_id,
                error_code=answer.code,
                http_status=answer.http_status,
                error_message=answer.message,
                attempts=row.attempts,
                trace_id=answer.trace_id,
                finished_at=datetime.now(UTC) if row.attempts or row.searches else None,
            )
        )

    def close(self) -> None:
        """The run's rows are done: the line for the rows that failed with no answer."""
        if self.quiet_failures:
            log.warning(
                "rows failed with no answer from the API",
                rows=self.quiet_failures,
                error_code=Code.NETWORK_ERROR,
            )

"""What to do with a row after an answer: look up the existing conversation, retry after a
delay, or settle.

A pure function of the answer, the attempts made and the time already waited (and whether
the run or the location has stopped), so every case is a unit test
(``tests/unit/send/test_retrying.py``); the sender only carries the decision out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.core.outcomes import RETRYABLE, SKIP_MESSAGES, Code, Status, quick_init
from pipeline.highlevel.answers import Answer
from pipeline.send import quota
from pipeline.send.backoff import Backoff

if TYPE_CHECKING:  # the options model; imported only for its type
    from pipeline.app.config import RunConfig


@quick_init
@dataclass(frozen=True, slots=True)
class Retry:
    """Send the row again after ``delay_s``; ``pause_location``: the whole location waits
    too (a 429 is about the location's window, not about this row)."""

    delay_s: float
    pause_location: bool


@quick_init
@dataclass(frozen=True, slots=True)
class Settle:
    """The row ends with ``answer``."""

    answer: Answer


@dataclass(frozen=True, slots=True)
class FindExisting:
    """ "Already exists": look up the conversation the contact has."""


Decision = Retry | Settle | FindExisting


def unsent(code: Code, last: Answer | None = None) -> Answer:
    """A row the run stops sending for ``code``: ``skipped`` (``skipped``), except a row whose
    request got no answer when the API was lost (``unreachable``): its failure stands
    (``failed`` / ``network_error`` or ``timeout``), since that request may have been made.
    A connection never made carried nothing: that row is skipped."""
    if (
        code is Code.UNREACHABLE
        and last is not None
        and last.status is Status.FAILED
        and not last.connect_failed
    ):
        return last
    return skipped(code, last)


def skipped(code: Code, last: Answer | None = None) -> Answer:
    """A row not (or no longer) sent for a reason of the run; keeps its last answer's HTTP
    status and trace id."""
    return Answer(
        Status.SKIPPED,
        code,
        http_status=last.http_status if last else None,
        message=SKIP_MESSAGES[code],
        trace_id=last.trace_id if last else None,
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` creates per row; ``max_retry_wait`` seconds of waiting between
    them, in all; the waits from ``backoff``."""

    max_attempts: int = 5
    max_retry_wait: float = 300.0
    backoff: Backoff = field(default_factory=Backoff)

    @classmethod
    def of(cls, config: RunConfig) -> RetryPolicy:
        """From ``--max-attempts``, ``--max-retry-wait`` and ``--backoff-base``."""
        return cls(config.max_attempts, config.max_retry_wait, Backoff(base=config.backoff_base))

    def after(
        self, answer: Answer, *, attempts: int, waited_s: float, stopped: Code | None = None
    ) -> Decision:
        """The decision after the ``attempts``-th create's ``answer``. ``stopped``: why the
        run or the row's location sends no more, if it does not."""
        if answer.status is Status.EXISTS:
            return FindExisting()
        if quota.refused(answer):  # no retry can succeed today
            return Settle(skipped(Code.DAILY_QUOTA_EXHAUSTED, answer))
        if answer.code not in RETRYABLE:
            return Settle(answer)
        # A 429 is about the location's window, not the row: another client may be spending
        # the budget for a while. It is retried while the row may still wait
        # (--max-retry-wait), not only --max-attempts times.
        if attempts >= self.max_attempts and answer.code is not Code.RATE_LIMITED:
            return Settle(answer)
        if stopped is not None:
            return Settle(unsent(stopped, answer))
        delay = self.backoff.delay(attempts, answer)
        if waited_s + delay > self.max_retry_wait:
            return Settle(answer)
        return Retry(delay, pause_location=answer.code is Code.RATE_LIMITED)

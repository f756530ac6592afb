"""A location's daily quota: the one place that decides when today's requests are spent.

HighLevel counts a location's requests per day (``X-RateLimit-Daily-Remaining``) besides its
window. The rules, asked by the guards, the retry policy and the sender alike:

- **Spent** is what any answer says: a daily remaining of 0 (``spent``). The guards stop the
  location (``daily_quota_exhausted``); a 429 that says so is not retried (``refused``), and
  a search that meets it does not wait for another (the rows keep ``exists`` without id).
- **Rows that may still start** (``DailyAllowance``): the last daily remaining, less the
  reserve kept for the searches and retries of rows already started (``--daily-reserve``),
  less our requests on their way then (the figure may not count them yet), split among our
  runs sending to the location, less the rows started since. Once it reaches 0 the
  location's rows not yet started end ``skipped`` / ``daily_quota_exhausted`` in input
  order, never sent into a refusal.

Plain state and arithmetic, no I/O (``tests/e2e/test_budget.py``,
``tests/unit/send/test_guards.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.outcomes import Code
from pipeline.highlevel.answers import Answer, RateHeaders


def is_spent(daily_remaining: int | None) -> bool:
    """Nothing is left of today's quota (None: not said)."""
    return daily_remaining == 0


def spent(rate: RateHeaders) -> bool:
    """The answer's headers say today's quota is spent: ``is_spent`` of its daily
    remaining, written out (it is asked of every answer)."""
    return rate.daily_remaining == 0


def refused(answer: Answer) -> bool:
    """A 429 because today's quota is spent: no retry can succeed today."""
    return answer.code is Code.RATE_LIMITED and spent(answer.rate)


@dataclass(slots=True)
class DailyAllowance:
    """How many more rows may start at one location today (``left``; None: no answer has
    said yet, and there is no limit until one does)."""

    reserve: int = 0
    left: int | None = None
    told: bool = False  # the log has said it is spent
    # What the summary reports: the daily remaining of the answer to the request sent last.
    # Answers arrive out of order under varying latency (the last to arrive said 1-2 more
    # than the server's count), and the figure rises when the API's day turns mid-run.
    remaining: int | None = None
    _said_at: float = float("-inf")

    def observe(
        self, daily_remaining: int | None, *, in_flight: int, sharers: int, sent_at: float
    ) -> None:
        """An answer's daily remaining, to a request sent at ``sent_at``, with
        ``in_flight`` of our requests on their way and ``sharers`` runs of ours sending to
        the location. ``left`` follows every answer (the in-flight requests subtracted
        cover those answered out of order); ``remaining`` only the latest-sent request's."""
        if daily_remaining is None:
            return
        self.left = (daily_remaining - self.reserve - in_flight) // sharers
        if sent_at >= self._said_at:
            self.remaining, self._said_at = daily_remaining, sent_at

    @property
    def spent(self) -> bool:
        """No more rows may start today."""
        return self.left is not None and self.left <= 0

    def start_one(self) -> None:
        """A row starts: one request of what is left."""
        if self.left is not None:
            self.left -= 1

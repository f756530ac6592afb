"""No run waits forever: a server gone silent, or a run stuck on itself, ends in bounded time.

Two ways a run can stop making progress without any single answer saying so:

- **The API is lost.** It answered, and now requests fail with no answer at all (connection
  refused or reset, timed out): the host went away, a load balancer holds connections open
  and answers nothing. Each row would spend its attempts, one warning line each, for as long
  as there are rows. Once nothing but such failures has come for ``bound_s``, the run stops
  (``unreachable``): the rows it had started end ``failed`` with their last error, those not
  yet sent ``skipped`` / ``unreachable``, and a ``--resume`` later sends them.
- **The run is stuck.** Nothing is sent and nothing answers, with rows left: a bug in the
  machinery (an agency run once waited forever on a turn that was never given back). After
  ``bound_s`` of that, the run says why it stopped and ends (``stalled``) instead of
  hanging until a scheduler's deadline kills it without a results file.

Progress is an HTTP answer (any status: a 429 is the API speaking) or a row settled without
one. Waiting is not silence: a pause the run scheduled itself (a retry's delay, a 429's
``Retry-After``) is added to the bound (``waiting_until``), and the bound is at least a few of
the slowest limit window any location announced (``window``), so a location that allows
one request a minute is not taken for a dead one.

Pure state with an injected clock (``tests/unit/send/test_watchdog.py``); the sender feeds
it and asks it every ``CHECK_EVERY_S``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.core.outcomes import Code

CHECK_EVERY_S = 0.5
# While the API is silent, one request probes it this often (``requests.RequestLayer``).
PROBE_EVERY_S = 1.0
# Silence tolerated, whatever --timeout says: an API that restarts or a network that blips
# for a few seconds is not lost.
MIN_BOUND_S = 10.0
# ... and at most this (with the default --timeout of 30 s: 30 s, so that a run whose API
# died exits within a minute of the death, grace for requests in flight included).
MAX_BOUND_S = 45.0
WINDOWS = 3  # the bound covers this many of the slowest announced limit window


def bound_for(timeout_s: float) -> float:
    """The silence a run tolerates: one request's ``--timeout``, within the bounds above."""
    return min(max(timeout_s, MIN_BOUND_S), MAX_BOUND_S)


@dataclass(frozen=True, slots=True)
class Stop:
    """Why the run must stop: ``code`` for its unsent rows, ``detail`` in a line."""

    code: Code
    detail: str


class Watchdog:
    def __init__(self, bound_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._base_bound_s = bound_s
        self.bound_s = bound_s
        self._last_progress = clock()
        self._busy_until = 0.0
        self.answered_ever = False
        self.silent_failures = 0  # failures with no answer since the last answer
        self._last_failure = ""

    def answered(self) -> None:
        """An HTTP answer came: the API is there."""
        self._last_progress = self._clock()
        self.answered_ever = True
        self.silent_failures = 0

    def failed(self, why: str) -> None:
        """A request ended with no answer at all (``why``: its error, in a few words)."""
        self.silent_failures += 1
        self._last_failure = why

    def progressed(self) -> None:
        """A row settled without a request (a skip, a lookup given up)."""
        self._last_progress = self._clock()

    def waiting_until(self, at: float) -> None:
        """The run itself waits until ``at`` (a retry's delay, a paused location)."""
        self._busy_until = max(self._busy_until, at)

    def window(self, interval_s: float) -> None:
        """A location announced a limit window this long: the bound covers a few."""
        self.bound_s = max(self.bound_s, self._base_bound_s, WINDOWS * interval_s)

    @property
    def silent(self) -> bool:
        """Requests fail with no answer since the API last answered (new rows should wait)."""
        return self.silent_failures > 0

    def check(self, in_flight: int = 0) -> Stop | None:
        """Whether the run must stop now, and why (``in_flight``: requests sent and not
        ended: waiting on an API that answers nothing is silence too)."""
        now = self._clock()
        quiet = now - max(self._last_progress, self._busy_until)
        if quiet <= self.bound_s:
            return None
        if self.silent_failures or in_flight:
            what = "no answer" if self.answered_ever else "no answer ever"
            failed = (
                f"{self.silent_failures} requests failed, the last: {self._last_failure}"
                if self.silent_failures
                else f"{in_flight} requests waiting"
            )
            return Stop(Code.UNREACHABLE, f"{what} for {quiet:.0f} s ({failed}); the API is lost")
        return Stop(
            Code.STALLED,
            f"nothing was sent or answered for {quiet:.0f} s with rows left; the run "
            "stopped itself rather than wait forever (a bug: please report it with the log)",
        )

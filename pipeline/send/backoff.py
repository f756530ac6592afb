"""How long to wait before another attempt: exponential backoff with full jitter.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the retries of
many rows that failed together, instead of sending them back in one synchronised wave. When
the server says how long to wait (``Retry-After``, or a spent window in the rate headers),
its word wins over our guess.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pipeline.core.outcomes import Code
from pipeline.highlevel.answers import Answer


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.5
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def ceiling(self, attempt: int) -> float:
        """The most we would wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.cap_s, self.base * 2.0 ** (attempt - 1)))

    def delay(self, attempt: int, answer: Answer) -> float:
        rate = answer.rate
        if answer.code is Code.RATE_LIMITED:
            if rate.retry_after_s is not None:
                return rate.retry_after_s
            if rate.remaining == 0 and rate.interval_ms:
                # The window is spent; the earliest a slot can free is one interval away at most.
                return self.rng.uniform(0.5, 1.0) * rate.interval_ms / 1000.0
        return self.rng.uniform(0.0, self.ceiling(attempt))

"""HighLevel-style per-location rate limiting: a sliding burst window and a daily quota.

The window counts *accepted* requests by server receipt time, which is what a client's
own limiter must respect: a 429 does not occupy a slot, and a slot frees exactly
``rate_interval_ms`` after the request that took it. The daily quota resets at UTC midnight.
An admitted request keeps its slot and its unit of quota whatever happens next (injected
500, dropped connection, "already exists"), as it would at HighLevel's gateway.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

from pipeline.core.constants import (
    H_DAILY_REMAINING,
    H_INTERVAL_MS,
    H_LIMIT_DAILY,
    H_MAX,
    H_REMAINING,
)
from pipeline.sandbox.config import SandboxConfig
from pipeline.sandbox.state import LocationCounters

# What the headers advertise when a limit is switched off (0): a large, honest-looking cap.
UNLIMITED = 1_000_000_000
_DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether a request may proceed, the headers to send, and when to come back if not."""

    allowed: bool
    headers: dict[str, str]
    retry_after_s: int | None = None
    reason: Literal["burst", "daily"] | None = None


def _refresh(counters: LocationCounters, config: SandboxConfig, now: float, wall: float) -> None:
    """Expire window entries older than the interval and roll the day over."""
    day = int(wall // _DAY_S)
    if counters.day != day:
        counters.day = day
        counters.daily_count = 0
    window = counters.window
    cutoff = now - config.rate_interval_ms / 1000.0
    while window and window[0] <= cutoff:
        window.popleft()


def _headers(counters: LocationCounters, config: SandboxConfig) -> dict[str, str]:
    daily_max = config.daily_limit or UNLIMITED
    burst_max = config.rate_max or UNLIMITED
    return {
        H_LIMIT_DAILY: str(daily_max),
        H_DAILY_REMAINING: str(max(0, daily_max - counters.daily_count)),
        H_INTERVAL_MS: str(config.rate_interval_ms),
        H_MAX: str(burst_max),
        H_REMAINING: str(max(0, burst_max - len(counters.window))),
    }


def peek(
    counters: LocationCounters, config: SandboxConfig, now: float, wall: float | None = None
) -> dict[str, str]:
    """The rate headers for an answer that does not itself consume a slot."""
    _refresh(counters, config, now, time.time() if wall is None else wall)
    return _headers(counters, config)


def admit(
    counters: LocationCounters, config: SandboxConfig, now: float, wall: float | None = None
) -> RateDecision:
    """Take a slot for a request received at monotonic ``now``, or refuse it.

    ``wall`` (epoch seconds) only decides the UTC day; both clocks are injectable for tests.
    """
    wall = time.time() if wall is None else wall
    _refresh(counters, config, now, wall)
    if config.daily_limit and counters.daily_count >= config.daily_limit:
        until_midnight = (int(wall // _DAY_S) + 1) * _DAY_S - wall
        return RateDecision(
            False, _headers(counters, config), max(1, math.ceil(until_midnight)), "daily"
        )
    window = counters.window
    if config.rate_max and len(window) >= config.rate_max:
        # The slot frees when enough entries expire to bring the window under rate_max
        # (more than one if rate_max was lowered at runtime).
        frees_at = window[len(window) - config.rate_max] + config.rate_interval_ms / 1000.0
        return RateDecision(
            False, _headers(counters, config), max(1, math.ceil(frees_at - now)), "burst"
        )
    counters.daily_count += 1
    if config.rate_max:
        window.append(now)
    return RateDecision(True, _headers(counters, config))

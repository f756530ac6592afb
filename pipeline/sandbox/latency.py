"""How long the sandbox's network takes: one draw per request, from a seeded distribution.

A constant latency hides what a real network does to a client: answers come back out of
order, a few take many times the median, and requests *arrive* in another order than they
were sent. So each request draws its latency from one of three distributions:

* ``constant``: ``latency_ms`` every time (what the sandbox always did);
* ``uniform``: uniform within ``latency_spread`` (a fraction) of the mean ``latency_ms``,
  e.g. spread 0.5 is ``[0.5, 1.5] x latency_ms``: jitter with a hard bound;
* ``lognormal``: median ``latency_ms``, ``latency_sigma`` the standard deviation of its
  logarithm: the long right tail of real round trips (sigma 0.5: p99 about 3.2 x the median;
  0.7: about 5 x). A draw is capped at ``LOGNORMAL_CAP`` x the median, so one unlucky draw
  cannot hold a test for minutes.

``latency_jitter_ms`` (the old way to vary it) still adds ``uniform(0, jitter)`` on top of any
of them. The draw is a pure function of a ``random.Random`` so it is tested without sleeping,
and the sandbox seeds that generator from ``seed``: the same requests in the same order get
the same latencies.

Where the time goes is ``inbound_share``: that share of each draw passes before the server
sees the request (its arrival time, its rate-limit slot, its create), the rest before the
answer leaves, as a real request crosses the network both ways.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from typing import Final

from aiohttp import web

CONSTANT: Final = "constant"
UNIFORM: Final = "uniform"
LOGNORMAL: Final = "lognormal"
DISTRIBUTIONS: Final = (CONSTANT, UNIFORM, LOGNORMAL)
LOGNORMAL_CAP = 50.0  # the longest log-normal draw, in medians
# The p99 of a standard normal: a log-normal's p99 / median is exp(Z99 * sigma).
Z99 = 2.326


@dataclass(frozen=True, slots=True)
class Latency:
    """One latency distribution, in milliseconds (the config's ``latency_*`` fields).

    ``ms`` is the constant value, the uniform's mean or the log-normal's median. Values are
    checked by ``check`` (``SandboxConfig`` calls it), so a bad one never reaches a draw.
    """

    distribution: str = CONSTANT
    ms: float = 0.0
    spread: float = 0.5
    sigma: float = 0.5
    jitter_ms: float = 0.0
    inbound_share: float = 0.5

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """What is wrong with these values, in the config's field names; None when fine."""
        if self.distribution not in DISTRIBUTIONS:
            return (
                f"latency_distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                f"got {self.distribution!r}"
            )
        named = (
            ("latency_ms", self.ms),
            ("latency_spread", self.spread),
            ("latency_sigma", self.sigma),
            ("latency_jitter_ms", self.jitter_ms),
            ("latency_inbound_share", self.inbound_share),
        )
        for name, value in named:
            if not math.isfinite(value) or value < 0:
                return f"{name} must be a finite number >= 0"
        if self.spread > 1:
            return "latency_spread is a fraction of latency_ms, at most 1 (0.5: +-50%)"
        if self.inbound_share > 1:
            return "latency_inbound_share is a share of each latency, between 0 and 1"
        return None

    @property
    def varies(self) -> bool:
        """Whether two draws may differ (else ``draw_ms`` takes nothing from the generator)."""
        if self.jitter_ms > 0:
            return True
        if self.ms <= 0 or self.distribution == CONSTANT:
            return False
        return (self.spread if self.distribution == UNIFORM else self.sigma) > 0

    def draw_ms(self, rng: random.Random) -> float:
        """One request's latency. A constant one takes no random number, so a sandbox without
        varying latency replays exactly the sequences it did before distributions existed."""
        ms = self.ms
        if ms > 0:
            if self.distribution == UNIFORM and self.spread > 0:
                ms = rng.uniform(ms * (1 - self.spread), ms * (1 + self.spread))
            elif self.distribution == LOGNORMAL and self.sigma > 0:
                ms = min(ms * math.exp(rng.gauss(0.0, self.sigma)), ms * LOGNORMAL_CAP)
        if self.jitter_ms > 0:
            ms += rng.uniform(0.0, self.jitter_ms)
        return ms

    def split_s(self, rng: random.Random) -> tuple[float, float]:
        """One draw as (seconds on the way in, seconds on the way out)."""
        total = self.draw_ms(rng) / 1000.0
        inbound = total * self.inbound_share
        return inbound, total - inbound


def parse_spread(text: str) -> float:
    """``"50%"`` or ``"0.5"`` as the fraction 0.5; ValueError for anything else or above 1.

    A percent sign is what a person writes for "+-50%"; a bare number is the config's form.
    """
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw.removesuffix("%").strip())
    except ValueError:
        raise ValueError(f"latency spread must look like 50% or 0.5, got {text!r}") from None
    if percent:
        value /= 100.0
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"latency spread must be between 0 and 100% (0 and 1), got {text!r}")
    return value


# The seconds a request still has to spend on its way back, set when it arrives.
_OUTBOUND_S = web.RequestKey("sandbox_outbound_s", float)


class Network:
    """The wire between a client and the sandbox: seeded draws, each request's two halves.

    ``arrive`` holds a request for its way in and returns its arrival time (what the server
    counts it by); ``depart`` holds its answer for the rest of the same draw. Draws happen in
    arrival order at the handler's start, so a seed replays them for the same requests.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        """Restart the sequence of draws (``reset``, or a new ``seed``)."""
        self._rng.seed(seed)

    async def arrive(self, request: web.Request, latency: Latency) -> float:
        """Wait out the request's way in; its arrival time on ``time.monotonic``.

        No latency configured: no draw and no await, so a zero-latency sandbox (the capacity
        benchmark's) pays nothing for this."""
        if latency.ms > 0 or latency.jitter_ms > 0:
            inbound, request[_OUTBOUND_S] = latency.split_s(self._rng)
            if inbound > 0:
                await asyncio.sleep(inbound)
        return time.monotonic()

    async def depart(self, request: web.Request, latency: Latency) -> None:
        """Wait out the answer's way back: the rest of the draw ``arrive`` made, or a whole
        draw for a request that arrived without one (latency switched on meanwhile)."""
        outbound = request.get(_OUTBOUND_S)
        if outbound is None:
            outbound = latency.draw_ms(self._rng) / 1000.0
        if outbound > 0:
            await asyncio.sleep(outbound)

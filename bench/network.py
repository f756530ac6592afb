"""The network a benchmark's sandbox plays: its latency, and how that latency varies.

A client sized against a constant latency can look perfect and still fall short on a real
network, where answers vary and a few take several times the median. So the latency
benchmarks (1, 6, 8) run against a varying latency (``pipeline sandbox --latency-spread`` or
``--latency-sigma``), and every table's title says which; only the capacity benchmark keeps
zero latency, since it measures the machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A standard normal's 1st and 99th percentiles are -Z99 and Z99.
Z99 = 2.326


@dataclass(frozen=True, slots=True)
class Network:
    """``ms`` every time (constant); or the mean of a uniform latency within +-``spread``
    (a fraction) of it; or the median of a log-normal one whose log has ``sigma``."""

    ms: float
    spread: float | None = None
    sigma: float | None = None

    def __post_init__(self) -> None:
        if self.spread is not None and self.sigma is not None:
            raise ValueError("a network's latency is uniform (spread) or log-normal (sigma)")

    @property
    def label(self) -> str:
        """For a table's title: ``80 ms latency, uniform +-50%`` and the like."""
        if self.spread is not None:
            return f"{self.ms:g} ms latency, uniform ±{self.spread * 100:g}%"
        if self.sigma is not None:
            return f"{self.ms:g} ms median latency, log-normal sigma {self.sigma:g}"
        return f"{self.ms:g} ms latency, constant"

    @property
    def slug(self) -> str:
        """For a work folder's name: ``80ms-u50``, ``600ms-ln0.7``, ``5ms``."""
        if self.spread is not None:
            return f"{self.ms:g}ms-u{self.spread * 100:g}"
        if self.sigma is not None:
            return f"{self.ms:g}ms-ln{self.sigma:g}"
        return f"{self.ms:g}ms"

    @property
    def mean_ms(self) -> float:
        """The mean latency (a log-normal's is above its median: exp(sigma^2 / 2) times)."""
        if self.sigma is not None:
            return self.ms * math.exp(self.sigma**2 / 2)
        return self.ms

    @property
    def low_ms(self) -> float:
        """A latency almost every request exceeds: the uniform's floor, the log-normal's 1st
        percentile. A gap between arrivals this long is a round trip waited, not jitter."""
        if self.spread is not None:
            return self.ms * (1 - self.spread)
        if self.sigma is not None:
            return self.ms * math.exp(-Z99 * self.sigma)
        return self.ms

    def sandbox_flags(self) -> list[str]:
        """The ``pipeline sandbox`` options that play this network."""
        flags = ["--latency-ms", f"{self.ms:g}"]
        if self.spread is not None:
            flags += ["--latency-spread", f"{self.spread:g}"]
        if self.sigma is not None:
            flags += ["--latency-sigma", f"{self.sigma:g}"]
        return flags


UNIFORM_80 = Network(80.0, spread=0.5)  # HighLevel from a nearby region, +-50%
LOGNORMAL_80 = Network(80.0, sigma=0.7)  # the same, with a real network's long tail

"""Request times as a histogram: the mean hides what users feel, the p50 and p99 do not.

A real network's answers spread (a log-normal p99 is five times its median), so a run's
summary says the median and the 99th percentile beside the mean. Keeping every time would
cost 8 bytes a request (80 MB for ten million), so times go into log-scale buckets 2% wide
(a quantile is off by at most 1%), from 0.1 ms to over an hour in ~1,000 counters, and the
buckets of ``--workers`` processes add up (``merge``). Adding one time is a log and an
increment: no allocation on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

_LOWEST_S = 1e-4  # times below this share the first bucket
_GROWTH = 1.02  # each bucket's upper edge is this times its lower one
_LOG_GROWTH = math.log(_GROWTH)
_BUCKETS = 1024  # 0.1 ms * 1.02**1023 is about 63 minutes; longer ones share the last


class Latencies:
    """Counts of request times by bucket, their sum and their number."""

    __slots__ = ("_counts", "count", "total_s")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.total_s = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        if seconds <= _LOWEST_S:
            self._counts[0] += 1
            return
        bucket = int(math.log(seconds / _LOWEST_S) / _LOG_GROWTH) + 1
        self._counts[bucket if bucket < _BUCKETS else _BUCKETS - 1] += 1

    @property
    def mean_s(self) -> float | None:
        return self.total_s / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """The time below which a share ``q`` of requests finished: the geometric middle of
        the bucket that holds it (None before any request)."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for bucket, n in enumerate(self._counts):
            seen += n
            if n and seen >= rank:
                if bucket == 0:
                    return _LOWEST_S
                return _LOWEST_S * math.pow(_GROWTH, bucket - 0.5)
        return _LOWEST_S * math.pow(_GROWTH, _BUCKETS - 1)  # pragma: no cover - float rounding

    def merge(self, other: Latencies) -> None:
        for bucket, n in enumerate(other._counts):
            if n:
                self._counts[bucket] += n
        self.count += other.count
        self.total_s += other.total_s

    def to_dict(self) -> dict[str, object]:
        """JSON for a worker's report: the non-empty buckets only."""
        buckets = {str(b): n for b, n in enumerate(self._counts) if n}
        return {"buckets": buckets, "count": self.count, "total_s": self.total_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Latencies:
        found = cls()
        buckets = data.get("buckets", {})
        if isinstance(buckets, Mapping):
            for bucket, n in buckets.items():
                found._counts[min(int(bucket), _BUCKETS - 1)] += int(n)
        found.count = int(data.get("count", 0))  # type: ignore[call-overload]
        found.total_s = float(data.get("total_s", 0.0))  # type: ignore[arg-type]
        return found

    def milliseconds(self) -> tuple[float | None, float | None, float | None]:
        """(mean, p50, p99) in ms, rounded for a summary; None before any request."""

        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(1000 * seconds, 1)

        return ms(self.mean_s), ms(self.quantile(0.5)), ms(self.quantile(0.99))

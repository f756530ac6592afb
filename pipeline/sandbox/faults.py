"""Injected failures, the reason the sandbox exists: a client is only as good as its worst day.

One uniform draw per create request picks at most one fault, walking the probabilities in
``FAULT_FIELDS`` order, so configured probabilities are exact and a fixed ``seed`` replays
the same sequence for the same request order. What each fault does:

==================== ============================================ ========================
fault                answer                                       conversation created?
==================== ============================================ ========================
``429``              429 regardless of the window (no slot taken) no
``500``              500 ``{"statusCode":500,...,"traceId":...}`` no
``502_after_create`` 502 with a gateway HTML page                 yes (if it was new)
``broken_body``      the real status, JSON body cut in half       yes (if it was new)
``drop``             connection closed, no response at all        no
``hang``             the real answer, ``hang_s`` late             yes, immediately
==================== ============================================ ========================

``hang`` creates *before* sleeping: that is the dangerous real-world case (the server did
the work, the client timed out), which a client must recover from via "already exists" and
search rather than by creating a duplicate.
"""

from __future__ import annotations

import random
from enum import StrEnum

from pipeline.sandbox.bodies import JsonTemplate
from pipeline.sandbox.config import FAULT_FIELDS, SandboxConfig


class Fault(StrEnum):
    """Fault names as they appear in the request log and stats."""

    RATE_LIMIT = "429"
    SERVER_ERROR = "500"
    BAD_GATEWAY = "502_after_create"
    BROKEN_BODY = "broken_body"
    DROP = "drop"
    HANG = "hang"


_FIELD_TO_FAULT: dict[str, Fault] = {
    "fault_429": Fault.RATE_LIMIT,
    "fault_500": Fault.SERVER_ERROR,
    "fault_502_after_create": Fault.BAD_GATEWAY,
    "fault_broken_body": Fault.BROKEN_BODY,
    "fault_drop": Fault.DROP,
    "fault_hang": Fault.HANG,
}
assert set(_FIELD_TO_FAULT) == set(FAULT_FIELDS)

# Called with a trace id: ``{"statusCode":500,"message":"Internal Server Error","traceId":…}``.
SERVER_ERROR = JsonTemplate({"statusCode": 500, "message": "Internal Server Error"})
BAD_GATEWAY_BODY = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def break_body(body: bytes) -> bytes:
    """A JSON body cut short, so any JSON parser rejects it."""
    return body[: max(1, len(body) // 2)]


class FaultPicker:
    """Seeded fault selection; reseeded on reset so runs are reproducible.

    The cumulative table is rebuilt only when the config changes, keeping the per-request
    cost to one ``random()`` call (none at all when every probability is zero).
    """

    def __init__(self, config: SandboxConfig) -> None:
        self._rng = random.Random(config.seed)
        self._table: list[tuple[float, Fault]] = []
        self.configure(config)

    def configure(self, config: SandboxConfig) -> None:
        """Adopt new probabilities (the random sequence carries on)."""
        table: list[tuple[float, Fault]] = []
        acc = 0.0
        for name in FAULT_FIELDS:
            probability = getattr(config, name)
            if probability > 0:
                acc += probability
                table.append((acc, _FIELD_TO_FAULT[name]))
        self._table = table

    def reseed(self, seed: int) -> None:
        """Restart the deterministic sequence."""
        self._rng.seed(seed)

    def pick(self) -> Fault | None:
        """At most one fault for this request."""
        if not self._table:
            return None
        u = self._rng.random()
        for threshold, fault in self._table:
            if u < threshold:
                return fault
        return None

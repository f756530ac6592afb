"""JSON bodies the way HighLevel sends them: compact, with a fresh ``traceId`` as the last key.

Every JSON answer of the API carries a trace id (HighLevel's support asks for it), so the
fixed error bodies are templates: serialised once, with the trace id spliced onto the end
per request. Trace ids are random uuid4 strings built from one ``getrandbits`` call, about
1 µs each, because the sandbox answers thousands of requests a second in benchmarks.
"""

from __future__ import annotations

import json
import random
from typing import Any

from pipeline.core.constants import TRACE_ID_KEY

# uuid4 layout: version nibble 4 in bits 76-79, RFC 4122 variant (0b10) in bits 62-63.
_KEEP = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (0x4000 << 64) | (0x8000 << 48)


def dumps(payload: Any) -> bytes:
    """Compact JSON, as the API sends it."""
    return json.dumps(payload, separators=(",", ":")).encode()


class TraceIds:
    """Fresh uuid4 strings; unique, not reproducible (nothing in a test should depend on them)."""

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits = random.Random().getrandbits  # seeded from os.urandom

    def __call__(self) -> str:
        """A new trace id, e.g. ``cbf699cb-28e6-42d8-b49b-f6731af2560b``."""
        h = "%032x" % ((self._bits(128) & _KEEP) | _SET)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def with_trace(payload: dict[str, Any], trace_id: str) -> bytes:
    """``payload`` as compact JSON with ``traceId`` appended as its last key."""
    return dumps({**payload, TRACE_ID_KEY: trace_id})


class JsonTemplate:
    """A fixed JSON object answered with a fresh trace id as its last key.

    ``JsonTemplate({"statusCode": 429, ...})(trace_id)`` equals
    ``with_trace({"statusCode": 429, ...}, trace_id)`` at the cost of two concatenations.
    """

    __slots__ = ("_head",)

    def __init__(self, payload: dict[str, Any]) -> None:
        if not payload:
            raise ValueError("a template needs at least one key before the trace id")
        self._head = dumps(payload)[:-1] + f',"{TRACE_ID_KEY}":"'.encode()

    def __call__(self, trace_id: str) -> bytes:
        """The body for one answer (trace ids are hex and dashes: no escaping needed)."""
        return self._head + trace_id.encode() + b'"}'

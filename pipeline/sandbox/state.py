"""What the sandbox remembers: conversations, a request log, per-location counters.

Benchmarks push tens of thousands of requests at thousands per second through one event
loop, so every per-request operation here is O(1) (dict lookups, deque appends). Only the
admin snapshots walk whole collections. All mutation happens on the server's event loop;
other threads read through ``SandboxThread``, which hops onto that loop.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import string
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

ID_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 20
# Bound on the in-memory request log; counters stay exact beyond it.
DEFAULT_MAX_LOG = 1_000_000
# Bytes of the blake2b digest that labels a token in the request log (8 hex characters).
TOKEN_LABEL_BYTES = 4
# Bound on the label cache, which also sees tokens the sandbox refuses.
_MAX_CACHED_LABELS = 10_000


def iso_now() -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, the way HighLevel writes dates."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Conversation:
    """One created conversation; ``created_at`` (monotonic) drives the search lag."""

    id: str
    location_id: str
    contact_id: str
    date_added: str
    date_updated: str
    created_at: float


def token_label(token: str) -> str:
    """A short, stable stand-in for a token in the request log: 8 hex digits of blake2b.

    The same token always gets the same label (across config updates, restarts and
    processes), so tests can count requests per token without the log holding a secret.
    """
    return hashlib.blake2b(token.encode(), digest_size=TOKEN_LABEL_BYTES).hexdigest()


class TokenLabels:
    """``token_label`` with a per-token cache, keeping the per-request cost one dict lookup."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def __call__(self, token: str | None) -> str | None:
        """The label of ``token``, or None when the request carried no bearer token."""
        if token is None:
            return None
        label = self._cache.get(token)
        if label is None:
            if len(self._cache) >= _MAX_CACHED_LABELS:  # junk tokens must not grow it forever
                self._cache.clear()
            label = self._cache[token] = token_label(token)
        return label


class RequestRecord(NamedTuple):
    """One API request as answered. ``status`` 0 means no answer (dropped connection).

    ``token`` is ``token_label`` of the bearer token the request carried (None without one),
    never the token itself.
    """

    t: float
    method: str
    path: str
    location_id: str | None
    status: int
    fault: str | None
    token: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The admin endpoint's shape (camelCase, like the API)."""
        return {
            "t": self.t,
            "method": self.method,
            "path": self.path,
            "locationId": self.location_id,
            "status": self.status,
            "fault": self.fault,
            "token": self.token,
        }


class LocationCounters:
    """Rate-limit bookkeeping for one location: accepted-request times and the daily count."""

    __slots__ = ("daily_count", "day", "window")

    def __init__(self) -> None:
        self.window: deque[float] = deque()
        self.day = -1
        self.daily_count = 0


class SandboxState:
    """All mutable sandbox state, cleared as a whole by ``reset``."""

    def __init__(self, max_log: int = DEFAULT_MAX_LOG) -> None:
        self._id_rng = random.Random()  # ids need uniqueness, not reproducibility
        self.conversations: dict[tuple[str, str], Conversation] = {}
        self.by_location: dict[str, list[Conversation]] = {}
        self.requests: deque[RequestRecord] = deque(maxlen=max_log)
        self.requests_total = 0
        self.status_counts: dict[int, int] = {}
        self.fault_counts: dict[str, int] = {}
        self.endpoint_counts: dict[str, int] = {}  # "POST /conversations/": requests
        self.limits: dict[str, LocationCounters] = {}

    def reset(self) -> None:
        """Forget conversations, the log, counters and rate windows."""
        self.conversations.clear()
        self.by_location.clear()
        self.requests.clear()
        self.requests_total = 0
        self.status_counts.clear()
        self.fault_counts.clear()
        self.endpoint_counts.clear()
        self.limits.clear()

    # -- requests ---------------------------------------------------------------------------

    def record(
        self,
        t: float,
        method: str,
        path: str,
        location_id: str | None,
        status: int,
        fault: str | None,
        token: str | None = None,
    ) -> None:
        """Log one answered (or dropped) API request and bump the cheap counters.

        ``token`` is the token's label (see ``token_label``), not the token.
        """
        self.requests.append(RequestRecord(t, method, path, location_id, status, fault, token))
        self.requests_total += 1
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        endpoint = f"{method} {path}"
        self.endpoint_counts[endpoint] = self.endpoint_counts.get(endpoint, 0) + 1
        if fault is not None:
            self.fault_counts[fault] = self.fault_counts.get(fault, 0) + 1

    def requests_since(self, index: int = 0) -> list[RequestRecord]:
        """Records with absolute sequence number >= ``index`` (still held in the log)."""
        first_held = self.requests_total - len(self.requests)
        skip = max(0, index - first_held)
        return list(itertools.islice(self.requests, skip, None))

    def counters(self, location_id: str) -> LocationCounters:
        """The rate counters of a location, created on first use."""
        counters = self.limits.get(location_id)
        if counters is None:
            counters = self.limits[location_id] = LocationCounters()
        return counters

    # -- conversations ----------------------------------------------------------------------

    def find(self, location_id: str, contact_id: str) -> Conversation | None:
        """The conversation of a contact, if any (ignores search lag)."""
        return self.conversations.get((location_id, contact_id))

    def create(self, location_id: str, contact_id: str, now: float) -> Conversation:
        """Create a conversation; the caller has checked it does not exist."""
        stamp = iso_now()
        conversation = Conversation(
            id="".join(self._id_rng.choices(ID_ALPHABET, k=ID_LENGTH)),
            location_id=location_id,
            contact_id=contact_id,
            date_added=stamp,
            date_updated=stamp,
            created_at=now,
        )
        self.conversations[(location_id, contact_id)] = conversation
        self.by_location.setdefault(location_id, []).append(conversation)
        return conversation

    def search(
        self, location_id: str, contact_id: str | None, visible_before: float, limit: int
    ) -> tuple[list[Conversation], int]:
        """Conversations the search index already shows, newest first, and their total.

        ``visible_before`` is a monotonic time: conversations created later are still
        "being indexed" and are left out, which models HighLevel's search lag.
        """
        if contact_id is not None:
            found = self.conversations.get((location_id, contact_id))
            if found is None or found.created_at > visible_before:
                return [], 0
            return [found], 1
        held = self.by_location.get(location_id, [])
        # Appended in creation order, so the invisible ones are a suffix.
        end = len(held)
        while end and held[end - 1].created_at > visible_before:
            end -= 1
        newest = held[max(0, end - limit) : end]
        newest.reverse()
        return newest, end

    def conversation_map(self) -> dict[tuple[str, str], str]:
        """``{(locationId, contactId): conversationId}`` snapshot."""
        return {key: conv.id for key, conv in self.conversations.items()}

    def stats(self) -> dict[str, Any]:
        """Counts only, cheap enough to poll during a benchmark."""
        return {
            "requests": self.requests_total,
            "by_status": {str(k): v for k, v in sorted(self.status_counts.items())},
            "by_fault": dict(sorted(self.fault_counts.items())),
            "by_endpoint": dict(sorted(self.endpoint_counts.items())),
            "conversations": len(self.conversations),
            "locations": len(self.by_location),
        }

"""What the sender works on: a location's batch of rows, its state while sending (its
limiter, its token's turns, what is left of its day: ``quota.DailyAllowance``), and one
row's story.

Plain data with the little logic that belongs to it (a turn taken and given back, the answer
of a row the run did not send); the mechanism that moves them is ``sender.Sender``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.core.outcomes import Code
from pipeline.highlevel.answers import Answer
from pipeline.send.limiter import LocationLimiter
from pipeline.send.lookups import not_found_yet
from pipeline.send.quota import DailyAllowance
from pipeline.send.retrying import unsent


class SharedLocations(Protocol):
    """How many runs of ours send to a location now (``peers.Peers``)."""

    def sharers(self, location_id: str, *, fresh: bool = False) -> int: ...

    def done(self, location_id: str) -> None: ...

    def join_wait_s(self, location_id: str) -> float: ...


class Alone:
    def sharers(self, location_id: str, *, fresh: bool = False) -> int:
        return 1

    def join_wait_s(self, location_id: str) -> float:
        return 0.0

    def done(self, location_id: str) -> None:
        pass


class ConversationsAPI(Protocol):
    async def create_conversation(self, location_id: str, contact_id: str) -> Answer: ...

    async def find_conversation(self, location_id: str, contact_id: str) -> Answer: ...

    def token_key(self, location_id: str) -> int: ...


@dataclass(frozen=True, slots=True)
class LocationBatch:
    """The rows of one location, in input order: to create (``rows``), and to look up only
    (``lookups``: their conversation exists, an earlier run did not find its id)."""

    location_id: str
    rows: Iterable[tuple[int, str]]  # (row_index, contact_id), consumed once
    lookups: Iterable[tuple[int, str]] = ()


@dataclass(slots=True)
class Location:
    location_id: str
    limiter: LocationLimiter
    priority: int  # order of first appearance: earlier locations are served first
    token: TokenTurn
    quota: DailyAllowance = field(default_factory=DailyAllowance)  # rows that may start today
    holds_turn: bool = False  # its first request holds the token's turn (``TokenTurn``)
    decided: asyncio.Event = field(default_factory=asyncio.Event)  # its first request is


@dataclass(slots=True)
class Turn:
    """One request at a time until something is known: the first to find the turn free
    takes it, the others wait until it is given back or the thing becomes known."""

    taken: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def take(self, known: Callable[[], bool]) -> bool:
        """Return once ``known()`` (False: no turn needed) or the turn is ours (True)."""
        while not known():
            if not self.taken:
                self.taken = True
                self.changed.clear()
                return True
            await self.changed.wait()
        return False

    def give_back(self) -> None:
        self.taken = False
        self.changed.set()


@dataclass(slots=True)
class TokenTurn:
    """Until a token is decided, one first request with it at a time (``first``); and
    until it is known whether it may search, one first search (``search``)."""

    first: Turn = field(default_factory=Turn)
    search: Turn = field(default_factory=Turn)


@dataclass(slots=True)
class Row:
    location: Location
    row_index: int
    contact_id: str
    attempts: int = 0
    last: Answer | None = None
    in_request: bool = field(default=False)
    lookup: bool = False  # search only: an earlier run was told the conversation exists
    exists: Answer | None = None  # this run's "already exists" answer
    exists_at: float = 0.0  # when it came (or this run's first search of a lookup row)
    searches: int = 0
    recorded: bool = False  # its id_not_found_yet outcome is in the journal already


def not_sent(row: Row, code: Code) -> Answer:
    """A row the run did not (or no longer) send for ``code``: ``skipped`` and its last
    answer's status; a row whose conversation exists keeps ``exists``, without its id yet."""
    if row.lookup or row.exists is not None:
        return not_found_yet(row.exists)
    return unsent(code, row.last)

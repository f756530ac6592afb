"""``Sender`` in process: the real client over an in-memory HighLevel, in virtual time.

``looptime`` fast-forwards the event loop's clock whenever every task waits, so windows of
10 s pass at once and the times below are exact, not sleeps.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

import pytest

from pipeline.auth.tokens import Tokens
from pipeline.core.outcomes import Code, RowOutcome, Status
from pipeline.core.values import Rate
from pipeline.highlevel.answers import Answer
from pipeline.highlevel.client import ConversationsClient
from pipeline.send.backoff import Backoff
from pipeline.send.retrying import RetryPolicy
from pipeline.send.rows import LocationBatch
from pipeline.send.sender import Sender
from tests.fakeapi import TOKEN, FakeHighLevel, Request

pytestmark = pytest.mark.looptime


def client_for(api: FakeHighLevel, tokens: Tokens | None = None) -> ConversationsClient:
    return ConversationsClient(
        base_url="https://fake",
        tokens=tokens or Tokens(default=TOKEN),
        api_version="2021-07-28",
        timeout=30,
        concurrency=64,
        transport=api,
    )


async def send(
    api: FakeHighLevel,
    batches: Iterable[tuple[str, list[str]]],
    *,
    tokens: Tokens | None = None,
    rate: Rate | None = None,
    concurrency: int = 64,
    max_attempts: int = 5,
    stop_at: float | None = None,
) -> tuple[dict[int, RowOutcome], Sender]:
    """Send rows (location, contacts) and return every row's outcome by row index."""
    outcomes: list[RowOutcome] = []
    sender = Sender(
        client_for(api, tokens),
        rate=rate,
        concurrency=concurrency,
        policy=RetryPolicy(max_attempts=max_attempts, backoff=Backoff(base=0.5)),
        sink=outcomes.append,
        clock=asyncio.get_running_loop().time,
    )
    index = iter(range(1_000_000))
    planned = [
        LocationBatch(location, [(next(index), contact) for contact in contacts])
        for location, contacts in batches
    ]
    rows = next(index)
    if stop_at is not None:
        asyncio.get_running_loop().call_later(stop_at, sender.stop, Code.INTERRUPTED)
    await sender.run(planned)
    by_row = {o.row_index: o for o in outcomes}
    assert sorted(by_row) == list(range(rows)) and len(outcomes) == rows  # each row once
    return by_row, sender


def contacts(n: int, prefix: str = "c") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def statuses(outcomes: dict[int, RowOutcome]) -> Counter[tuple[str, str | None]]:
    return Counter(
        (o.status.value, o.error_code.value if o.error_code else None) for o in outcomes.values()
    )


async def test_bursts_follow_the_window_and_the_first_request_goes_alone() -> None:
    api = FakeHighLevel(limit=(100, 10.0), latency_s=0.08)
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes, _ = await send(api, [("L", contacts(250))])
    assert statuses(outcomes) == {("created", None): 250}
    assert api.by_status() == {201: 250}  # not one 429
    arrivals = sorted(r.t for r in api.requests)
    assert arrivals[1] - arrivals[0] > 0.079  # the burst waited for the first answer
    assert most_in_any_window(arrivals, 10.0) == 100
    assert 20.0 < loop.time() - started < 20.5  # three windows: 0 s, 10 s, 20 s


async def test_a_refused_location_while_another_carries_on() -> None:
    api = FakeHighLevel(location_tokens={"THEIRS": "someone-else"})
    outcomes, _ = await send(api, [("THEIRS", contacts(30, "t")), ("OURS", contacts(30, "o"))])
    theirs = [o for i, o in outcomes.items() if i < 30]
    ours = [o for i, o in outcomes.items() if i >= 30]
    assert Counter(r.location_id for r in api.requests)["THEIRS"] == 1
    assert Counter((o.status.value, o.error_code) for o in theirs) == {
        ("failed", Code.FORBIDDEN): 1,
        ("skipped", Code.FORBIDDEN): 29,
    }
    assert {o.status.value for o in ours} == {"created"}


async def test_a_rejected_token_costs_one_request_and_others_go_on() -> None:
    api = FakeHighLevel(tokens=frozenset({"good"}))
    tokens = Tokens(by_location={"G1": "good", "G2": "good", "B1": "bad", "B2": "bad"})
    batches = [(loc, contacts(20, loc)) for loc in ("B1", "G1", "B2", "G2")]
    outcomes, sender = await send(api, batches, tokens=tokens)
    assert Counter(r.token for r in api.requests) == {"good": 40, "bad": 1}
    assert sender.stop_code is None  # the good token's locations kept the run going
    bad = [o for i, o in outcomes.items() if i < 20 or 40 <= i < 60]
    assert {o.error_code for o in bad} == {Code.UNAUTHORIZED}


async def test_only_a_rejected_token_stops_the_run() -> None:
    api = FakeHighLevel(tokens=frozenset())
    outcomes, sender = await send(api, [("L1", contacts(50)), ("L2", contacts(50, "d"))])
    assert len(api.requests) == 1 and sender.stop_code is Code.UNAUTHORIZED
    assert statuses(outcomes) == {("failed", "unauthorized"): 1, ("skipped", "unauthorized"): 99}


async def test_server_errors_are_retried_until_they_pass() -> None:
    def fail_twice(request: Request) -> int | None:
        tries = sum(1 for r in api.requests if r.contact_id == request.contact_id)
        return 500 if request.contact_id == "c3" and tries < 2 else None

    api = FakeHighLevel(fault=fail_twice)
    outcomes, _ = await send(api, [("L", contacts(10))])
    assert statuses(outcomes) == {("created", None): 10}
    assert outcomes[3].attempts == 3 and outcomes[3].trace_id is not None


async def test_a_429_pauses_the_whole_location() -> None:
    api = FakeHighLevel(retry_after_s=3)
    api.fault = lambda request: (
        429 if request.contact_id == "c0" and len(api.requests) == 0 else None
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes, _ = await send(api, [("L", contacts(5))])
    assert statuses(outcomes) == {("created", None): 5}
    later = [r.t - started for r in api.requests[1:]]
    assert min(later) >= 3.0  # nobody went before Retry-After had passed


async def test_already_exists_is_found_by_search() -> None:
    api = FakeHighLevel()
    existing = api.seed("L", "c1")
    outcomes, _ = await send(api, [("L", contacts(3))])
    assert (outcomes[1].status.value, outcomes[1].conversation_id) == ("exists", existing)
    assert outcomes[1].trace_id is not None  # the "already exists" answer's, for support
    assert [r.method for r in api.requests].count("GET") == 1


async def test_without_the_search_scope_one_search_then_none() -> None:
    api = FakeHighLevel(no_search_scope=frozenset({TOKEN}))
    for contact in ("c1", "c2", "c3", "c150"):
        api.seed("L", contact)
    outcomes, _ = await send(api, [("L", contacts(200))])
    assert statuses(outcomes) == {("created", None): 196, ("exists", "conversation_exists"): 4}
    assert all(outcomes[i].conversation_id is None for i in (1, 2, 3, 150))
    assert "conversations.readonly" in (outcomes[150].error_message or "")
    # A token's first search goes alone: its answer named the missing scope, and the other
    # rows (c2 and c3 waiting on it, c150 in the next window) made none.
    searched = [r.contact_id for r in api.requests if r.method == "GET"]
    assert searched == ["c1"]


async def test_an_unreachable_api_stops_after_three_attempts() -> None:
    """Three connections tried, none made: no request went out, so none is counted (the
    API counted none), and no latency is measured of an answer that never came."""
    api = FakeHighLevel(unreachable=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes, sender = await send(api, [("L1", contacts(40)), ("L2", contacts(40, "d"))])
    assert sender.stop_code is Code.UNREACHABLE and sender.requests == 0
    assert sum(outcome.attempts for outcome in outcomes.values()) == 3
    assert sender.latencies.mean_s is None
    assert "Cannot connect" in (sender.stop_detail or "")
    assert statuses(outcomes) == {("skipped", "unreachable"): 80}
    assert loop.time() - started < 5.0


async def test_a_ceiling_beside_the_announced_limit() -> None:
    """--rate 10/1s under an announced 100 per 10 s: ten a second, not ten per 10 s."""
    api = FakeHighLevel(limit=(100, 10.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes, _ = await send(api, [("L", contacts(60))], rate=Rate(10, 1.0))
    assert statuses(outcomes) == {("created", None): 60}
    arrivals = [r.t for r in api.requests]
    assert most_in_any_window(arrivals, 1.0) <= 10
    assert 5.0 < loop.time() - started < 6.5


async def test_a_higher_announced_limit_is_followed() -> None:
    api = FakeHighLevel(limit=(300, 10.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes, _ = await send(api, [("L", contacts(600))], concurrency=400)
    assert statuses(outcomes) == {("created", None): 600}
    assert api.by_status() == {201: 600}
    assert 10.0 < loop.time() - started < 10.5  # two windows of 300, not six of 100


async def test_a_spent_daily_quota_stops_that_location() -> None:
    api = FakeHighLevel(daily_limit=15)
    outcomes, _ = await send(api, [("SPENT", contacts(20)), ("FINE", contacts(5, "f"))])
    spent = Counter(
        (o.status.value, o.error_code.value if o.error_code else None)
        for i, o in outcomes.items()
        if i < 20
    )
    assert spent == {("created", None): 15, ("skipped", "daily_quota_exhausted"): 5}
    assert all(outcomes[i].status.value == "created" for i in range(20, 25))


async def test_stop_gives_requests_in_flight_their_answer_and_skips_the_rest() -> None:
    api = FakeHighLevel(limit=(100, 10.0))
    outcomes, sender = await send(api, [("L", contacts(300))], stop_at=5.0)
    assert sender.stop_code is Code.INTERRUPTED
    assert len(outcomes) == 300  # every row, once (the sender records unstarted ones)
    assert statuses(outcomes) == {("created", None): 100, ("skipped", "interrupted"): 200}


class _AgencyTokens:
    """Locations whose tokens are minted from one agency token (one token key): the app is
    not installed at ``missing``, so no token is had there and no request goes out."""

    def __init__(self, api: ConversationsClient, missing: str) -> None:
        self._api = api
        self._missing = missing

    def token_key(self, location_id: str) -> int:
        return 1  # one agency: every location's first request waits on the same turn

    async def create_conversation(self, location_id: str, contact_id: str) -> Answer:
        if location_id == self._missing:
            return Answer(Status.SKIPPED, Code.NOT_INSTALLED, sent=False)
        return await self._api.create_conversation(location_id, contact_id)

    async def find_conversation(self, location_id: str, contact_id: str) -> Answer:
        return await self._api.find_conversation(location_id, contact_id)


async def test_a_first_location_without_a_token_hands_the_token_s_turn_on() -> None:
    """Issue 24: an agency run whose first row is at a sub-account without the app waited
    forever: that location was decided (no token) while its token was not, and its turn at
    the token's first request was never given back."""
    api = FakeHighLevel()
    outcomes: list[RowOutcome] = []
    sender = Sender(
        _AgencyTokens(client_for(api), missing="NI"),
        rate=None,
        concurrency=64,
        policy=RetryPolicy(max_attempts=5, backoff=Backoff(base=0.5)),
        sink=outcomes.append,
        clock=asyncio.get_running_loop().time,
    )
    batches = [
        LocationBatch("NI", [(0, "a"), (1, "b")]),
        LocationBatch("L1", [(2, "c"), (3, "d")]),
        LocationBatch("L2", [(4, "e")]),
    ]
    await asyncio.wait_for(sender.run(batches), timeout=60)
    by_row = {o.row_index: o for o in outcomes}
    assert sorted(by_row) == [0, 1, 2, 3, 4]
    assert {by_row[i].error_code for i in (0, 1)} == {Code.NOT_INSTALLED}
    assert {by_row[i].status.value for i in (2, 3, 4)} == {"created"}

"""``pipeline check``'s requests: one search per location, in the order a run would send.

Each location gets one ``ConversationsClient.probe`` (``GET /conversations/search`` with
``limit=1`` and the location's token). The order is a run's: the very first request goes
alone and is tried again while no connection can be made, until the run's own rule
(``guards.Reachability``: ``MAX_CONNECT_FAILURES``) says the API is unreachable; then each
token's first request goes alone, and a token the API rejects (401) costs one request
however many locations it serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import structlog

from pipeline.app.job import Job
from pipeline.auth.signing import signer_for
from pipeline.auth.tokens import Tokens
from pipeline.core.outcomes import Code
from pipeline.highlevel.answers import Answer
from pipeline.highlevel.client import ConversationsClient
from pipeline.send.guards import Reachability

log = structlog.get_logger("pipeline.app.probing")

# Probes in flight at once: enough to check hundreds of locations in seconds, few enough
# that the check never looks like a burst to anyone watching the API.
PROBE_CONCURRENCY = 16
# Waits before the second and third try of the very first request when no connection could
# be made: a server that is starting gets a moment, a wrong URL costs under two seconds.
CONNECT_RETRY_WAITS_S = (0.5, 1.0)


@dataclass(frozen=True, slots=True)
class Probes:
    """What the requests found: an answer per location probed, the locations left out
    because their token was rejected on another one (with that one), and the connection
    failure that stopped everything, if one did."""

    answers: dict[str, Answer] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    unreachable: Answer | None = None
    latency_s: dict[str, float] = field(default_factory=dict)  # each answer's round trip


async def probe_locations(
    probe: Callable[[str], Awaitable[Answer]],
    groups: Sequence[Sequence[str]],
    *,
    concurrency: int = PROBE_CONCURRENCY,
    connect_waits: Sequence[float] = CONNECT_RETRY_WAITS_S,
) -> Probes:
    """Probe every location once; ``groups`` holds the locations of each token.

    The very first request goes alone and is tried again (after ``connect_waits``, the
    last one repeated) while no connection can be made at all; once ``Reachability`` says
    the API is unreachable, nothing else is sent. Then each token's first request goes
    alone: only an answer below 500 decides (a 5xx or a timeout says nothing about the
    token, so the token's next location goes alone in turn). A rejected token's remaining
    locations get no request; an accepted one's go together, ``concurrency`` requests at
    most in flight across all tokens.
    """
    tokens = [list(g) for g in groups if g]
    if not tokens:
        return Probes()
    first_location = tokens[0][0]
    reach = Reachability()
    waits = iter(connect_waits)
    while True:
        first = await probe(first_location)
        if reach.lost(first):
            return Probes(unreachable=first)
        if not first.connect_failed:
            break
        wait = next(waits, connect_waits[-1] if connect_waits else 0.0)
        log.debug("no connection; trying again", wait_s=wait, cause=first.message)
        await asyncio.sleep(wait)

    answers: dict[str, Answer] = {first_location: first}
    rejected: dict[str, str] = {}
    slots = asyncio.Semaphore(concurrency)

    async def one(location: str) -> Answer:
        async with slots:
            answer = await probe(location)
        answers[location] = answer
        return answer

    async def token(locations: list[str], last: Answer | None) -> None:
        asked, rest = (locations[0], locations[1:]) if last is not None else ("", locations)
        while (last is None or not last.decisive) and rest:
            asked, rest = rest[0], rest[1:]
            last = await one(asked)
        if last is not None and last.code is Code.UNAUTHORIZED:
            rejected.update(dict.fromkeys(rest, asked))
            return
        await asyncio.gather(*(one(location) for location in rest))

    await asyncio.gather(token(tokens[0], first), *(token(g, None) for g in tokens[1:]))
    return Probes(answers, rejected)


async def probe_all(job: Job, tokens: Tokens, groups: list[list[str]]) -> Probes:
    """Probe the locations of ``groups`` (one list a token) with the job's client, timing
    each answer."""
    if not groups:
        return Probes()
    fixed = job.config.concurrency
    probes_at_once = PROBE_CONCURRENCY if fixed == "auto" else min(PROBE_CONCURRENCY, fixed)
    async with ConversationsClient(
        base_url=job.config.base_url,
        signer=signer_for(
            tokens,
            base_url=job.config.base_url,
            api_version=job.config.api_version,
            timeout=job.config.timeout,
        ),
        api_version=job.config.api_version,
        timeout=job.config.timeout,
        concurrency=probes_at_once,
        http_stack=job.config.http_stack,
    ) as client:
        loop = asyncio.get_running_loop()
        latency: dict[str, float] = {}

        async def timed(location: str) -> Answer:
            sent = loop.time()
            answer = await client.probe(location)
            latency[location] = loop.time() - sent
            return answer

        probes = await probe_locations(timed, groups, concurrency=probes_at_once)
        return replace(probes, latency_s=latency)

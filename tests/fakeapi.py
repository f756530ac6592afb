"""HighLevel's two conversation endpoints as an in-memory ``Transport``, in event-loop time.

The way httpx's ``MockTransport`` lets httpx be tested without a network: the real
``ConversationsClient`` (and its classification of answers) runs over this transport, and
the ``Sender`` over that client, inside one event loop whose clock a test fast-forwards
(``looptime``). A 10-second rate window passes in microseconds, so a case like "a refused
location while another carries on" is a fast unit test.

It answers the way the live API does (the README's "Retries, limits and a rejected token"
and "The sandbox"): the "already exists" 400 with a trace id after the text, a
``traceId`` in every body, the five rate headers on every answer, a sliding window counted
at arrival, 429 past it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import orjson

from pipeline.core import constants
from pipeline.highlevel.transport import RawAnswer, TransportFailure

TOKEN = "fake-token"


@dataclass(frozen=True, slots=True)
class Request:
    t: float  # loop time at which the server counted it (arrival)
    method: str
    location_id: str
    contact_id: str | None
    token: str | None
    status: int = 0


@dataclass
class FakeHighLevel:
    """Tunable like the sandbox; every field may be changed while a test runs."""

    limit: tuple[int, float] = (100, 10.0)  # announced and enforced per location
    latency_s: float = 0.08
    daily_limit: int = 200_000
    tokens: frozenset[str] = frozenset({TOKEN})
    location_tokens: Mapping[str, str] = field(default_factory=dict)  # location -> its token
    no_search_scope: frozenset[str] = frozenset()  # tokens without conversations.readonly
    unreachable: bool = False  # every request fails to connect
    # Every request is held this long and then times out (a server that keeps connections
    # open and answers nothing); None: answered. ``float("inf")``: held for ever, no timeout
    # (a transport that never gives up: the run itself is stuck).
    hang_s: float | None = None
    # A status to answer instead of the real one (500, 429...), by request; None: real answer.
    fault: Callable[[Request], int | None] = lambda _request: None
    retry_after_s: int | None = None  # sent with a fault's 429
    default_token: str = TOKEN  # what a request without an Authorization header carries
    requests: list[Request] = field(default_factory=list)
    conversations: dict[tuple[str, str], str] = field(default_factory=dict)
    _windows: dict[str, list[float]] = field(default_factory=dict)
    _daily: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    # -- the Transport protocol ---------------------------------------------------------

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RawAnswer:
        data = orjson.loads(body)
        return await self._serve("POST", data["locationId"], data["contactId"], headers)

    async def get(
        self, path: str, params: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> RawAnswer:
        return await self._serve("GET", params["locationId"], params.get("contactId"), headers)

    async def aclose(self) -> None:
        return None

    # -- the server ---------------------------------------------------------------------

    def seed(self, location_id: str, contact_id: str) -> str:
        """A conversation that exists before the run."""
        conversation = f"pre{next(self._ids)}"
        self.conversations[(location_id, contact_id)] = conversation
        return conversation

    def by_status(self, method: str = "POST") -> dict[int, int]:
        counts: dict[int, int] = {}
        for request in self.requests:
            if request.method == method:
                counts[request.status] = counts.get(request.status, 0) + 1
        return counts

    async def _serve(
        self, method: str, location: str, contact: str | None, headers: Mapping[str, str] | None
    ) -> RawAnswer:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.latency_s / 2)
        if self.unreachable:
            raise TransportFailure(
                "ClientConnectorError: Cannot connect to host fake:443", timeout=False, connect=True
            )
        if self.hang_s is not None:
            await asyncio.sleep(self.hang_s if self.hang_s != float("inf") else 1e9)
            raise TransportFailure("ServerTimeoutError: timed out", timeout=True, connect=False)
        auth = (headers or {}).get("Authorization")
        token = auth.removeprefix("Bearer ") if auth else self.default_token
        request = Request(loop.time(), method, location, contact, token)
        status, body, rate = self._decide(request)
        self.requests.append(Request(request.t, method, location, contact, token, status))
        await asyncio.sleep(self.latency_s / 2)
        trace = f"{next(self._ids):08x}-0000-4000-8000-000000000000"
        body = orjson.dumps({**body, constants.TRACE_ID_KEY: trace})
        return RawAnswer(status, rate, body)

    def _decide(self, request: Request) -> tuple[int, dict[str, object], dict[str, str]]:
        location, now = request.location_id, request.t
        window = self._windows.setdefault(location, [])
        max_requests, interval_s = self.limit
        window[:] = [t for t in window if t > now - interval_s]
        daily = self._daily.get(location, 0)

        def rate() -> dict[str, str]:
            return {
                constants.H_LIMIT_DAILY: str(self.daily_limit),
                constants.H_DAILY_REMAINING: str(
                    max(0, self.daily_limit - self._daily.get(location, 0))
                ),
                constants.H_INTERVAL_MS: str(round(interval_s * 1000)),
                constants.H_MAX: str(max_requests),
                constants.H_REMAINING: str(max(0, max_requests - len(window))),
            }

        if request.token not in self.tokens:
            return (
                401,
                {"statusCode": 401, "message": "Invalid token: access token is invalid"},
                rate(),
            )
        if request.method == "GET" and request.token in self.no_search_scope:
            message = "The token is not authorized for this scope."
            return 401, {"statusCode": 401, "message": message}, rate()
        bound = self.location_tokens.get(location)
        if bound is not None and bound != request.token:
            message = "The token does not have access to this location."
            return 403, {"statusCode": 403, "message": message}, rate()
        injected = self.fault(request)
        if injected == 429 or daily >= self.daily_limit or len(window) >= max_requests:
            headers = rate()
            if injected == 429 and self.retry_after_s is not None:
                headers[constants.H_RETRY_AFTER] = str(self.retry_after_s)
            return 429, {"statusCode": 429, "message": "Too Many Requests"}, headers
        window.append(now)
        self._daily[location] = daily + 1
        if injected is not None:
            return injected, {"statusCode": injected, "message": "Internal Server Error"}, rate()
        key = (location, request.contact_id or "")
        if request.method == "GET":
            found = self.conversations.get(key)
            items = [{"id": found, "contactId": request.contact_id}] if found else []
            return 200, {"conversations": items, "total": len(items)}, rate()
        if key in self.conversations:
            message = (
                f"{constants.EXISTS_MESSAGE_PREFIX}{request.contact_id}"
                f"{constants.EXISTS_MESSAGE_MARK} cbf699cb-28e6-42d8-b49b-f6731af2560b"
            )
            return 400, {"statusCode": 400, "message": message}, rate()
        self.conversations[key] = f"conv{next(self._ids)}"
        conversation = {"id": self.conversations[key], "contactId": request.contact_id}
        return 201, {"success": True, "conversation": conversation}, rate()

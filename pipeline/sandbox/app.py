"""The sandbox's HTTP face: HighLevel's create and search endpoints, rules in HighLevel's order.

Both routes first meet the checks of ``gates.py`` (authentication, ``Version``, token class
and scope, body or query, location access), each failure answering at once.

None of these takes a rate slot. A create then meets the injected 429, the rate window and
daily quota (429), the other injected faults, and finally "already exists" (400, worded as
the live API does: ``Conversation with the contact id:<id> already exists! <traceId>``) or
creation (``create_status``). A search meets the rate window and daily quota, then answers
200. Rate headers go on every answer whose location is known, because a client's limiter
reads them from any answer. Every JSON answer ends with a fresh ``traceId`` (uuid4); only
the injected 502 gateway page (HTML) and dropped connections carry none. The answers' JSON
is shaped in ``conversations.py``.

Every API request is logged when its outcome is decided, with a label of its token (never
the token). Its latency (one draw, see ``latency.py``) is split around that: a share passes
before the request arrives (its logged time ``t``, its rate-limit slot, its create), the rest
before the answer leaves, so requests sent in one order may arrive in another, as on a real
network.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from pipeline.core.constants import H_RETRY_AFTER, H_VERSION, SCOPE_READ, SCOPE_WRITE
from pipeline.sandbox.bodies import JsonTemplate, TraceIds, with_trace
from pipeline.sandbox.config import SandboxConfig
from pipeline.sandbox.conversations import (
    conversation_json,
    exists_message,
    parse_create_body,
    search_item_json,
    search_limit,
)
from pipeline.sandbox.faults import (
    BAD_GATEWAY_BODY,
    SERVER_ERROR,
    Fault,
    FaultPicker,
    break_body,
)
from pipeline.sandbox.gates import (
    Caller,
    Refusal,
    bearer_token,
    conversation_refusal,
    field_problems,
    unprocessable,
)
from pipeline.sandbox.latency import Network
from pipeline.sandbox.limits import admit, peek
from pipeline.sandbox.oauth import OAuthStore
from pipeline.sandbox.state import Conversation, SandboxState, TokenLabels

JSON = "application/json"
TOO_MANY = JsonTemplate({"statusCode": 429, "message": "Too Many Requests"})
# Retry-After on an injected 429, when the window itself would have a free slot.
SPURIOUS_RETRY_AFTER_S = 1


class Sandbox:
    """Config, state and fault source of one sandbox, plus its request handlers.

    Lives on a single event loop; everything here runs without locks for that reason.
    The config is an immutable value replaced wholesale, so a handler sees one consistent
    config even if an update lands while it sleeps.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._config = config or SandboxConfig()
        self._tokens = self._config.accepted_tokens
        self._scopes = self._config.granted_scopes
        self.state = SandboxState()
        self.faults = FaultPicker(self._config)
        self._network = Network(self._config.seed)
        self._trace = TraceIds()
        self._labels = TokenLabels()
        self._closing = asyncio.Event()
        self.oauth = OAuthStore()
        self.oauth.apply(self._config)

    # -- control ----------------------------------------------------------------------------

    @property
    def config(self) -> SandboxConfig:
        """The current config (immutable; use ``update_config`` to change it)."""
        return self._config

    def update_config(self, **fields: Any) -> SandboxConfig:
        """Change some fields at runtime; windows and conversations are kept.

        Raises ValueError for unknown fields or bad values. A new ``seed`` restarts the
        fault and latency sequences.
        """
        config = self._config.updated(**fields)
        self._config = config
        self._tokens = config.accepted_tokens
        self._scopes = config.granted_scopes
        self.faults.configure(config)
        self.oauth.apply(config)
        if "seed" in fields:
            self.faults.reseed(config.seed)
            self._network.reseed(config.seed)
        return config

    def reset(self) -> None:
        """Clear conversations, log and windows; replay faults and latencies from the seed; OAuth
        grants restart from the configured refresh tokens, minted tokens are forgotten."""
        self.state.reset()
        self.oauth.reset(self._config)
        self.faults.reseed(self._config.seed)
        self._network.reseed(self._config.seed)

    def seed_conversations(self, pairs: Iterable[tuple[str, str]]) -> list[Conversation]:
        """Pre-existing conversations (already indexed, no rate accounting), for demos."""
        out = []
        for location, contact in pairs:
            found = self.state.find(location, contact)
            out.append(found or self.state.create(location, contact, float("-inf")))
        return out

    def release_hangs(self) -> None:
        """Let hanging handlers answer now, so shutdown does not wait ``hang_s``."""
        self._closing.set()

    # -- plumbing (shared with the OAuth handlers: oauth_grant.py, oauth_agency.py) -------

    def accepts_static(self, token: str) -> bool:
        """Whether a token the sandbox did not mint passes authentication (``tokens``, or any
        non-empty token when that list is empty)."""
        return not self._tokens or token in self._tokens

    def trace_id(self) -> str:
        """A fresh trace id for one answer."""
        return self._trace()

    async def hold(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the sandbox is shutting down (so close() is quick)."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def arrive(self, request: web.Request) -> float:
        """Hold a request for its way in; its arrival time, which every rule counts by."""
        return await self._network.arrive(request, self._config.latency)

    def record(
        self,
        request: web.Request,
        token: str | None,
        now: float,
        location: str | None,
        status: int,
        fault: Fault | None,
    ) -> None:
        """Log one API request, naming its token by label (``TokenLabels``), never itself."""
        self.state.record(
            now, request.method, request.path, location, status, fault, self._labels(token)
        )

    async def answer(
        self,
        request: web.Request,
        token: str | None,
        config: SandboxConfig,
        now: float,
        location: str | None,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        fault: Fault | None = None,
        content_type: str = JSON,
        hold_s: float = 0.0,
    ) -> web.Response:
        """Log the request's outcome, wait ``hold_s`` (an answer held on purpose, after its
        effect), then the answer's way back (the rest of the latency ``arrive`` drew)."""
        self.record(request, token, now, location, status, fault)
        if hold_s > 0:
            await self.hold(hold_s)
        await self._network.depart(request, config.latency)
        return web.Response(status=status, body=body, headers=headers, content_type=content_type)

    def rate_headers(
        self, config: SandboxConfig, resource: str | None, now: float
    ) -> dict[str, str]:
        """The rate headers of a resource (location or company) for an answer that takes no
        slot; none when the resource is not known."""
        if resource is None:
            return {}
        return peek(self.state.counters(resource), config, now)

    def caller(self, request: web.Request) -> Caller:
        """Who asks, as the gates judge it (see ``gates.Caller``)."""
        token = bearer_token(request)
        return Caller(
            token,
            None if token is None else self.oauth.access(token),
            token is not None and self.accepts_static(token),
            request.headers.get(H_VERSION, "").strip(),
        )

    async def refuse(
        self,
        request: web.Request,
        token: str | None,
        config: SandboxConfig,
        now: float,
        refusal: Refusal,
        location: str | None = None,
        headers: dict[str, str] | None = None,
        problems: list[str] | None = None,
    ) -> web.Response:
        """A gate's refusal with a fresh trace id (a 422 lists ``problems``), logged like
        any answer."""
        status, template = refusal
        trace_id = self._trace()
        body = template(trace_id) if template else unprocessable(problems or [], trace_id)
        return await self.answer(request, token, config, now, location, status, body, headers)

    async def gate(
        self,
        request: web.Request,
        caller: Caller,
        config: SandboxConfig,
        now: float,
        refusal: Refusal | None,
        rate_key: str | None,
        location: str | None = None,
        problems: list[str] | None = None,
    ) -> web.Response | None:
        """Answer a gate's decision (``gates.py``): nothing when it lets the request on, else
        the refusal, which takes no rate slot but shows the rate headers of ``rate_key`` (a
        location or a company) when known."""
        if refusal is None:
            return None
        headers = self.rate_headers(config, rate_key, now)
        return await self.refuse(
            request, caller.token, config, now, refusal, location, headers, problems
        )

    async def _check(
        self,
        request: web.Request,
        caller: Caller,
        config: SandboxConfig,
        now: float,
        location: str | None,
        problems: list[str],
        scope: str,
    ) -> web.Response | None:
        """The checks of both conversation routes (``gates.conversation_refusal``)."""
        refusal = conversation_refusal(
            caller, now, scope, self._scopes, problems, location, config.location_tokens
        )
        return await self.gate(request, caller, config, now, refusal, location, location, problems)

    async def too_many(
        self,
        request: web.Request,
        token: str | None,
        config: SandboxConfig,
        now: float,
        location: str | None,
        headers: dict[str, str],
        retry_after_s: int | None,
        fault: Fault | None = None,
    ) -> web.Response:
        """The 429 of a full window or spent daily quota; ``location`` is what the request log
        shows (None for a company's request), ``headers`` the window's rate headers."""
        if config.retry_after and retry_after_s is not None:
            headers[H_RETRY_AFTER] = str(retry_after_s)
        return await self.answer(
            request, token, config, now, location, 429, TOO_MANY(self._trace()), headers, fault
        )

    # -- API handlers -----------------------------------------------------------------------

    async def create_conversation(self, request: web.Request) -> web.Response:
        """``POST /conversations/``."""
        now = await self.arrive(request)
        config = self._config
        caller = self.caller(request)
        token = caller.token
        location, contact, problems = parse_create_body(await request.read())
        refused = await self._check(request, caller, config, now, location, problems, SCOPE_WRITE)
        if refused is not None:
            return refused
        assert location is not None and contact is not None  # _check answered 422 otherwise

        fault = self.faults.pick()
        counters = self.state.counters(location)
        if fault is Fault.RATE_LIMIT:
            headers = peek(counters, config, now)
            return await self.too_many(
                request, token, config, now, location, headers, SPURIOUS_RETRY_AFTER_S, fault
            )
        decision = admit(counters, config, now)
        if not decision.allowed:
            return await self.too_many(
                request, token, config, now, location, decision.headers, decision.retry_after_s
            )
        headers = decision.headers

        if fault is Fault.SERVER_ERROR:
            body = SERVER_ERROR(self._trace())
            return await self.answer(
                request, token, config, now, location, 500, body, headers, fault
            )
        if fault is Fault.DROP:
            self.record(request, token, now, location, 0, fault)
            await self._network.depart(request, config.latency)
            if request.transport is not None:
                request.transport.close()
            # Writing to the closed transport fails quietly inside aiohttp; nothing is sent.
            return web.Response(status=500)

        trace_id = self._trace()
        existing = self.state.find(location, contact)
        if existing is not None:
            status = 400
            body = with_trace(
                {"statusCode": 400, "message": exists_message(contact, trace_id)}, trace_id
            )
        else:
            created = self.state.create(location, contact, now)
            status = config.create_status
            body = with_trace(
                {"success": True, "conversation": conversation_json(created)}, trace_id
            )

        if fault is Fault.BAD_GATEWAY:
            # Gateway page: no JSON, no rate headers, as a proxy in front of the API answers.
            return await self.answer(
                request,
                token,
                config,
                now,
                location,
                502,
                BAD_GATEWAY_BODY,
                None,
                fault,
                "text/html",
            )
        if fault is Fault.BROKEN_BODY:
            body = break_body(body)
        elif fault is Fault.HANG:
            await self.hold(config.hang_s)
        return await self.answer(
            request, token, config, now, location, status, body, headers, fault
        )

    async def search_conversations(self, request: web.Request) -> web.Response:
        """``GET /conversations/search?locationId=…[&contactId=…][&limit=…]``."""
        now = await self.arrive(request)
        config = self._config
        caller = self.caller(request)
        token = caller.token
        query = request.query
        raw_location = query.get("locationId")
        location = raw_location if raw_location and raw_location.strip() else None
        contact = query.get("contactId") or None
        problems = field_problems("locationId", raw_location)
        refused = await self._check(request, caller, config, now, location, problems, SCOPE_READ)
        if refused is not None:
            return refused
        assert location is not None

        decision = admit(self.state.counters(location), config, now)
        if not decision.allowed:
            return await self.too_many(
                request, token, config, now, location, decision.headers, decision.retry_after_s
            )
        limit = search_limit(query)
        found, total = self.state.search(location, contact, now - config.search_lag_s, limit)
        body = with_trace(
            {"conversations": [search_item_json(c) for c in found], "total": total},
            self._trace(),
        )
        return await self.answer(request, token, config, now, location, 200, body, decision.headers)

    async def not_found(self, request: web.Request) -> web.Response:
        """Any other route: NestJS's 404 shape."""
        now = time.monotonic()
        body = with_trace(
            {
                "statusCode": 404,
                "message": f"Cannot {request.method} {request.path}",
                "error": "Not Found",
            },
            self._trace(),
        )
        if not request.path.startswith("/_sandbox"):
            self.record(request, bearer_token(request), now, None, 404, None)
        return web.Response(status=404, body=body, content_type=JSON)

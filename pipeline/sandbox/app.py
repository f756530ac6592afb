"""The sandbox's HTTP face: HighLevel's create and search endpoints, rules in HighLevel's order.

A create request is checked in this order, each failure answering at once:
authentication (401), ``Version`` header (400), body (422), location access (403),
injected 429, rate window / daily quota (429), then the injected faults, then
"already exists" (400) or creation (``create_status``). Rate headers go on every answer
whose location is known, because a client's limiter reads them from any answer.
Every API request is logged when its outcome is decided; the configured latency is
applied after that, just before answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from pipeline.constants import (
    EXISTS_MESSAGE_PREFIX,
    EXISTS_MESSAGE_MARK,
    H_RETRY_AFTER,
    H_VERSION,
)
from pipeline.sandbox.config import SandboxConfig
from pipeline.sandbox.faults import (
    BAD_GATEWAY_BODY,
    SERVER_ERROR_BODY,
    Fault,
    FaultPicker,
    break_body,
)
from pipeline.sandbox.limits import admit, peek
from pipeline.sandbox.state import Conversation, SandboxState

JSON = "application/json"

UNAUTHORIZED_BODY = (
    b'{"statusCode":401,"message":"Invalid token: access token is invalid","error":"Unauthorized"}'
)
FORBIDDEN_BODY = (
    b'{"statusCode":403,"message":"The token does not have access to this location.",'
    b'"error":"Forbidden"}'
)
VERSION_BODY = b'{"statusCode":400,"message":"Version header is required"}'
TOO_MANY_BODY = b'{"statusCode":429,"message":"Too Many Requests"}'
# Retry-After on an injected 429, when the window itself would have a free slot.
SPURIOUS_RETRY_AFTER_S = 1
SEARCH_DEFAULT_LIMIT = 20
SEARCH_MAX_LIMIT = 100


def dumps(payload: Any) -> bytes:
    """Compact JSON, as the API sends it."""
    return json.dumps(payload, separators=(",", ":")).encode()


def exists_message(contact_id: str) -> str:
    """HighLevel's exact wording for a duplicate create."""
    return f"{EXISTS_MESSAGE_PREFIX}{contact_id}{EXISTS_MESSAGE_MARK}"


def _unprocessable(messages: list[str]) -> bytes:
    return dumps({"statusCode": 422, "message": messages, "error": "Unprocessable Entity"})


def _field_problems(name: str, value: object) -> list[str]:
    """class-validator style messages, as HighLevel's NestJS backend words them."""
    if value is None:
        return [f"{name} must be a string", f"{name} should not be empty"]
    if not isinstance(value, str):
        return [f"{name} must be a string"]
    if not value.strip():
        return [f"{name} should not be empty"]
    return []


def parse_create_body(raw: bytes) -> tuple[str | None, str | None, list[str]]:
    """``(locationId, contactId, problems)``; ids are None unless usable strings."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {}
    location, contact = data.get("locationId"), data.get("contactId")
    problems = _field_problems("locationId", location) + _field_problems("contactId", contact)
    return (
        location if isinstance(location, str) and location.strip() else None,
        contact if isinstance(contact, str) and contact.strip() else None,
        problems,
    )


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    value = request.headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    """The create answer's ``conversation`` object."""
    return {
        "id": conversation.id,
        "dateUpdated": conversation.date_updated,
        "dateAdded": conversation.date_added,
        "deleted": False,
        "contactId": conversation.contact_id,
        "locationId": conversation.location_id,
        "lastMessageDate": None,
        "assignedTo": None,
    }


def search_item_json(conversation: Conversation) -> dict[str, Any]:
    """One search hit; the fields a migration tool can use plus a few the spec requires."""
    return {
        "id": conversation.id,
        "contactId": conversation.contact_id,
        "locationId": conversation.location_id,
        "dateAdded": conversation.date_added,
        "dateUpdated": conversation.date_updated,
        "deleted": False,
        "assignedTo": None,
        "lastMessageBody": "",
        "type": "TYPE_PHONE",
        "unreadCount": 0,
    }


class Sandbox:
    """Config, state and fault source of one sandbox, plus its request handlers.

    Lives on a single event loop; everything here runs without locks for that reason.
    The config is an immutable value replaced wholesale, so a handler sees one consistent
    config even if an update lands while it sleeps.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._config = config or SandboxConfig()
        self._tokens = self._config.accepted_tokens
        self.state = SandboxState()
        self.faults = FaultPicker(self._config)
        self._jitter = random.Random(self._config.seed)
        self._closing = asyncio.Event()

    # -- control ----------------------------------------------------------------------------

    @property
    def config(self) -> SandboxConfig:
        """The current config (immutable; use ``update_config`` to change it)."""
        return self._config

    def update_config(self, **fields: Any) -> SandboxConfig:
        """Change some fields at runtime; windows and conversations are kept.

        Raises ValueError for unknown fields or bad values. A new ``seed`` restarts the
        fault sequence.
        """
        config = self._config.updated(**fields)
        self._config = config
        self._tokens = config.accepted_tokens
        self.faults.configure(config)
        if "seed" in fields:
            self.faults.reseed(config.seed)
            self._jitter.seed(config.seed)
        return config

    def reset(self) -> None:
        """Clear conversations, log and windows, and replay faults from the seed."""
        self.state.reset()
        self.faults.reseed(self._config.seed)
        self._jitter.seed(self._config.seed)

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

    # -- plumbing ---------------------------------------------------------------------------

    async def _delay(self, config: SandboxConfig) -> None:
        ms = config.latency_ms
        if config.latency_jitter_ms:
            ms += self._jitter.uniform(0.0, config.latency_jitter_ms)
        if ms > 0:
            await asyncio.sleep(ms / 1000.0)

    async def _answer(
        self,
        request: web.Request,
        config: SandboxConfig,
        now: float,
        location: str | None,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        fault: Fault | None = None,
        content_type: str = JSON,
    ) -> web.Response:
        self.state.record(now, request.method, request.path, location, status, fault)
        await self._delay(config)
        return web.Response(status=status, body=body, headers=headers, content_type=content_type)

    def _peek(self, config: SandboxConfig, location: str | None, now: float) -> dict[str, str]:
        if location is None:
            return {}
        return peek(self.state.counters(location), config, now)

    async def _gate(
        self,
        request: web.Request,
        config: SandboxConfig,
        now: float,
        location: str | None,
        problems: list[str],
    ) -> web.Response | None:
        """Auth, Version, validation and location access: the checks shared by both routes."""
        token = bearer_token(request)
        if token is None or (self._tokens and token not in self._tokens):
            return await self._answer(
                request,
                config,
                now,
                location,
                401,
                UNAUTHORIZED_BODY,
                self._peek(config, location, now),
            )
        if not request.headers.get(H_VERSION, "").strip():
            return await self._answer(
                request, config, now, location, 400, VERSION_BODY, self._peek(config, location, now)
            )
        if problems or location is None:
            return await self._answer(
                request,
                config,
                now,
                location,
                422,
                _unprocessable(problems),
                self._peek(config, location, now),
            )
        bound = config.location_tokens.get(location)
        if bound is not None and token != bound:
            return await self._answer(
                request,
                config,
                now,
                location,
                403,
                FORBIDDEN_BODY,
                self._peek(config, location, now),
            )
        return None

    async def _too_many(
        self,
        request: web.Request,
        config: SandboxConfig,
        now: float,
        location: str,
        headers: dict[str, str],
        retry_after_s: int | None,
        fault: Fault | None = None,
    ) -> web.Response:
        if config.retry_after and retry_after_s is not None:
            headers[H_RETRY_AFTER] = str(retry_after_s)
        return await self._answer(
            request, config, now, location, 429, TOO_MANY_BODY, headers, fault
        )

    # -- API handlers -----------------------------------------------------------------------

    async def create_conversation(self, request: web.Request) -> web.Response:
        """``POST /conversations/``."""
        now = time.monotonic()
        config = self._config
        location, contact, problems = parse_create_body(await request.read())
        refused = await self._gate(request, config, now, location, problems)
        if refused is not None:
            return refused
        assert location is not None and contact is not None  # _gate answered 422 otherwise

        fault = self.faults.pick()
        counters = self.state.counters(location)
        if fault is Fault.RATE_LIMIT:
            headers = peek(counters, config, now)
            return await self._too_many(
                request, config, now, location, headers, SPURIOUS_RETRY_AFTER_S, fault
            )
        decision = admit(counters, config, now)
        if not decision.allowed:
            return await self._too_many(
                request, config, now, location, decision.headers, decision.retry_after_s
            )
        headers = decision.headers

        if fault is Fault.SERVER_ERROR:
            return await self._answer(
                request, config, now, location, 500, SERVER_ERROR_BODY, headers, fault
            )
        if fault is Fault.DROP:
            self.state.record(now, request.method, request.path, location, 0, fault)
            await self._delay(config)
            if request.transport is not None:
                request.transport.close()
            # Writing to the closed transport fails quietly inside aiohttp; nothing is sent.
            return web.Response(status=500)

        existing = self.state.find(location, contact)
        if existing is not None:
            status = 400
            body = dumps({"statusCode": 400, "message": exists_message(contact)})
        else:
            created = self.state.create(location, contact, now)
            status = config.create_status
            body = dumps({"success": True, "conversation": conversation_json(created)})

        if fault is Fault.BAD_GATEWAY:
            # Gateway page: no JSON, no rate headers, as a proxy in front of the API answers.
            return await self._answer(
                request, config, now, location, 502, BAD_GATEWAY_BODY, None, fault, "text/html"
            )
        if fault is Fault.BROKEN_BODY:
            body = break_body(body)
        elif fault is Fault.HANG:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), config.hang_s)
        return await self._answer(request, config, now, location, status, body, headers, fault)

    async def search_conversations(self, request: web.Request) -> web.Response:
        """``GET /conversations/search?locationId=…[&contactId=…][&limit=…]``."""
        now = time.monotonic()
        config = self._config
        query = request.query
        raw_location = query.get("locationId")
        location = raw_location if raw_location and raw_location.strip() else None
        contact = query.get("contactId") or None
        problems = _field_problems("locationId", raw_location)
        refused = await self._gate(request, config, now, location, problems)
        if refused is not None:
            return refused
        assert location is not None

        decision = admit(self.state.counters(location), config, now)
        if not decision.allowed:
            return await self._too_many(
                request, config, now, location, decision.headers, decision.retry_after_s
            )
        try:
            limit = int(query.get("limit", SEARCH_DEFAULT_LIMIT))
        except ValueError:
            limit = SEARCH_DEFAULT_LIMIT
        limit = min(max(limit, 1), SEARCH_MAX_LIMIT)
        found, total = self.state.search(location, contact, now - config.search_lag_s, limit)
        body = dumps({"conversations": [search_item_json(c) for c in found], "total": total})
        return await self._answer(request, config, now, location, 200, body, decision.headers)

    async def not_found(self, request: web.Request) -> web.Response:
        """Any other route: NestJS's 404 shape."""
        now = time.monotonic()
        body = dumps(
            {
                "statusCode": 404,
                "message": f"Cannot {request.method} {request.path}",
                "error": "Not Found",
            }
        )
        if not request.path.startswith("/_sandbox"):
            self.state.record(now, request.method, request.path, None, 404, None)
        return web.Response(status=404, body=body, content_type=JSON)

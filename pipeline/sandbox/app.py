"""The sandbox's HTTP face: HighLevel's create and search endpoints, rules in HighLevel's order.

Both routes check, in this order, each failure answering at once:

1. authentication: 401 ``Invalid token: access token is invalid``, or 401 ``Invalid JWT``
   for an access token the sandbox minted that has expired (see ``oauth.py``);
2. ``Version`` header: 400 ``Version header is required`` when missing or blank,
   400 ``version header is invalid`` unless it is one of ``API_VERSIONS``;
3. token class and scope: an agency (Company) OAuth token gets 401 ``This authClass type is
   not allowed to access this scope. ...``; a token without ``conversations.write`` (create)
   or ``conversations.readonly`` (search) gets 401 ``The token is not authorized for this
   scope.`` (``SandboxConfig.token_scopes``, or ``oauth_scopes`` for minted tokens);
4. body or query: 422 with class-validator messages;
5. location access (``location_tokens``, or a minted token's own location): 403.

None of these takes a rate slot. A create then meets the injected 429, the rate window and
daily quota (429), the other injected faults, and finally "already exists" (400, worded as
the live API does: ``Conversation with the contact id:<id> already exists! <traceId>``) or
creation (``create_status``). A search meets the rate window and daily quota, then answers
200. Rate headers go on every answer whose location is known, because a client's limiter
reads them from any answer. Every JSON answer ends with a fresh ``traceId`` (uuid4); only
the injected 502 gateway page (HTML) and dropped connections carry none.
Every API request is logged when its outcome is decided, with a label of its token (never
the token). Its latency (one draw, see ``latency.py``) is split around that: a share passes
before the request arrives (its logged time ``t``, its rate-limit slot, its create), the rest
before the answer leaves, so requests sent in one order may arrive in another, as on a real
network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from pipeline.core.constants import (
    API_VERSIONS,
    EXISTS_MESSAGE_MARK,
    EXISTS_MESSAGE_PREFIX,
    H_RETRY_AFTER,
    H_VERSION,
    SCOPE_READ,
    SCOPE_WRITE,
)
from pipeline.sandbox.bodies import JsonTemplate, TraceIds, with_trace
from pipeline.sandbox.config import USER_TYPE_LOCATION, SandboxConfig
from pipeline.sandbox.faults import (
    BAD_GATEWAY_BODY,
    SERVER_ERROR,
    Fault,
    FaultPicker,
    break_body,
)
from pipeline.sandbox.latency import Network
from pipeline.sandbox.limits import admit, peek
from pipeline.sandbox.oauth import AccessGrant, OAuthStore
from pipeline.sandbox.state import Conversation, SandboxState, TokenLabels

JSON = "application/json"

# Fixed answers; each is called with a fresh trace id, which becomes the body's last key.
UNAUTHORIZED = JsonTemplate(
    {
        "statusCode": 401,
        "message": "Invalid token: access token is invalid",
        "error": "Unauthorized",
    }
)
# An access token the sandbox minted, once expired. HighLevel's gateway answers an expired
# (or otherwise unverifiable) JWT with this short body, as observed live.
INVALID_JWT = JsonTemplate({"statusCode": 401, "message": "Invalid JWT"})
# An agency (Company) OAuth token on a sub-account endpoint, or a location token on an
# agency-only one: HighLevel's IAM refuses the token's class, in these words.
AUTH_CLASS_UNAUTHORIZED = JsonTemplate(
    {
        "statusCode": 401,
        "message": (
            "This authClass type is not allowed to access this scope. "
            "Please verify your IAM configuration if this is not the case."
        ),
        "error": "Unauthorized",
    }
)
SCOPE_UNAUTHORIZED = JsonTemplate(
    {
        "statusCode": 401,
        "message": "The token is not authorized for this scope.",
        "error": "Unauthorized",
    }
)
FORBIDDEN = JsonTemplate(
    {
        "statusCode": 403,
        "message": "The token does not have access to this location.",
        "error": "Forbidden",
    }
)
VERSION_REQUIRED = JsonTemplate({"statusCode": 400, "message": "Version header is required"})
VERSION_INVALID = JsonTemplate({"statusCode": 400, "message": "version header is invalid"})
TOO_MANY = JsonTemplate({"statusCode": 429, "message": "Too Many Requests"})
ACCEPTED_VERSIONS = frozenset(API_VERSIONS)
# Retry-After on an injected 429, when the window itself would have a free slot.
SPURIOUS_RETRY_AFTER_S = 1
SEARCH_DEFAULT_LIMIT = 20
SEARCH_MAX_LIMIT = 100


def exists_message(contact_id: str, trace_id: str) -> str:
    """HighLevel's live wording for a duplicate create: the documented text, then the trace id.

    ``Conversation with the contact id:rTDJGD7SjqDamyzrk5UW already exists! cbf699cb-…``
    """
    return f"{EXISTS_MESSAGE_PREFIX}{contact_id}{EXISTS_MESSAGE_MARK} {trace_id}"


def unprocessable(messages: list[str], trace_id: str) -> bytes:
    """NestJS's 422 for a body or query that fails validation, listing every problem."""
    return with_trace(
        {"statusCode": 422, "message": messages, "error": "Unprocessable Entity"}, trace_id
    )


def field_problems(name: str, value: object) -> list[str]:
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
    problems = field_problems("locationId", location) + field_problems("contactId", contact)
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

    # -- plumbing (shared with the OAuth handlers in oauth_api.py) ---------------------------

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

    async def _gate(
        self,
        request: web.Request,
        token: str | None,
        config: SandboxConfig,
        now: float,
        location: str | None,
        problems: list[str],
        scope: str,
    ) -> web.Response | None:
        """Auth, Version, scope, validation and location access: the checks of both routes.

        Each refusal takes no rate slot but shows the location's rate headers when known.
        A token the sandbox minted (OAuth) is judged by what it was minted for; any other
        token by the config's ``tokens``, ``token_scopes`` and ``location_tokens``.
        """
        template: JsonTemplate | None  # None: the 422, whose body lists the problems
        version = request.headers.get(H_VERSION, "").strip()
        minted: AccessGrant | None = None if token is None else self.oauth.access(token)
        if token is None or (minted is None and self._tokens and token not in self._tokens):
            status, template = 401, UNAUTHORIZED
        elif minted is not None and minted.expired(now):
            status, template = 401, INVALID_JWT
        elif not version:
            status, template = 400, VERSION_REQUIRED
        elif version not in ACCEPTED_VERSIONS:
            status, template = 400, VERSION_INVALID
        elif minted is not None and minted.user_type != USER_TYPE_LOCATION:
            status, template = 401, AUTH_CLASS_UNAUTHORIZED
        elif scope not in (
            minted.scopes if minted is not None else self._scopes.get(token, (scope,))
        ):  # unlisted static tokens: every scope
            status, template = 401, SCOPE_UNAUTHORIZED
        elif problems or location is None:
            status, template = 422, None
        else:
            if minted is not None:
                allowed = minted.location_id == location
            else:
                bound = config.location_tokens.get(location)
                allowed = bound is None or token == bound
            if allowed:
                return None
            status, template = 403, FORBIDDEN
        trace_id = self._trace()
        body = template(trace_id) if template is not None else unprocessable(problems, trace_id)
        headers = self.rate_headers(config, location, now)
        return await self.answer(request, token, config, now, location, status, body, headers)

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
        token = bearer_token(request)
        location, contact, problems = parse_create_body(await request.read())
        refused = await self._gate(request, token, config, now, location, problems, SCOPE_WRITE)
        if refused is not None:
            return refused
        assert location is not None and contact is not None  # _gate answered 422 otherwise

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
        token = bearer_token(request)
        query = request.query
        raw_location = query.get("locationId")
        location = raw_location if raw_location and raw_location.strip() else None
        contact = query.get("contactId") or None
        problems = field_problems("locationId", raw_location)
        refused = await self._gate(request, token, config, now, location, problems, SCOPE_READ)
        if refused is not None:
            return refused
        assert location is not None

        decision = admit(self.state.counters(location), config, now)
        if not decision.allowed:
            return await self.too_many(
                request, token, config, now, location, decision.headers, decision.retry_after_s
            )
        try:
            limit = int(query.get("limit", SEARCH_DEFAULT_LIMIT))
        except ValueError:
            limit = SEARCH_DEFAULT_LIMIT
        limit = min(max(limit, 1), SEARCH_MAX_LIMIT)
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

"""Who may ask: the checks every API request meets before it may take a rate slot.

Each route checks, in this order, each failure answering at once:

1. authentication: 401 ``Invalid token: access token is invalid``, or 401 ``Invalid JWT``
   for an access token the sandbox minted that has expired (see ``oauth.py``);
2. ``Version`` header: 400 ``Version header is required`` when missing or blank,
   400 ``version header is invalid`` unless it is one the route accepts;
3. token class and scope. On the conversation routes (``conversation_refusal``), an agency
   (Company) OAuth token gets 401 ``This authClass type is not allowed to access this
   scope. ...``; a token without ``conversations.write`` (create) or
   ``conversations.readonly`` (search) gets 401 ``The token is not authorized for this
   scope.`` (``SandboxConfig.token_scopes``, or ``oauth_scopes`` for minted tokens). On the
   agency-only OAuth routes (``agency_refusal``), a Private Integration Token gets the scope
   refusal and a location token the authClass one;
4. body or query: 422 with class-validator messages;
5. location access (``location_tokens``, or a minted token's own location): 403.

The checks are decisions only (a ``Refusal``, or None to go on): the handlers answer them,
so that every refusal is logged and shows the rate headers like any other answer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from aiohttp import web

from pipeline.core.constants import API_VERSIONS
from pipeline.sandbox.bodies import JsonTemplate, with_trace
from pipeline.sandbox.config import USER_TYPE_COMPANY, USER_TYPE_LOCATION
from pipeline.sandbox.oauth import AccessGrant

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
ACCEPTED_VERSIONS = frozenset(API_VERSIONS)

# A refusal: its status and fixed answer, or None for the 422, whose body lists the problems.
Refusal = tuple[int, JsonTemplate | None]


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


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: the bearer token, what the sandbox minted it for (None: a token it did not
    mint), whether such a token passes the config's ``tokens``, and the ``Version`` header."""

    token: str | None
    minted: AccessGrant | None
    static_ok: bool
    version: str

    def refusal(self, now: float, versions: Collection[str]) -> Refusal | None:
        """Checks 1 and 2: the token, then its expiry, then the ``Version`` header."""
        if self.token is None or (self.minted is None and not self.static_ok):
            return 401, UNAUTHORIZED
        if self.minted is not None and self.minted.expired(now):
            return 401, INVALID_JWT
        if not self.version:
            return 400, VERSION_REQUIRED
        if self.version not in versions:
            return 400, VERSION_INVALID
        return None


def conversation_refusal(
    caller: Caller,
    now: float,
    scope: str,
    static_scopes: Mapping[str, Collection[str]],
    problems: list[str],
    location: str | None,
    location_tokens: Mapping[str, str],
) -> Refusal | None:
    """Checks 1 to 5 of a conversation route. A token the sandbox minted (OAuth) is judged by
    what it was minted for; any other by ``static_scopes`` and ``location_tokens``."""
    refused = caller.refusal(now, ACCEPTED_VERSIONS)
    if refused is not None:
        return refused
    token, minted = caller.token, caller.minted
    assert token is not None  # refused otherwise
    if minted is not None and minted.user_type != USER_TYPE_LOCATION:
        return 401, AUTH_CLASS_UNAUTHORIZED
    # Unlisted static tokens have every scope.
    if scope not in (minted.scopes if minted is not None else static_scopes.get(token, (scope,))):
        return 401, SCOPE_UNAUTHORIZED
    if problems or location is None:
        return 422, None
    if minted is not None:
        allowed = minted.location_id == location
    else:
        bound = location_tokens.get(location)
        allowed = bound is None or token == bound
    return None if allowed else (403, FORBIDDEN)


def agency_refusal(caller: Caller, now: float, version: str, scope: str) -> Refusal | None:
    """Checks 1 to 3 of an agency-only OAuth route, which takes one ``version`` and only an
    agency (Company) token the sandbox minted, with ``scope``."""
    refused = caller.refusal(now, (version,))
    if refused is not None:
        return refused
    minted = caller.minted
    if minted is None:  # a Private Integration Token: not accepted here
        return 401, SCOPE_UNAUTHORIZED
    if minted.user_type != USER_TYPE_COMPANY:
        return 401, AUTH_CLASS_UNAUTHORIZED
    if scope not in minted.scopes:
        return 401, SCOPE_UNAUTHORIZED
    return None

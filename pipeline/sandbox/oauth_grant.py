"""HighLevel's OAuth token grant, as the OAuth specs (v2 ``oauth.json``, v3 ``oauth-v3.json``)
say; the other OAuth endpoints are in ``oauth_agency.py``, the routes in ``oauth_api.py``.

``POST /oauth/token`` (refresh-token grant): the v2 operation declares no ``Version``
header and takes a form with snake_case fields (``client_id``, ``client_secret``,
``grant_type``, ``refresh_token``, ``user_type``, ``redirect_uri``) and answers snake_case
(``access_token``, ``expires_in``, ...); with ``Version: v3`` it takes the camelCase fields
(``clientId``, ...) as a form or JSON and answers camelCase. Checks, in order, each
answering at once with the v3 spec's documented 400s (``BadRequestDTO``):

1. the body is a form (v2; v3 also JSON): else ``Invalid request: content must be
   application/x-www-form-urlencoded``;
2. ``Missing parameter: clientId`` / ``clientSecret`` / ``grantType``, ``Invalid parameter:
   grantType`` / ``userType``;
3. ``authorization_code``: the sandbox issues no codes, so every code gets the live 401
   ``{"error": "UnAuthorized!", "error_description": "Authorization code not found"}``;
4. ``Missing parameter: refreshToken``; an unknown client id or a wrong secret: ``Invalid
   parameter: clientId`` / ``clientSecret`` (the refresh token is not spent);
5. a refresh token that is not the grant's valid one (spent, superseded, never issued):
   ``Invalid grant: refresh token is invalid``; a ``user_type`` other than the grant's:
   ``Invalid parameter: userType`` (not spent);
6. the rate window of the grant's location or company (429, not spent);
7. rotation: the old refresh token is spent, a new one and a new access token are
   answered (200), after ``oauth_token_delay_s`` if set: the held answer of a crash test.

Every answer is logged like any API request; none carries a token into the log.
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pipeline.core.constants import H_VERSION
from pipeline.sandbox.app import Sandbox
from pipeline.sandbox.bodies import JsonTemplate, with_trace
from pipeline.sandbox.config import USER_TYPE_LOCATION, USER_TYPES, SandboxConfig
from pipeline.sandbox.gates import ACCEPTED_VERSIONS, VERSION_INVALID, Refusal
from pipeline.sandbox.limits import admit
from pipeline.sandbox.oauth import REASON_CLIENT, REASON_RATE_LIMITED, REASON_USER_TYPE, Grant

VERSION_V3 = "v3"
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
GRANT_REFRESH = "refresh_token"
GRANT_CODE = "authorization_code"
GRANT_TYPES = (GRANT_CODE, GRANT_REFRESH, "client_credentials")
TOKEN_TYPE = "Bearer"  # noqa: S105 - the token_type, not a secret

# The token request's v2 (form) field names and their v3 names; messages use the latter,
# as the v3 spec's documented examples do ("Missing parameter: clientId").
V2_TOKEN_FIELDS: Mapping[str, str] = {
    "client_id": "clientId",
    "client_secret": "clientSecret",
    "grant_type": "grantType",
    "code": "code",
    "refresh_token": "refreshToken",
    "user_type": "userType",
    "redirect_uri": "redirectUri",
}
V3_TOKEN_FIELDS = frozenset(V2_TOKEN_FIELDS.values())

# The v3 spec's documented answer for a spent, superseded or unknown refresh token.
INVALID_GRANT = JsonTemplate(
    {"statusCode": 400, "message": "Invalid grant: refresh token is invalid"}
)
# The OAuth server's refusal of a body that is not a form (the v2 spec lists only forms).
FORM_REQUIRED = JsonTemplate(
    {
        "statusCode": 400,
        "message": "Invalid request: content must be application/x-www-form-urlencoded",
    }
)
# What HighLevel answers for an authorization code it does not know (observed live; it
# checks the code before the client credentials). The sandbox issues no codes.
CODE_NOT_FOUND = JsonTemplate(
    {"error": "UnAuthorized!", "error_description": "Authorization code not found"}
)


def bad_request(message: str) -> Refusal:
    """The spec's ``BadRequestDTO``: ``{"statusCode": 400, "message": ...}``."""
    return 400, JsonTemplate({"statusCode": 400, "message": message})


def access_fields(config: SandboxConfig, access: str, v3: bool) -> dict[str, Any]:
    """The first fields of an answer that hands out an access token (v3: camelCase);
    ``expires_in`` as the API writes it, a whole number when it is one."""
    ttl = config.access_token_ttl_s
    return {
        "accessToken" if v3 else "access_token": access,
        "tokenType" if v3 else "token_type": TOKEN_TYPE,
        "expiresIn" if v3 else "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
    }


def parse_form(content_type: str, raw: bytes) -> dict[str, str] | None:
    """A form body's fields (first value of each), or None when the body is not a form."""
    if content_type != FORM:
        return None
    text = raw.decode("utf-8", errors="replace")
    fields: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


def token_request_fields(
    content_type: str, raw: bytes, v3: bool
) -> tuple[dict[str, str] | None, str | None]:
    """``(fields by their v3 names, problem)`` of a token request; fields None on a problem.

    v2 takes only a form with snake_case names; v3 a form or JSON with camelCase names.
    Blank values count as missing, as they would for the live validators.
    """
    if v3 and content_type == JSON_TYPE:
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return None, "Invalid request: body must be a JSON object"
        fields: dict[str, str] = {}
        for name in V3_TOKEN_FIELDS:
            value = data.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                return None, f"Invalid parameter: {name}"
            fields[name] = value
    else:
        form = parse_form(content_type, raw)
        if form is None:
            return None, None  # the caller answers FORM_REQUIRED
        if v3:
            fields = {k: v for k, v in form.items() if k in V3_TOKEN_FIELDS}
        else:
            fields = {V2_TOKEN_FIELDS[k]: v for k, v in form.items() if k in V2_TOKEN_FIELDS}
    return {k: v for k, v in fields.items() if v.strip()}, None


def token_request_problem(fields: Mapping[str, str]) -> str | None:
    """The first documented 400 message a token request earns before any lookup, or None."""
    for name in ("clientId", "clientSecret", "grantType"):
        if name not in fields:
            return f"Missing parameter: {name}"
    if fields["grantType"] not in GRANT_TYPES:
        return "Invalid parameter: grantType"
    if "userType" in fields and fields["userType"] not in USER_TYPES:
        return "Invalid parameter: userType"
    return None


class TokenGrant:
    """The ``POST /oauth/token`` handler of one sandbox, sharing its config, state and
    plumbing."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    async def token(self, request: web.Request) -> web.Response:
        """``POST /oauth/token``: the refresh-token grant (see the module docstring)."""
        sb = self._sandbox
        now = await sb.arrive(request)
        config = sb.config
        raw = await request.read()
        version = request.headers.get(H_VERSION, "").strip()
        if version and version != VERSION_V3 and version not in ACCEPTED_VERSIONS:
            return await sb.refuse(request, None, config, now, (400, VERSION_INVALID))
        v3 = version == VERSION_V3
        fields, problem = token_request_fields(request.content_type, raw, v3)
        if fields is None:
            if problem is None:
                return await sb.refuse(request, None, config, now, (400, FORM_REQUIRED))
            return await sb.refuse(request, None, config, now, bad_request(problem))
        problem = token_request_problem(fields)
        if problem is not None:
            return await sb.refuse(request, None, config, now, bad_request(problem))

        grant_type = fields["grantType"]
        if grant_type == GRANT_CODE:
            if "code" not in fields:
                return await sb.refuse(
                    request, None, config, now, bad_request("Missing parameter: code")
                )
            return await sb.refuse(request, None, config, now, (401, CODE_NOT_FOUND))
        if grant_type != GRANT_REFRESH:  # client_credentials: not something this app does
            return await sb.refuse(
                request, None, config, now, bad_request("Invalid parameter: grantType")
            )
        refresh = fields.get("refreshToken")
        if refresh is None:
            return await sb.refuse(
                request, None, config, now, bad_request("Missing parameter: refreshToken")
            )

        store = sb.oauth
        secret = config.oauth_clients.get(fields["clientId"])
        client_problem = None
        if secret is None:
            client_problem = "Invalid parameter: clientId"
        elif not hmac.compare_digest(secret.encode(), fields["clientSecret"].encode()):
            client_problem = "Invalid parameter: clientSecret"
        grant = store.grant_of(refresh)
        if client_problem is not None:
            key = grant.key if grant is not None else store.refused_reason(refresh)[0]
            store.record_use(now, refresh, False, key, REASON_CLIENT)
            location = grant.location_id if grant is not None else None
            return await sb.refuse(
                request, None, config, now, bad_request(client_problem), location
            )
        if grant is None:
            key, reason = store.refused_reason(refresh)
            store.record_use(now, refresh, False, key, reason)
            return await sb.refuse(request, None, config, now, (400, INVALID_GRANT))
        user_type = fields.get("userType")
        if user_type is not None and user_type != grant.user_type:
            store.record_use(now, refresh, False, grant.key, REASON_USER_TYPE)
            headers = sb.rate_headers(config, grant.rate_key, now)
            return await sb.refuse(
                request,
                None,
                config,
                now,
                bad_request("Invalid parameter: userType"),
                grant.location_id,
                headers,
            )

        decision = admit(sb.state.counters(grant.rate_key), config, now)
        if not decision.allowed:
            store.record_use(now, refresh, False, grant.key, REASON_RATE_LIMITED)
            return await sb.too_many(
                request,
                None,
                config,
                now,
                grant.location_id,
                decision.headers,
                decision.retry_after_s,
            )
        new_refresh = store.rotate(grant)
        store.record_use(now, refresh, True, grant.key, None)
        access = store.mint(
            grant.user_type, grant.location_id, grant.company_id, grant.user_id, config, now
        )
        body = with_trace(self._token_body(config, grant, access, new_refresh, v3), sb.trace_id())
        return await sb.answer(
            request,
            None,
            config,
            now,
            grant.location_id,
            200,
            body,
            decision.headers,
            hold_s=config.oauth_token_delay_s,
        )

    def _token_body(
        self, config: SandboxConfig, grant: Grant, access: str, refresh: str, v3: bool
    ) -> dict[str, Any]:
        """The spec's ``GetAccessCodeSuccessfulResponseDto`` (v3: its camelCase twin)."""
        body = access_fields(config, access, v3)
        body |= {
            "refreshToken" if v3 else "refresh_token": refresh,
            "scope": " ".join(config.oauth_scopes),
            "userType": grant.user_type,
        }
        if grant.user_type == USER_TYPE_LOCATION:
            assert grant.location_id is not None
            body["locationId"] = grant.location_id
            company = grant.company_id or self._company_of(config, grant.location_id)
            if company is not None:
                body["companyId"] = company
        else:
            assert grant.company_id is not None
            body["companyId"] = grant.company_id
            body["approvedLocations"] = list(config.oauth_installed.get(grant.company_id, []))
        body["userId"] = grant.user_id
        return body

    @staticmethod
    def _company_of(config: SandboxConfig, location_id: str) -> str | None:
        """The company under which the app is installed at this location, if configured."""
        for company, locations in config.oauth_installed.items():
            if location_id in locations:
                return company
        return None

"""HighLevel's OAuth endpoints, as the OAuth specs (v2 ``oauth.json``, v3 ``oauth-v3.json``) say.

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

``POST /oauth/locationToken`` (``Version: 2021-07-28``) and ``POST /oauth/location-token``
(``Version: v3``) mint a location access token from an agency (Company) access token;
``GET /oauth/installedLocations`` and ``GET /oauth/installed-locations`` list the locations
where the app is installed. Their checks: the token (401 ``Invalid token: ...``, or
``Invalid JWT`` when expired), the ``Version`` (400, the existing wording; only the spec's
one value is accepted), the token's class (a Private Integration Token: 401 ``The token is
not authorized for this scope.``; a location token: 401 ``This authClass type is not
allowed ...``) and scope (``oauth.write`` / ``oauth.readonly``), the body or query (422; the
v3 list answers 400 in the AIP envelope), the company (403 when not the token's), then
whether the app is installed there (400) or is the configured app (v2 400, v3 404 AIP),
and the company's rate window.

Every answer is logged like any API request; none carries a token into the log.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import urllib.parse
from collections.abc import Mapping
from typing import Any, NamedTuple

from aiohttp import web

from pipeline.core.constants import H_VERSION
from pipeline.sandbox.app import (
    ACCEPTED_VERSIONS,
    AUTH_CLASS_UNAUTHORIZED,
    INVALID_JWT,
    SCOPE_UNAUTHORIZED,
    UNAUTHORIZED,
    VERSION_INVALID,
    VERSION_REQUIRED,
    Sandbox,
    bearer_token,
    field_problems,
    unprocessable,
)
from pipeline.sandbox.bodies import JsonTemplate, with_trace
from pipeline.sandbox.config import (
    USER_TYPE_COMPANY,
    USER_TYPE_LOCATION,
    USER_TYPES,
    SandboxConfig,
)
from pipeline.sandbox.limits import admit
from pipeline.sandbox.oauth import (
    REASON_CLIENT,
    REASON_RATE_LIMITED,
    REASON_USER_TYPE,
    AccessGrant,
    Grant,
)

OAUTH_TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
LOCATION_TOKEN_PATH = "/oauth/locationToken"  # noqa: S105
LOCATION_TOKEN_V3_PATH = "/oauth/location-token"  # noqa: S105
INSTALLED_LOCATIONS_PATH = "/oauth/installedLocations"
INSTALLED_LOCATIONS_V3_PATH = "/oauth/installed-locations"

# The one ``Version`` each spec's agency endpoints list (v2: 2021-07-28 only).
VERSION_V2 = "2021-07-28"
VERSION_V3 = "v3"
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
SCOPE_OAUTH_WRITE = "oauth.write"
SCOPE_OAUTH_READ = "oauth.readonly"
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

INSTALLED_DEFAULT_LIMIT = 20
INSTALLED_MAX_PAGE_SIZE = 100

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
# Not documented by the specs: a location where the app is not installed (a 400, worded in
# the API's style), and a companyId that is not the agency token's own.
NOT_INSTALLED = JsonTemplate(
    {"statusCode": 400, "message": "The app is not installed on this location."}
)
COMPANY_FORBIDDEN = JsonTemplate(
    {
        "statusCode": 403,
        "message": "The token does not have access to this company.",
        "error": "Forbidden",
    }
)
APP_NOT_FOUND = JsonTemplate({"statusCode": 400, "message": "App not found"})


def _bad_request(message: str, trace_id: str) -> bytes:
    """The spec's ``BadRequestDTO``: ``{"statusCode": 400, "message": ...}``."""
    return with_trace({"statusCode": 400, "message": message}, trace_id)


def _aip_error(
    code: str, message: str, details: dict[str, Any], trace_id: str, resolution: str | None = None
) -> bytes:
    """The v3 spec's ``AipErrorResponseDto`` (``{"error": {"code", "message", ...}}``)."""
    error: dict[str, Any] = {"code": code, "message": message, "details": details}
    if resolution is not None:
        error["resolution"] = resolution
    return with_trace({"error": error}, trace_id)


def _seconds(value: float) -> int | float:
    """``expires_in`` as the API writes it: a whole number when it is one."""
    return int(value) if float(value).is_integer() else value


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


def encode_page_token(skip: int) -> str:
    """An opaque v3 page token: unpadded base64url of ``{"skip":N}`` (the spec's example
    ``eyJza2lwIjoyMH0`` is ``{"skip":20}``)."""
    raw = json.dumps({"skip": skip}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> int | None:
    """The offset a page token stands for, or None when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (ValueError, binascii.Error):
        return None
    skip = data.get("skip") if isinstance(data, dict) else None
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        return None
    return skip


class InstalledQuery(NamedTuple):
    """The installed-locations query, validated; ``installed`` is None when not filtered."""

    company_id: str
    app_id: str
    skip: int
    limit: int
    installed: bool | None


def location_name(location_id: str) -> str:
    """A sandbox location's name (the spec requires ``name``; the sandbox knows only ids)."""
    return f"Sandbox location {location_id}"


class OAuthApi:
    """The OAuth handlers of one sandbox, sharing its config, state and plumbing."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    # -- POST /oauth/token ------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        """``POST /oauth/token``: the refresh-token grant (see the module docstring)."""
        sb = self._sandbox
        now = await sb.arrive(request)
        config = sb.config
        raw = await request.read()
        version = request.headers.get(H_VERSION, "").strip()
        if version and version != VERSION_V3 and version not in ACCEPTED_VERSIONS:
            return await self._refuse(request, None, config, now, 400, VERSION_INVALID)
        v3 = version == VERSION_V3
        fields, problem = token_request_fields(request.content_type, raw, v3)
        if fields is None:
            if problem is None:
                return await self._refuse(request, None, config, now, 400, FORM_REQUIRED)
            return await self._bad(request, None, config, now, problem)
        problem = token_request_problem(fields)
        if problem is not None:
            return await self._bad(request, None, config, now, problem)

        grant_type = fields["grantType"]
        if grant_type == GRANT_CODE:
            if "code" not in fields:
                return await self._bad(request, None, config, now, "Missing parameter: code")
            return await self._refuse(request, None, config, now, 401, CODE_NOT_FOUND)
        if grant_type != GRANT_REFRESH:  # client_credentials: not something this app does
            return await self._bad(request, None, config, now, "Invalid parameter: grantType")
        refresh = fields.get("refreshToken")
        if refresh is None:
            return await self._bad(request, None, config, now, "Missing parameter: refreshToken")

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
            return await self._bad(request, None, config, now, client_problem, location)
        if grant is None:
            key, reason = store.refused_reason(refresh)
            store.record_use(now, refresh, False, key, reason)
            return await self._refuse(request, None, config, now, 400, INVALID_GRANT)
        user_type = fields.get("userType")
        if user_type is not None and user_type != grant.user_type:
            store.record_use(now, refresh, False, grant.key, REASON_USER_TYPE)
            headers = sb.rate_headers(config, grant.rate_key, now)
            return await self._bad(
                request,
                None,
                config,
                now,
                "Invalid parameter: userType",
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
        body: dict[str, Any] = {
            "accessToken" if v3 else "access_token": access,
            "tokenType" if v3 else "token_type": TOKEN_TYPE,
            "expiresIn" if v3 else "expires_in": _seconds(config.access_token_ttl_s),
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

    # -- POST /oauth/locationToken, /oauth/location-token -----------------------------------

    async def location_token(self, request: web.Request) -> web.Response:
        """``POST /oauth/locationToken`` (``Version: 2021-07-28``)."""
        return await self._location_token(request, v3=False)

    async def location_token_v3(self, request: web.Request) -> web.Response:
        """``POST /oauth/location-token`` (``Version: v3``); its answer adds a refresh token."""
        return await self._location_token(request, v3=True)

    async def _location_token(self, request: web.Request, v3: bool) -> web.Response:
        sb = self._sandbox
        now = await sb.arrive(request)
        config = sb.config
        token = bearer_token(request)
        refused, agency = await self._agency_gate(
            request, token, config, now, VERSION_V3 if v3 else VERSION_V2, SCOPE_OAUTH_WRITE
        )
        if refused is not None:
            return refused
        assert agency is not None and agency.company_id is not None
        # A body that is not a form is not read: its fields are missing (422).
        form = parse_form(request.content_type, await request.read()) or {}
        company, location = form.get("companyId"), form.get("locationId")
        problems = field_problems("companyId", company) + field_problems("locationId", location)
        headers = sb.rate_headers(config, agency.company_id, now)
        if problems:
            body = unprocessable(problems, sb.trace_id())
            return await sb.answer(request, token, config, now, None, 422, body, headers)
        assert company is not None and location is not None
        if company != agency.company_id:
            return await self._refuse(
                request, token, config, now, 403, COMPANY_FORBIDDEN, location, headers
            )
        if location not in config.oauth_installed.get(company, []):
            return await self._refuse(
                request, token, config, now, 400, NOT_INSTALLED, location, headers
            )
        decision = admit(sb.state.counters(company), config, now)
        if not decision.allowed:
            return await sb.too_many(
                request,
                token,
                config,
                now,
                location,
                decision.headers,
                decision.retry_after_s,
            )
        store = sb.oauth
        access = store.mint(USER_TYPE_LOCATION, location, company, agency.user_id, config, now)
        payload: dict[str, Any] = {
            "accessToken" if v3 else "access_token": access,
            "tokenType" if v3 else "token_type": TOKEN_TYPE,
            "expiresIn" if v3 else "expires_in": _seconds(config.access_token_ttl_s),
            "scope": " ".join(config.oauth_scopes),
            "locationId": location,
            "userId": agency.user_id,
            "appId": config.oauth_app_id,
        }
        if v3:
            # The v3 answer carries the location's own refresh token: it starts (or restarts)
            # the location's grant, whose previous refresh token stops working.
            grant = store.install(USER_TYPE_LOCATION, location, company, user_id=agency.user_id)
            payload["refreshToken"] = grant.refresh_token
        body = with_trace(payload, sb.trace_id())
        return await sb.answer(request, token, config, now, location, 200, body, decision.headers)

    # -- GET /oauth/installedLocations, /oauth/installed-locations --------------------------

    async def installed_locations(self, request: web.Request) -> web.Response:
        """``GET /oauth/installedLocations`` (``Version: 2021-07-28``): skip and limit."""
        return await self._installed(request, v3=False)

    async def installed_locations_v3(self, request: web.Request) -> web.Response:
        """``GET /oauth/installed-locations`` (``Version: v3``): pageSize and pageToken."""
        return await self._installed(request, v3=True)

    async def _installed(self, request: web.Request, v3: bool) -> web.Response:
        sb = self._sandbox
        now = await sb.arrive(request)
        config = sb.config
        token = bearer_token(request)
        refused, agency = await self._agency_gate(
            request, token, config, now, VERSION_V3 if v3 else VERSION_V2, SCOPE_OAUTH_READ
        )
        if refused is not None:
            return refused
        assert agency is not None and agency.company_id is not None
        query = request.query
        headers = sb.rate_headers(config, agency.company_id, now)
        parsed = self._installed_query(query, v3)
        if not isinstance(parsed, InstalledQuery):
            if isinstance(parsed, list):  # v2: NestJS's 422
                status, body = 422, unprocessable(parsed, sb.trace_id())
            else:  # v3: the AIP envelope's 400
                field_name, message = parsed
                details = {"field": field_name}
                status, body = 400, _aip_error("INVALID_ARGUMENT", message, details, sb.trace_id())
            return await sb.answer(request, token, config, now, None, status, body, headers)
        company, app_id, skip, limit, installed = parsed
        if company != agency.company_id:
            return await self._refuse(
                request, token, config, now, 403, COMPANY_FORBIDDEN, None, headers
            )
        if app_id != config.oauth_app_id:
            if v3:
                status, body = (
                    404,
                    _aip_error(
                        "RESOURCE_NOT_FOUND",
                        f"The requested App '{app_id}' was not found.",
                        {"resource": "App", "identifier": app_id},
                        sb.trace_id(),
                        "Verify the App exists and you have permission to access it.",
                    ),
                )
            else:
                status, body = 400, APP_NOT_FOUND(sb.trace_id())
            return await sb.answer(request, token, config, now, None, status, body, headers)
        decision = admit(sb.state.counters(company), config, now)
        if not decision.allowed:
            return await sb.too_many(
                request, token, config, now, None, decision.headers, decision.retry_after_s
            )

        found = list(config.oauth_installed.get(company, [])) if installed is not False else []
        if query.get("locationId"):
            found = [loc for loc in found if loc == query["locationId"]]
        if query.get("query"):
            needle = query["query"].lower()
            found = [loc for loc in found if needle in location_name(loc).lower()]
        page = [
            {"_id": loc, "name": location_name(loc), "address": "", "isInstalled": True}
            for loc in found[skip : skip + limit]
        ]
        payload: dict[str, Any]
        if v3:
            has_next = skip + limit < len(found)
            pagination: dict[str, Any] = {
                "totalRecords": len(found),
                "hasNextPage": has_next,
                "hasPrevPage": skip > 0,
                "currentPageSize": len(page),
            }
            if has_next:
                pagination["nextPageToken"] = encode_page_token(skip + limit)
            if skip > 0:
                pagination["prevPageToken"] = encode_page_token(max(0, skip - limit))
            applied: dict[str, Any] = {"companyId": company, "appId": app_id}
            if installed is not None:
                applied["isInstalled"] = installed
            payload = {
                "items": page,
                "pagination": pagination,
                "metadata": {"filterApplied": applied, "sortApplied": {}},
            }
        else:
            payload = {"locations": page, "count": len(found)}
        body = with_trace(payload, sb.trace_id())
        return await sb.answer(request, token, config, now, None, 200, body, decision.headers)

    @staticmethod
    def _installed_query(
        query: Mapping[str, str], v3: bool
    ) -> InstalledQuery | list[str] | tuple[str, str]:
        """The validated query, or its problems: the 422 messages (v2), or the field and
        message of one AIP ``INVALID_ARGUMENT`` (v3)."""
        company, app_id = query.get("companyId"), query.get("appId")
        installed_raw = query.get("isInstalled")
        installed = (
            None
            if installed_raw is None
            else {"true": True, "false": False}.get(installed_raw.strip().lower())
        )
        if v3:
            for name, value in (("companyId", company), ("appId", app_id)):
                if value is None or not value.strip():
                    return name, f"{name} is required"
            if installed_raw is not None and installed is None:
                return "isInstalled", "isInstalled must be a boolean"
            try:
                size = float(query.get("pageSize", INSTALLED_DEFAULT_LIMIT))
            except ValueError:
                size = math.nan
            if not (size.is_integer() and 1 <= size <= INSTALLED_MAX_PAGE_SIZE):
                message = f"pageSize must be a whole number from 1 to {INSTALLED_MAX_PAGE_SIZE}"
                return "pageSize", message
            skip = 0
            if query.get("pageToken"):
                decoded = decode_page_token(query["pageToken"])
                if decoded is None:
                    return "pageToken", "pageToken is invalid"
                skip = decoded
            assert company is not None and app_id is not None
            return InstalledQuery(company, app_id, skip, int(size), installed)
        problems = field_problems("companyId", company) + field_problems("appId", app_id)
        numbers: dict[str, int] = {}
        for name, default in (("skip", 0), ("limit", INSTALLED_DEFAULT_LIMIT)):
            text = query.get(name, str(default)).strip()
            if text.isascii() and text.isdigit():
                numbers[name] = int(text)
            else:
                problems.append(f"{name} must be a number string")
        if installed_raw is not None and installed is None:
            problems.append("isInstalled must be a boolean value")
        if problems:
            return problems
        assert company is not None and app_id is not None
        return InstalledQuery(company, app_id, numbers["skip"], numbers["limit"], installed)

    # -- shared -----------------------------------------------------------------------------

    async def _agency_gate(
        self,
        request: web.Request,
        token: str | None,
        config: SandboxConfig,
        now: float,
        version_needed: str,
        scope: str,
    ) -> tuple[web.Response | None, AccessGrant | None]:
        """Token, Version, token class and scope of an agency-only endpoint, in that order.

        Answers ``(refusal, None)`` or ``(None, the agency token's grant)``.
        """
        sb = self._sandbox
        minted = None if token is None else sb.oauth.access(token)
        version = request.headers.get(H_VERSION, "").strip()
        template: JsonTemplate | None
        if token is None or (minted is None and not sb.accepts_static(token)):
            status, template = 401, UNAUTHORIZED
        elif minted is not None and minted.expired(now):
            status, template = 401, INVALID_JWT
        elif not version:
            status, template = 400, VERSION_REQUIRED
        elif version != version_needed:
            status, template = 400, VERSION_INVALID
        elif minted is None:  # a Private Integration Token: not accepted here
            status, template = 401, SCOPE_UNAUTHORIZED
        elif minted.user_type != USER_TYPE_COMPANY:
            status, template = 401, AUTH_CLASS_UNAUTHORIZED
        elif scope not in minted.scopes:
            status, template = 401, SCOPE_UNAUTHORIZED
        else:
            return None, minted
        company = minted.company_id if minted is not None else None
        headers = sb.rate_headers(config, company, now)
        return await self._refuse(
            request, token, config, now, status, template, None, headers
        ), None

    async def _refuse(
        self,
        request: web.Request,
        token: str | None,
        config: SandboxConfig,
        now: float,
        status: int,
        template: JsonTemplate,
        location: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """A fixed refusal with a fresh trace id, logged like any answer."""
        sb = self._sandbox
        body = template(sb.trace_id())
        return await sb.answer(request, token, config, now, location, status, body, headers)

    async def _bad(
        self,
        request: web.Request,
        token: str | None,
        config: SandboxConfig,
        now: float,
        message: str,
        location: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """A 400 ``BadRequestDTO`` with this message."""
        sb = self._sandbox
        body = _bad_request(message, sb.trace_id())
        return await sb.answer(request, token, config, now, location, 400, body, headers)


def add_oauth_routes(app: web.Application, sandbox: Sandbox) -> None:
    """Register the OAuth routes (before the catch-all 404)."""
    api = OAuthApi(sandbox)
    router = app.router
    router.add_post(OAUTH_TOKEN_PATH, api.token)
    router.add_post(LOCATION_TOKEN_PATH, api.location_token)
    router.add_post(LOCATION_TOKEN_V3_PATH, api.location_token_v3)
    router.add_get(INSTALLED_LOCATIONS_PATH, api.installed_locations, allow_head=False)
    router.add_get(INSTALLED_LOCATIONS_V3_PATH, api.installed_locations_v3, allow_head=False)

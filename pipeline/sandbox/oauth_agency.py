"""HighLevel's agency-only OAuth endpoints, as the OAuth specs (v2 ``oauth.json``, v3
``oauth-v3.json``) say; the token grant itself is in ``oauth_grant.py``.

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
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from aiohttp import web

from pipeline.sandbox.app import Sandbox
from pipeline.sandbox.bodies import JsonTemplate, with_trace
from pipeline.sandbox.config import USER_TYPE_LOCATION, SandboxConfig
from pipeline.sandbox.gates import agency_refusal, field_problems, unprocessable
from pipeline.sandbox.limits import admit
from pipeline.sandbox.oauth import AccessGrant
from pipeline.sandbox.oauth_grant import VERSION_V3, access_fields, parse_form

# The one ``Version`` each spec's agency endpoints list (v2: 2021-07-28 only).
VERSION_V2 = "2021-07-28"
SCOPE_OAUTH_WRITE = "oauth.write"
SCOPE_OAUTH_READ = "oauth.readonly"

INSTALLED_DEFAULT_LIMIT = 20
INSTALLED_MAX_PAGE_SIZE = 100

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


def _aip_error(
    code: str, message: str, details: dict[str, Any], trace_id: str, resolution: str | None = None
) -> bytes:
    """The v3 spec's ``AipErrorResponseDto`` (``{"error": {"code", "message", ...}}``)."""
    error: dict[str, Any] = {"code": code, "message": message, "details": details}
    if resolution is not None:
        error["resolution"] = resolution
    return with_trace({"error": error}, trace_id)


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


class Entry(NamedTuple):
    """A request that passed the checks of an agency-only endpoint: when it arrived, the
    config it is answered by, its token and what that token was minted for."""

    now: float
    config: SandboxConfig
    token: str
    agency: AccessGrant


# What a request that passed the checks goes on to: the endpoint's own work.
Handler = Callable[[web.Request, bool, Entry], Awaitable[web.Response]]


class AgencyApi:
    """The agency-only OAuth handlers of one sandbox, sharing its config, state and plumbing."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    async def _enter(
        self, request: web.Request, v3: bool, scope: str, handle: Handler
    ) -> web.Response:
        """A request's arrival, then the checks of an agency-only endpoint
        (``gates.agency_refusal``): the refusal, which shows the rate headers of the token's
        company when it has one, or the answer of ``handle``."""
        sb = self._sandbox
        now = await sb.arrive(request)
        config = sb.config
        caller = sb.caller(request)
        minted = caller.minted
        refusal = agency_refusal(caller, now, VERSION_V3 if v3 else VERSION_V2, scope)
        company = minted.company_id if minted is not None else None
        refused = await sb.gate(request, caller, config, now, refusal, company)
        if refused is not None:
            return refused
        assert caller.token is not None and minted is not None and company is not None
        return await handle(request, v3, Entry(now, config, caller.token, minted))

    # -- POST /oauth/locationToken, /oauth/location-token -----------------------------------

    async def location_token(self, request: web.Request, v3: bool) -> web.Response:
        """``POST /oauth/locationToken`` (``Version: 2021-07-28``), or with ``v3``
        ``POST /oauth/location-token`` (``Version: v3``), whose answer adds a refresh token."""
        return await self._enter(request, v3, SCOPE_OAUTH_WRITE, self._mint)

    async def _mint(self, request: web.Request, v3: bool, entry: Entry) -> web.Response:
        sb = self._sandbox
        now, config, token, agency = entry
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
            return await sb.refuse(
                request, token, config, now, (403, COMPANY_FORBIDDEN), location, headers
            )
        if location not in config.oauth_installed.get(company, []):
            return await sb.refuse(
                request, token, config, now, (400, NOT_INSTALLED), location, headers
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
        payload = access_fields(config, access, v3)
        payload |= {
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

    async def installed_locations(self, request: web.Request, v3: bool) -> web.Response:
        """``GET /oauth/installedLocations`` (``Version: 2021-07-28``): skip and limit; or with
        ``v3`` ``GET /oauth/installed-locations`` (``Version: v3``): pageSize and pageToken."""
        return await self._enter(request, v3, SCOPE_OAUTH_READ, self._list)

    async def _list(self, request: web.Request, v3: bool, entry: Entry) -> web.Response:
        sb = self._sandbox
        now, config, token, agency = entry
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
            return await sb.refuse(
                request, token, config, now, (403, COMPANY_FORBIDDEN), None, headers
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

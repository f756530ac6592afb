"""The sandbox's OAuth endpoints, over a real loopback socket, with plain httpx.

Checked against the OAuth specs (reference/oauth.openapi.json, oauth-v3.openapi.json) and
the live wording, spelled out here rather than taken from the sandbox: a refresh token is
good once, access tokens expire, an agency token mints location tokens where the app is
installed, and no token ever reaches the sandbox's request log.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pipeline.core.constants import (
    DEFAULT_API_VERSION,
    H_MAX,
    H_REMAINING,
    SCOPE_READ,
    SCOPE_WRITE,
)
from pipeline.sandbox import DEFAULT_TOKEN, SandboxConfig, SandboxThread, token_label

CLIENT_ID = "6578278e879ad2646715ba9c-mbpkmyu4"
CLIENT_SECRET = "0b2f5c1e-7d4a-4e8b-9f3c-1a2b3c4d5e6f"
APP_ID = "6578278e879ad2646715ba9c"
COMPANY = "ncTg6Q3fkTB8tVHocj3U"
LOC_1 = "AnJG67dOYPmbxTOG4cU1"
LOC_2 = "ve9EPM428kjkvShlRW1K"
LOC_3 = "tDtDnQdgm2LXpyiqYvZ6"
NOT_INSTALLED = "zzzzzzzzzzzzzzzzzzzz"
LOCATION_REFRESH = "refresh-location-initial"
COMPANY_REFRESH = "refresh-company-initial"
V2 = "2021-07-28"
FORM = "application/x-www-form-urlencoded"

# Live and documented wording, spelled out independently of the sandbox's code.
INVALID_GRANT = {"statusCode": 400, "message": "Invalid grant: refresh token is invalid"}
INVALID_JWT = {"statusCode": 401, "message": "Invalid JWT"}
AUTH_CLASS = {
    "statusCode": 401,
    "message": (
        "This authClass type is not allowed to access this scope. "
        "Please verify your IAM configuration if this is not the case."
    ),
    "error": "Unauthorized",
}
NOT_IN_SCOPE = {
    "statusCode": 401,
    "message": "The token is not authorized for this scope.",
    "error": "Unauthorized",
}
FORBIDDEN_LOCATION = {
    "statusCode": 403,
    "message": "The token does not have access to this location.",
    "error": "Forbidden",
}
NOT_INSTALLED_BODY = {"statusCode": 400, "message": "The app is not installed on this location."}
VERSION_INVALID = {"statusCode": 400, "message": "version header is invalid"}
VERSION_REQUIRED = {"statusCode": 400, "message": "Version header is required"}

OAUTH = {
    "oauth_clients": {CLIENT_ID: CLIENT_SECRET},
    "oauth_app_id": APP_ID,
    "oauth_refresh_tokens": {
        LOCATION_REFRESH: {"user_type": "Location", "location_id": LOC_1},
        COMPANY_REFRESH: {"user_type": "Company", "company_id": COMPANY},
    },
    "oauth_installed": {COMPANY: [LOC_1, LOC_2, LOC_3]},
}

Factory = Callable[..., tuple[SandboxThread, httpx.Client]]


@pytest.fixture
def sandbox() -> Iterator[Factory]:
    """A sandbox thread with the OAuth app configured plus overrides, and a bare client."""
    opened: list[tuple[SandboxThread, httpx.Client]] = []

    def start(**fields: Any) -> tuple[SandboxThread, httpx.Client]:
        sb = SandboxThread(SandboxConfig.from_dict({**OAUTH, **fields}), shutdown_timeout=0.5)
        sb.start()
        client = httpx.Client(base_url=sb.base_url, timeout=5.0)
        opened.append((sb, client))
        return sb, client

    yield start
    for sb, client in opened:
        client.close()
        sb.stop()


def without_trace(r: httpx.Response) -> dict[str, Any]:
    """The JSON body minus its traceId, which must be a uuid4 and the last key."""
    body = r.json()
    assert list(body)[-1] == "traceId", body
    assert uuid.UUID(body.pop("traceId")).version == 4
    return dict(body)


def refresh(
    client: httpx.Client,
    token: str,
    user_type: str | None = "Location",
    secret: str = CLIENT_SECRET,
    **extra: str,
) -> httpx.Response:
    """A v2 refresh-token grant, form-encoded as the spec says."""
    form = {
        "client_id": CLIENT_ID,
        "client_secret": secret,
        "grant_type": "refresh_token",
        "refresh_token": token,
        **extra,
    }
    if user_type is not None:
        form["user_type"] = user_type
    return client.post("/oauth/token", data=form)


def api_headers(token: str, version: str = DEFAULT_API_VERSION) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Version": version}


def create(client: httpx.Client, token: str, location: str, contact: str) -> httpx.Response:
    return client.post(
        "/conversations/",
        json={"locationId": location, "contactId": contact},
        headers=api_headers(token),
    )


def company_access(client: httpx.Client) -> str:
    r = refresh(client, COMPANY_REFRESH, "Company")
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert isinstance(token, str)
    return token


def location_token(
    client: httpx.Client,
    bearer: str,
    location: str = LOC_2,
    company: str = COMPANY,
    *,
    v3: bool = False,
    version: str | None = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"}
    version = version if version is not None else ("v3" if v3 else V2)
    if version:
        headers["Version"] = version
    path = "/oauth/location-token" if v3 else "/oauth/locationToken"
    return client.post(path, data={"companyId": company, "locationId": location}, headers=headers)


# -- /oauth/token: the refresh-token grant ----------------------------------------------------


def test_refresh_rotates_and_the_old_token_is_refused(sandbox: Factory) -> None:
    sb, client = sandbox()
    first = refresh(client, LOCATION_REFRESH)
    assert first.status_code == 200
    body = without_trace(first)
    assert list(body) == [
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
        "userType",
        "locationId",
        "companyId",  # the company the app is installed under (oauth_installed)
        "userId",
    ]
    assert body["token_type"] == "Bearer" and body["expires_in"] == 86399
    assert body["userType"] == "Location" and body["locationId"] == LOC_1
    assert body["companyId"] == COMPANY
    assert {SCOPE_WRITE, SCOPE_READ} <= set(body["scope"].split())
    new = body["refresh_token"]
    assert new != LOCATION_REFRESH and body["access_token"] not in (new, LOCATION_REFRESH)

    again = refresh(client, LOCATION_REFRESH)
    assert again.status_code == 400 and without_trace(again) == INVALID_GRANT
    assert refresh(client, "never-issued").status_code == 400

    newest = refresh(client, new)
    assert newest.status_code == 200
    assert newest.json()["userId"] == body["userId"]  # the same installation
    latest = newest.json()["refresh_token"]

    uses = sb.state.refresh_uses()
    assert [(u.token, u.accepted, u.reason) for u in uses] == [
        (token_label(LOCATION_REFRESH), True, None),
        (token_label(LOCATION_REFRESH), False, "spent"),
        (token_label("never-issued"), False, "unknown"),
        (token_label(new), True, None),
    ]
    assert {u.grant for u in uses} == {f"Location:{LOC_1}", None}
    spent = Counter(u.token for u in uses if u.accepted)
    assert max(spent.values()) == 1  # no refresh token was spent twice
    oauth = sb.state.oauth()
    assert oauth.refresh_tokens[f"Location:{LOC_1}"] == token_label(latest)
    assert oauth.location_mints == {LOC_1: 2}
    assert sb.state.refresh_token_valid(latest)
    assert not sb.state.refresh_token_valid(new)


def test_company_refresh_answers_the_company_grant(sandbox: Factory) -> None:
    _, client = sandbox()
    r = refresh(client, COMPANY_REFRESH, "Company")
    assert r.status_code == 200
    body = without_trace(r)
    assert body["userType"] == "Company" and body["companyId"] == COMPANY
    assert "locationId" not in body
    assert body["approvedLocations"] == [LOC_1, LOC_2, LOC_3]
    assert {"oauth.write", "oauth.readonly"} <= set(body["scope"].split())


def test_wrong_client_or_user_type_is_refused_and_spends_nothing(sandbox: Factory) -> None:
    sb, client = sandbox()
    wrong_secret = refresh(client, LOCATION_REFRESH, secret="not-the-secret")
    assert wrong_secret.status_code == 400
    assert without_trace(wrong_secret) == {
        "statusCode": 400,
        "message": "Invalid parameter: clientSecret",
    }
    wrong_client = client.post(
        "/oauth/token",
        data={
            "client_id": "someone-else",
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": LOCATION_REFRESH,
        },
    )
    assert without_trace(wrong_client) == {
        "statusCode": 400,
        "message": "Invalid parameter: clientId",
    }
    wrong_type = refresh(client, LOCATION_REFRESH, "Company")
    assert without_trace(wrong_type) == {
        "statusCode": 400,
        "message": "Invalid parameter: userType",
    }
    assert sb.state.refresh_token_valid(LOCATION_REFRESH)
    assert [(u.accepted, u.reason) for u in sb.state.refresh_uses()] == [
        (False, "client"),
        (False, "client"),
        (False, "user_type"),
    ]
    # user_type is optional in the spec: without it the grant's own type is used.
    assert refresh(client, LOCATION_REFRESH, None).status_code == 200


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({}, "Missing parameter: clientId"),
        ({"client_id": CLIENT_ID}, "Missing parameter: clientSecret"),
        ({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, "Missing parameter: grantType"),
        (
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "password"},
            "Invalid parameter: grantType",
        ),
        (
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "refresh_token"},
            "Missing parameter: refreshToken",
        ),
        (
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "grant_type": "refresh_token",
                "refresh_token": LOCATION_REFRESH,
                "user_type": "Agency",
            },
            "Invalid parameter: userType",
        ),
    ],
)
def test_token_request_problems_are_the_documented_400s(
    sandbox: Factory, form: dict[str, str], message: str
) -> None:
    sb, client = sandbox()
    # An explicit form, even when empty (no body at all is not a form).
    body = urllib.parse.urlencode(form)
    r = client.post("/oauth/token", content=body, headers={"Content-Type": FORM})
    assert r.status_code == 400
    assert without_trace(r) == {"statusCode": 400, "message": message}
    assert sb.state.refresh_token_valid(LOCATION_REFRESH)


def test_an_authorization_code_is_not_found(sandbox: Factory) -> None:
    _, client = sandbox()
    r = client.post(
        "/oauth/token",
        data={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "authorization_code",
            "code": "6ff158ab",
            "redirect_uri": "https://example.com/callback",
        },
    )
    assert r.status_code == 401
    assert without_trace(r) == {
        "error": "UnAuthorized!",
        "error_description": "Authorization code not found",
    }


def test_v2_token_needs_a_form_body(sandbox: Factory) -> None:
    sb, client = sandbox()
    r = client.post(
        "/oauth/token",
        json={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": LOCATION_REFRESH,
        },
    )
    assert r.status_code == 400
    assert without_trace(r) == {
        "statusCode": 400,
        "message": "Invalid request: content must be application/x-www-form-urlencoded",
    }
    assert sb.state.refresh_token_valid(LOCATION_REFRESH)
    # The v2 operation declares no Version header; a published one is ignored, others refused.
    assert refresh(client, LOCATION_REFRESH).status_code == 200
    bogus = client.post("/oauth/token", data={}, headers={"Version": "2099-01-01"})
    assert bogus.status_code == 400 and without_trace(bogus) == VERSION_INVALID


def test_v3_token_takes_camel_case_json_or_form_and_answers_camel_case(sandbox: Factory) -> None:
    _, client = sandbox()
    fields = {
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "grantType": "refresh_token",
        "refreshToken": LOCATION_REFRESH,
        "userType": "Location",
    }
    r = client.post("/oauth/token", json=fields, headers={"Version": "v3"})
    assert r.status_code == 200
    body = without_trace(r)
    assert list(body)[:6] == [
        "accessToken",
        "tokenType",
        "expiresIn",
        "refreshToken",
        "scope",
        "userType",
    ]
    assert body["locationId"] == LOC_1 and "userId" in body
    as_form = client.post(
        "/oauth/token",
        data={**fields, "refreshToken": body["refreshToken"]},
        headers={"Version": "v3"},
    )
    assert as_form.status_code == 200 and "accessToken" in as_form.json()
    # v3 reads only the v3 names.
    v3_with_snake = client.post(
        "/oauth/token",
        data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        headers={"Version": "v3"},
    )
    assert without_trace(v3_with_snake) == {
        "statusCode": 400,
        "message": "Missing parameter: clientId",
    }


# -- minted access tokens on the conversations API -------------------------------------------


def test_minted_access_token_works_until_it_expires(sandbox: Factory) -> None:
    sb, client = sandbox(access_token_ttl_s=0.8)
    r = refresh(client, LOCATION_REFRESH)
    assert r.json()["expires_in"] == 0.8
    access = r.json()["access_token"]
    minted_at = time.monotonic()
    assert create(client, access, LOC_1, "c1").status_code == 201
    search = client.get(
        "/conversations/search", params={"locationId": LOC_1}, headers=api_headers(access)
    )
    assert search.status_code == 200

    time.sleep(max(0.0, 0.85 - (time.monotonic() - minted_at)))
    expired = create(client, access, LOC_1, "c2")
    assert expired.status_code == 401 and without_trace(expired) == INVALID_JWT
    search = client.get(
        "/conversations/search", params={"locationId": LOC_1}, headers=api_headers(access)
    )
    assert search.status_code == 401 and without_trace(search) == INVALID_JWT
    assert (LOC_1, "c2") not in sb.state.conversations()
    # The refresh token was rotated, not consumed for good: the next access token works.
    fresh = refresh(client, r.json()["refresh_token"]).json()["access_token"]
    assert create(client, fresh, LOC_1, "c2").status_code == 201


def test_location_token_is_only_for_its_own_location(sandbox: Factory) -> None:
    _, client = sandbox()
    access = refresh(client, LOCATION_REFRESH).json()["access_token"]
    other = create(client, access, LOC_2, "c1")
    assert other.status_code == 403 and without_trace(other) == FORBIDDEN_LOCATION
    assert create(client, access, LOC_1, "c1").status_code == 201


def test_company_token_is_refused_on_conversations(sandbox: Factory) -> None:
    _, client = sandbox()
    access = company_access(client)
    r = create(client, access, LOC_1, "c1")
    assert r.status_code == 401 and without_trace(r) == AUTH_CLASS
    search = client.get(
        "/conversations/search", params={"locationId": LOC_1}, headers=api_headers(access)
    )
    assert search.status_code == 401 and without_trace(search) == AUTH_CLASS


def test_minted_token_scopes_come_from_oauth_scopes(sandbox: Factory) -> None:
    _, client = sandbox(oauth_scopes=[SCOPE_WRITE])
    access = refresh(client, LOCATION_REFRESH).json()["access_token"]
    assert create(client, access, LOC_1, "c1").status_code == 201
    search = client.get(
        "/conversations/search", params={"locationId": LOC_1}, headers=api_headers(access)
    )
    assert search.status_code == 401 and without_trace(search) == NOT_IN_SCOPE


# -- agency → location tokens -----------------------------------------------------------------


def test_location_token_for_an_installed_location(sandbox: Factory) -> None:
    sb, client = sandbox()
    agency = company_access(client)
    r = location_token(client, agency, LOC_2)
    assert r.status_code == 200
    body = without_trace(r)
    assert list(body) == [
        "access_token",
        "token_type",
        "expires_in",
        "scope",
        "locationId",
        "userId",
        "appId",
    ]  # the v2 answer carries no refresh token
    assert body["locationId"] == LOC_2 and body["appId"] == APP_ID
    assert body["token_type"] == "Bearer" and body["expires_in"] == 86399
    assert create(client, body["access_token"], LOC_2, "c1").status_code == 201
    assert create(client, body["access_token"], LOC_1, "c1").status_code == 403
    assert sb.state.oauth().location_mints == {LOC_2: 1}
    assert sb.state.oauth().company_mints == {COMPANY: 1}


def test_location_token_refusals(sandbox: Factory) -> None:
    _, client = sandbox()
    agency = company_access(client)
    not_installed = location_token(client, agency, NOT_INSTALLED)
    assert not_installed.status_code == 400
    assert without_trace(not_installed) == NOT_INSTALLED_BODY
    other_company = location_token(client, agency, LOC_2, company="otherCompany00000000")
    assert other_company.status_code == 403
    assert without_trace(other_company)["message"] == (
        "The token does not have access to this company."
    )

    location_access = location_token(client, agency, LOC_2).json()["access_token"]
    by_location = location_token(client, location_access, LOC_3)
    assert by_location.status_code == 401 and without_trace(by_location) == AUTH_CLASS
    by_pit = location_token(client, DEFAULT_TOKEN, LOC_3)
    assert by_pit.status_code == 401 and without_trace(by_pit) == NOT_IN_SCOPE
    unknown = location_token(client, "no-such-token", LOC_3)
    assert unknown.status_code == 401
    assert without_trace(unknown)["message"] == "Invalid token: access token is invalid"

    missing = location_token(client, agency, LOC_3, version="")
    assert missing.status_code == 400 and without_trace(missing) == VERSION_REQUIRED
    for version in ("v3", "2021-04-15"):  # the v2 spec lists 2021-07-28 only
        wrong = location_token(client, agency, LOC_3, version=version)
        assert wrong.status_code == 400 and without_trace(wrong) == VERSION_INVALID

    as_json = client.post(
        "/oauth/locationToken",
        json={"companyId": COMPANY, "locationId": LOC_3},
        headers={"Authorization": f"Bearer {agency}", "Version": V2},
    )
    assert as_json.status_code == 422
    assert without_trace(as_json) == {
        "statusCode": 422,
        "message": [
            "companyId must be a string",
            "companyId should not be empty",
            "locationId must be a string",
            "locationId should not be empty",
        ],
        "error": "Unprocessable Entity",
    }


def test_expired_agency_token_is_an_invalid_jwt(sandbox: Factory) -> None:
    _, client = sandbox(access_token_ttl_s=0.3)
    agency = company_access(client)
    time.sleep(0.35)
    r = location_token(client, agency, LOC_2)
    assert r.status_code == 401 and without_trace(r) == INVALID_JWT


def test_v3_location_token_adds_a_refresh_token_for_the_location(sandbox: Factory) -> None:
    sb, client = sandbox()
    agency = company_access(client)
    wrong = location_token(client, agency, LOC_3, v3=True, version=V2)
    assert wrong.status_code == 400 and without_trace(wrong) == VERSION_INVALID
    r = location_token(client, agency, LOC_3, v3=True)
    assert r.status_code == 200
    body = without_trace(r)
    assert list(body) == [
        "accessToken",
        "tokenType",
        "expiresIn",
        "scope",
        "locationId",
        "userId",
        "appId",
        "refreshToken",
    ]
    assert create(client, body["accessToken"], LOC_3, "c1").status_code == 201
    rotated = refresh(client, body["refreshToken"])
    assert rotated.status_code == 200 and rotated.json()["locationId"] == LOC_3
    assert sb.state.oauth().refresh_tokens[f"Location:{LOC_3}"] == token_label(
        rotated.json()["refresh_token"]
    )
    # The v3 path does not exist under the v2 name.
    assert client.post("/oauth/location_token").status_code == 404


# -- installed locations ----------------------------------------------------------------------


FIVE = [f"loc{i}aaaaaaaaaaaaaaaa" for i in range(5)]


def test_installed_locations_v2_pages_with_skip_and_limit(sandbox: Factory) -> None:
    _, client = sandbox(oauth_installed={COMPANY: FIVE})
    agency = company_access(client)
    headers = {"Authorization": f"Bearer {agency}", "Version": V2}

    def page(**params: str) -> httpx.Response:
        query = {"companyId": COMPANY, "appId": APP_ID, **params}
        return client.get("/oauth/installedLocations", params=query, headers=headers)

    first = without_trace(page(limit="2"))
    assert first["count"] == 5
    assert [loc["_id"] for loc in first["locations"]] == FIVE[:2]
    item = first["locations"][0]
    assert set(item) >= {"_id", "name", "address"} and item["isInstalled"] is True
    assert [loc["_id"] for loc in page(skip="4", limit="2").json()["locations"]] == FIVE[4:]
    assert [loc["_id"] for loc in page().json()["locations"]] == FIVE  # default limit 20
    assert without_trace(page(isInstalled="false")) == {"locations": [], "count": 0}
    assert page(locationId=FIVE[3]).json()["count"] == 1

    missing = client.get(
        "/oauth/installedLocations", params={"companyId": COMPANY}, headers=headers
    )
    assert missing.status_code == 422
    assert "appId should not be empty" in missing.json()["message"]
    assert page(limit="ten").status_code == 422
    wrong_app = page(appId="000000000000000000000000")
    assert wrong_app.status_code == 400 and without_trace(wrong_app)["message"] == "App not found"
    other = client.get(
        "/oauth/installedLocations",
        params={"companyId": "otherCompany00000000", "appId": APP_ID},
        headers=headers,
    )
    assert other.status_code == 403
    v3_version = client.get(
        "/oauth/installedLocations",
        params={"companyId": COMPANY, "appId": APP_ID},
        headers={**headers, "Version": "v3"},
    )
    assert v3_version.status_code == 400 and without_trace(v3_version) == VERSION_INVALID


def test_installed_locations_v3_pages_with_page_tokens(sandbox: Factory) -> None:
    _, client = sandbox(oauth_installed={COMPANY: FIVE})
    agency = company_access(client)
    headers = {"Authorization": f"Bearer {agency}", "Version": "v3"}
    seen: list[str] = []
    params = {"companyId": COMPANY, "appId": APP_ID, "pageSize": "2"}
    pages = 0
    while True:
        r = client.get("/oauth/installed-locations", params=params, headers=headers)
        assert r.status_code == 200
        body = without_trace(r)
        assert set(body) == {"items", "pagination", "metadata"}
        pagination = body["pagination"]
        assert pagination["totalRecords"] == 5
        assert pagination["currentPageSize"] == len(body["items"])
        assert pagination["hasPrevPage"] is (pages > 0)
        seen += [item["_id"] for item in body["items"]]
        pages += 1
        if not pagination["hasNextPage"]:
            assert "nextPageToken" not in pagination
            break
        params["pageToken"] = pagination["nextPageToken"]
    assert seen == FIVE and pages == 3
    # Opaque, but the spec's example shape: base64url of {"skip":N}.
    token = params["pageToken"]
    assert json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) == {"skip": 4}

    bad_token = client.get(
        "/oauth/installed-locations", params={**params, "pageToken": "%%%"}, headers=headers
    )
    assert bad_token.status_code == 400
    error = without_trace(bad_token)["error"]
    assert error["code"] == "INVALID_ARGUMENT" and "message" in error
    wrong_app = client.get(
        "/oauth/installed-locations",
        params={"companyId": COMPANY, "appId": "abc"},
        headers=headers,
    )
    assert wrong_app.status_code == 404
    assert without_trace(wrong_app)["error"]["code"] == "RESOURCE_NOT_FOUND"
    v2_version = client.get(
        "/oauth/installed-locations",
        params={"companyId": COMPANY, "appId": APP_ID},
        headers={**headers, "Version": V2},
    )
    assert v2_version.status_code == 400 and without_trace(v2_version) == VERSION_INVALID


# -- crash windows, limits, secrecy, config ---------------------------------------------------


def test_delay_holds_the_answer_after_rotating(sandbox: Factory) -> None:
    """A client killed while /oauth/token is held has lost the new refresh token: the old one
    is already spent. This is the in-flight window a crash test aims at."""
    sb, client = sandbox(oauth_token_delay_s=1.0)
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/oauth/token",
            data={
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "grant_type": "refresh_token",
                "refresh_token": LOCATION_REFRESH,
                "user_type": "Location",
            },
            timeout=0.3,
        )
    assert not sb.state.refresh_token_valid(LOCATION_REFRESH)
    assert [(u.accepted, u.reason) for u in sb.state.refresh_uses()] == [(True, None)]
    lost = refresh(client, LOCATION_REFRESH)
    assert lost.status_code == 400 and without_trace(lost) == INVALID_GRANT

    # A patient client gets the new token after the hold.
    sb.update_config(oauth_token_delay_s=0.4)
    started = time.monotonic()
    held = refresh(client, COMPANY_REFRESH, "Company")
    assert held.status_code == 200 and time.monotonic() - started >= 0.4


def test_oauth_requests_take_rate_slots_of_their_resource(sandbox: Factory) -> None:
    sb, client = sandbox(rate_max=1, rate_interval_ms=60_000)
    first = refresh(client, LOCATION_REFRESH)
    assert first.status_code == 200 and first.headers[H_MAX] == "1"
    assert first.headers[H_REMAINING] == "0"
    token = first.json()["refresh_token"]
    limited = refresh(client, token)
    assert limited.status_code == 429
    assert sb.state.refresh_token_valid(token)  # a 429 spends nothing
    assert sb.state.refresh_uses()[-1].reason == "rate_limited"
    # The company's window is its own.
    assert refresh(client, COMPANY_REFRESH, "Company").status_code == 200


def test_no_token_reaches_the_request_log(sandbox: Factory) -> None:
    sb, client = sandbox(oauth_installed={COMPANY: FIVE})
    secrets = {CLIENT_SECRET, LOCATION_REFRESH, COMPANY_REFRESH}
    r = refresh(client, LOCATION_REFRESH)
    secrets |= {r.json()["access_token"], r.json()["refresh_token"]}
    refresh(client, LOCATION_REFRESH)  # spent: refused
    create(client, r.json()["access_token"], LOC_1, "c1")
    agency_answer = refresh(client, COMPANY_REFRESH, "Company").json()
    agency = agency_answer["access_token"]
    secrets |= {agency, agency_answer["refresh_token"]}
    minted = location_token(client, agency, FIVE[0], v3=True).json()
    secrets |= {minted["accessToken"], minted["refreshToken"]}
    client.get(
        "/oauth/installedLocations",
        params={"companyId": COMPANY, "appId": APP_ID},
        headers={"Authorization": f"Bearer {agency}", "Version": V2},
    )
    records = sb.state.requests()
    assert len(records) == 6
    logged = repr(records) + repr(sb.state.oauth())
    admin = client.get("/_sandbox/state").json()
    logged += json.dumps(admin["requests"]) + json.dumps(admin["oauth"])
    for secret in secrets:
        assert secret not in logged
    assert token_label(agency) in {rec.token for rec in records}


def test_config_validates_the_oauth_fields() -> None:
    config = SandboxConfig.from_dict(OAUTH)
    assert SandboxConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.access_token_ttl_s == 86399 and config.oauth_token_delay_s == 0
    for bad in (
        {"oauth_clients": {"id": 3}},
        {"oauth_refresh_tokens": {"t": {"user_type": "Agency", "company_id": "c"}}},
        {"oauth_refresh_tokens": {"t": {"user_type": "Location", "company_id": "c"}}},
        {"oauth_refresh_tokens": {"t": {"user_type": "Company", "location_id": "l"}}},
        {"oauth_refresh_tokens": {"t": {"user_type": "Location", "location_id": "l", "x": "y"}}},
        {
            "oauth_refresh_tokens": {
                "t": {"user_type": "Location", "location_id": "l"},
                "u": {"user_type": "Location", "location_id": "l"},
            }
        },
        {"oauth_installed": {"c": "l"}},
        {"access_token_ttl_s": 0},
        {"oauth_token_delay_s": -1},
    ):
        with pytest.raises(ValueError):
            SandboxConfig.from_dict(bad)


def test_config_updates_keep_rotated_grants_and_reset_restores_them(sandbox: Factory) -> None:
    sb, client = sandbox()
    rotated = refresh(client, LOCATION_REFRESH).json()["refresh_token"]
    # An unrelated update (over HTTP, as another process would) leaves grants alone...
    update = client.post("/_sandbox/config", json={"latency_ms": 0, **OAUTH})
    assert update.status_code == 200
    assert sb.state.refresh_token_valid(rotated)
    # ...a new grant starts, and a changed one takes the configured token.
    grants = {
        "refresh-location-2": {"user_type": "Location", "location_id": LOC_2},
        "refresh-company-2": {"user_type": "Company", "company_id": COMPANY},
    }
    sb.update_config(oauth_refresh_tokens=grants)
    assert not sb.state.refresh_token_valid(rotated)  # its grant left the config
    assert not sb.state.refresh_token_valid(COMPANY_REFRESH)
    assert refresh(client, "refresh-location-2").status_code == 200
    sb.update_config(oauth_refresh_tokens=OAUTH["oauth_refresh_tokens"])
    sb.reset()
    assert sb.state.refresh_uses() == []
    assert refresh(client, LOCATION_REFRESH).status_code == 200

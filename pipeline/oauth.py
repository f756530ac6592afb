"""OAuth signing: a Marketplace app's tokens, refreshed and minted as the run needs them.

A run that outlives a one-day access token, or a nightly job, must refresh; an agency with
hundreds of sub-accounts has one login (a ``Company`` credential) from which a location token
is minted for each sub-account where the app is installed. Both happen here, with the
credentials file (``pipeline.credentials``) as the only state:

- **Refresh** (``POST /oauth/token``, form-encoded, ``grant_type=refresh_token``): ahead of
  expiry (``--refresh-margin``), and once after a 401 (HighLevel's 401 does not tell an
  expired token from a bad one). The whole refresh runs inside the file's transaction: the
  file's lock is held, the file read afresh (another run may have refreshed: its token is
  used, no refresh token is spent twice), the request made, and the answer saved (fsynced)
  before the new token signs anything. A token that a forced refresh produced is not
  force-refreshed again: its 401 stands, and the guards stop the token.
- **Mint** (``POST /oauth/locationToken``, v3 ``/oauth/location-token``): a location token
  from the agency's, on the location's first need and again when it expires, cached in the
  file. A mint refused because the app is not installed there makes the location's rows
  ``skipped`` / ``not_installed``, without a create.

The requests run in a worker thread over their own small HTTP client (httpx): they are a few
a day per credential, and running them synchronously keeps the file's lock, the request and
the save in one thread, in order. Each is retried a few times on 429, 5xx or a dropped
connection, waiting as ``Retry-After`` says; a refused grant is final (``unauthorized``).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog

from pipeline import constants
from pipeline.auth import Headers, NoToken
from pipeline.credentials import (
    Credential,
    CredentialsState,
    CredentialsStore,
    expiry,
)
from pipeline.errors import one_line
from pipeline.outcomes import RETRYABLE, Code

log = structlog.get_logger("pipeline.oauth")

TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
MINT_PATHS = {"v2": "/oauth/locationToken", "v3": "/oauth/location-token"}
OAUTH_VERSION_V2 = "2021-07-28"  # the only Version the v2 OAuth spec accepts
ATTEMPTS = 4  # per OAuth request, on 429, 5xx and dropped connections
FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}


@dataclass(frozen=True, slots=True)
class OAuthSource:
    """What a run needs to sign with OAuth, read once from the file (picklable: workers
    build their own signer from it)."""

    path: Path
    margin_s: float
    locations: tuple[str, ...]  # sub-accounts with a credential of their own
    company_id: str | None  # the agency's, when the file has a Company credential

    @classmethod
    def load(cls, path: Path, margin_s: float) -> OAuthSource:
        """Read and check the file (a bad one is a one-line usage error), and the client
        secret's source."""
        state = CredentialsStore(path).read()
        state.app.client_secret()  # fails now, not at the first refresh, when it is missing
        company = state.company()
        own = tuple(c.location_id for c in state.credentials if c.location_id is not None)
        return cls(path, margin_s, own, company.company_id if company else None)

    def serves(self, location_id: str) -> bool:
        """Whether a token can be tried for the location (an agency: any location)."""
        return location_id in self.locations or self.company_id is not None

    def key(self, location_id: str) -> int:
        """Locations with their own credential each have their own token; the minted ones
        all hang on the agency's (one 401 there is a 401 for all)."""
        if location_id in self.locations:
            return 1 + self.locations.index(location_id)
        return 0

    def source(self, location_id: str) -> str:
        if location_id in self.locations:
            return f"--oauth-file {self.path} (the location's own credential)"
        return f"--oauth-file {self.path} (minted from agency {self.company_id})"


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: datetime
    forced: bool = False  # obtained because the one before drew a 401


class OAuthSigner:
    """Signs each request with the location's OAuth access token (see the module)."""

    def __init__(
        self,
        source: OAuthSource,
        *,
        base_url: str,
        api_version: str,
        timeout: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._source = source
        self._store = CredentialsStore(source.path)
        self._margin = timedelta(seconds=source.margin_s)
        self._base_url = base_url.rstrip("/")
        self._v3 = api_version == "v3"
        self._timeout = min(timeout, 30.0)
        self._clock = clock
        self._tokens: dict[str, _Token] = {}  # location -> its access token now
        self._company: _Token | None = None
        self._refused: dict[str, NoToken] = {}  # location, or "" for the agency -> why not
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.refreshes = 0
        self.mints = 0

    def key(self, location_id: str) -> int:
        return self._source.key(location_id)

    async def headers(self, location_id: str) -> Headers | None:
        token = self._usable(location_id)
        if token is None:
            async with self._locks[location_id]:
                token = self._usable(location_id) or await self._obtain(location_id, None)
        return {"Authorization": f"Bearer {token.value}"}

    async def renew(self, location_id: str, used: Headers | None) -> bool:
        stale = (used or {}).get("Authorization", "").removeprefix("Bearer ")
        async with self._locks[location_id]:
            now = self._tokens.get(location_id)
            if now is not None and now.value != stale:
                return True  # another request renewed it meanwhile
            if now is not None and now.forced:
                return False  # a fresh token drew the 401 too: it stands
            try:
                renewed = await self._obtain(location_id, stale)
            except NoToken:
                return False
            renewed.forced = True
            return True

    async def aclose(self) -> None:
        return None

    # -- obtaining ----------------------------------------------------------------------

    def _usable(self, location_id: str) -> _Token | None:
        if location_id in self._refused:
            raise self._refused[location_id]
        token = self._tokens.get(location_id)
        if token is not None and token.expires_at - self._margin > self._clock():
            return token
        return None

    async def _obtain(self, location_id: str, stale: str | None) -> _Token:
        """A token for the location that is not ``stale``: its own credential's, refreshed
        when needed, or one minted from the agency's."""
        if location_id in self._source.locations:
            value, expires_at = await asyncio.to_thread(self._refresh_own, location_id, stale)
        elif self._source.company_id is not None:
            value, expires_at = await self._minted(location_id, stale)
        else:
            raise NoToken(Code.NO_TOKEN, f"--oauth-file {self._source.path} has no credential")
        token = _Token(value, expires_at)
        self._tokens[location_id] = token
        return token

    def _refresh_own(self, location_id: str, stale: str | None) -> tuple[str, datetime]:
        with self._store.transaction() as tx:
            credential = tx.state.for_location(location_id)
            if credential is None:  # removed from the file while the run went on
                raise NoToken(Code.NO_TOKEN, "the location's credential left the oauth file")
            try:
                return self._fresh_or_refreshed(tx, credential, stale)
            except NoToken as refused:
                if refused.code not in RETRYABLE:  # a refused grant: never asked again
                    self._refused[location_id] = refused
                raise

    def _fresh_or_refreshed(
        self, tx: Any, credential: Credential, stale: str | None
    ) -> tuple[str, datetime]:
        """Inside the file's transaction: the credential's access token if it is fresh and
        not ``stale`` (another run may have refreshed it), else a refresh, saved first."""
        now = self._clock()
        if credential.fresh(self._margin, now) and credential.access_token != stale:
            assert credential.access_token is not None and credential.expires_at is not None
            return credential.access_token, credential.expires_at
        answer = self._refresh(tx.state, credential)
        expires_at = expiry(now, float(answer["expires_in"]))
        tx.save(
            tx.state.with_refreshed(
                credential,
                access_token=answer["access_token"],
                refresh_token=answer["refresh_token"],
                expires_at=expires_at,
            )
        )
        self.refreshes += 1
        log.info("oauth token refreshed", installation=credential.subject)
        return answer["access_token"], expires_at

    def _refresh(self, state: CredentialsState, credential: Credential) -> dict[str, Any]:
        form = {
            "client_id": state.app.client_id,
            "client_secret": state.app.client_secret(),
            "grant_type": "refresh_token",
            "refresh_token": credential.refresh_token,
            "user_type": credential.user_type,
        }
        answer = self._post(TOKEN_PATH, form, headers={}, what=credential.subject)
        for key in ("access_token", "refresh_token", "expires_in"):
            if not answer.get(key):
                raise NoToken(Code.UNAUTHORIZED, f"the token answer lacks {key}")
        return answer

    async def _minted(self, location_id: str, stale: str | None) -> tuple[str, datetime]:
        """A location token from the agency's: cached in the file, minted when missing,
        expiring or ``stale``; after a 401 on the agency's token, once more with a fresh
        one."""
        return await asyncio.to_thread(self._mint_sync, location_id, stale)

    def _mint_sync(self, location_id: str, stale: str | None) -> tuple[str, datetime]:
        if "" in self._refused:
            raise self._refused[""]
        with self._store.transaction() as tx:
            now = self._clock()
            cached = tx.state.minted_for(location_id)
            if (
                cached is not None
                and cached.fresh(self._margin, now)
                and cached.access_token != stale
            ):
                return cached.access_token, cached.expires_at
            company = tx.state.company()
            if company is None:
                raise NoToken(Code.NO_TOKEN, "the oauth file has no agency credential")
            try:
                agency, _ = self._fresh_or_refreshed(tx, company, None)
            except NoToken as refused:
                self._refused[""] = refused
                raise
            answer = self._mint(location_id, agency, company)
            expires_at = expiry(now, float(answer["expires_in"]))
            tx.save(
                tx.state.without_expired(now).with_minted(
                    location_id, access_token=answer["access_token"], expires_at=expires_at
                )
            )
            self.mints += 1
            return answer["access_token"], expires_at

    def _mint(self, location_id: str, agency: str, company: Credential) -> dict[str, Any]:
        form = {"companyId": company.company_id or "", "locationId": location_id}
        version = "v3" if self._v3 else OAUTH_VERSION_V2
        headers = {"Authorization": f"Bearer {agency}", constants.H_VERSION: version}
        path = MINT_PATHS["v3" if self._v3 else "v2"]
        try:
            answer = self._post(path, form, headers=headers, what=f"Location {location_id}")
        except NoToken as refused:
            # The mint's own inputs are the company and the location: a 400 or 422 refuses
            # the location (the app is not installed there); a 401 or 403 is about the
            # agency's token and stands as it is.
            if refused.http_status not in (400, 404, 422):
                raise
            missing = NoToken(Code.NOT_INSTALLED, f"no token can be minted here: {refused.message}")
            self._refused[location_id] = missing
            raise missing from None
        if not answer.get("access_token") or not answer.get("expires_in"):
            raise NoToken(Code.NOT_INSTALLED, "the mint's answer holds no access token")
        return answer

    def _post(
        self, path: str, form: dict[str, str], *, headers: dict[str, str], what: str
    ) -> dict[str, Any]:
        """One form-encoded POST, retried on 429, 5xx and dropped connections; a refusal
        (another 4xx) raises ``NoToken`` with the API's message."""
        delay = 0.5
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with httpx.Client(base_url=self._base_url, timeout=self._timeout) as http:
                    answer = http.post(path, data=form, headers={**FORM, **headers})
            except httpx.HTTPError as exc:
                if attempt == ATTEMPTS:
                    raise NoToken(Code.NETWORK_ERROR, f"{what}: {one_line(str(exc))}") from exc
                time.sleep(delay)
                delay *= 2
                continue
            if answer.status_code == 429 or answer.status_code >= 500:
                if attempt == ATTEMPTS:
                    raise NoToken(Code.SERVER_ERROR, f"{what}: HTTP {answer.status_code}")
                wait = answer.headers.get(constants.H_RETRY_AFTER)
                time.sleep(float(wait) if wait and wait.isdigit() else delay)
                delay *= 2
                continue
            body = _json(answer)
            if 200 <= answer.status_code < 300:
                return body
            message = str(
                body.get("message") or body.get("error_description") or body.get("error") or ""
            )
            log.warning(
                "oauth request refused", installation=what, http_status=answer.status_code,
                message=message,
            )  # fmt: skip
            raise NoToken(
                Code.UNAUTHORIZED,
                f"{what}: HTTP {answer.status_code} {message}".strip(),
                http_status=answer.status_code,
            )
        raise AssertionError("unreachable")


def _json(answer: httpx.Response) -> dict[str, Any]:
    """The body as a dict, with v3's camelCase token fields under their v2 names too."""
    try:
        body = answer.json()
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    for v2, v3 in (
        ("access_token", "accessToken"),
        ("refresh_token", "refreshToken"),
        ("expires_in", "expiresIn"),
    ):
        if v2 not in body and v3 in body:
            body[v2] = body[v3]
    return body

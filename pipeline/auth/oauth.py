"""OAuth signing: a Marketplace app's tokens, refreshed and minted as the run needs them.

A run that outlives a one-day access token, or a nightly job, must refresh; an agency with
hundreds of sub-accounts has one login (a ``Company`` credential) from which a location token
is minted for each sub-account where the app is installed. Both happen here, with the
credentials file (``pipeline.auth.credentials``) as the only state:

- **Refresh** (``POST /oauth/token``, form-encoded, ``grant_type=refresh_token``): ahead of
  expiry, and once after a 401 (HighLevel's 401 does not tell an expired token from a bad
  one). "Ahead" is ``--refresh-margin`` before expiry, at most half the token's lifetime:
  a token living 2 s under the default 300 s margin is refreshed with 1 s left, not before
  every request. Each attempt runs inside the file's transaction: the file's lock is held,
  the file read afresh (another run may have refreshed: its token is used, no refresh token
  is spent twice), the request made, and the answer saved (fsynced) before the new token
  signs anything. A token that a forced refresh produced is not force-refreshed again: its
  401 stands, and the guards stop the token.
- **Mint** (``POST /oauth/locationToken``, v3 ``/oauth/location-token``): a location token
  from the agency's, on the location's first need and again when it expires, cached in the
  file. A mint refused because the app is not installed there makes the location's rows
  ``skipped`` / ``not_installed``, without a create.

Everything is a coroutine on the run's loop (``pipeline.auth.oauth_http``): the lock is polled
with ``asyncio.sleep``, the waits between attempts are ``asyncio.sleep`` outside the lock,
and a stop cancels all of it like any request (a refresh in flight at a stop has the grace
of requests in flight to land and be saved). Each request is tried ``ATTEMPTS`` times on a
429, a 5xx or a dropped connection; a refused grant is final (``unauthorized``). The rows
that waited on one location's failed refresh share its failure instead of each trying
again. Another run holding the file's lock past its bound (``CredentialsLocked``) raises
``CredentialsBusy``: the run stops, exit 75.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import structlog

from pipeline.auth.credentials import (
    LOCK_TIMEOUT,
    Credential,
    CredentialsLocked,
    CredentialsState,
    CredentialsStore,
    Transaction,
    expiry,
)
from pipeline.auth.oauth_http import OAuthHttp
from pipeline.auth.signer import CredentialsBusy, Headers, NoToken
from pipeline.core import constants
from pipeline.core.errors import UsageError
from pipeline.core.outcomes import RETRYABLE, Code

log = structlog.get_logger("pipeline.auth.oauth")
T = TypeVar("T")

TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
MINT_PATHS = {"v2": "/oauth/locationToken", "v3": "/oauth/location-token"}
OAUTH_VERSION_V2 = "2021-07-28"  # the only Version the v2 OAuth spec accepts
ATTEMPTS = 4  # per OAuth request, on 429, 5xx and dropped connections
FIRST_WAIT_S = 0.5  # between attempts, doubling
# How long a run waits for another run's hold of the credentials file before it stops
# (exit 75); for tests and for machines whose disks are slow, the default being
# ``credentials.LOCK_TIMEOUT``.
LOCK_TIMEOUT_ENV = "PIPELINE_OAUTH_LOCK_TIMEOUT"
AGENCY = ""  # the key of the agency's token where a location's would be


@dataclass(frozen=True, slots=True)
class OAuthSource:
    """What a run needs to sign with OAuth, read once from the file (picklable: workers
    build their own signer from it)."""

    path: Path
    margin_s: float
    locations: tuple[str, ...]  # sub-accounts with a credential of their own
    company_id: str | None  # the agency's, when the file has a Company credential
    lock_timeout_s: float = LOCK_TIMEOUT

    @classmethod
    def load(
        cls, path: Path, margin_s: float, environ: Mapping[str, str] | None = None
    ) -> OAuthSource:
        """Read and check the file (a bad one is a one-line usage error), and the client
        secret's source."""
        state = CredentialsStore(path).read()
        state.app.client_secret()  # fails now, not at the first refresh, when it is missing
        company = state.company()
        own = tuple(c.location_id for c in state.credentials if c.location_id is not None)
        lock_timeout = _lock_timeout(os.environ if environ is None else environ)
        return cls(path, margin_s, own, company.company_id if company else None, lock_timeout)

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
        if self.company_id is None:
            return f"--oauth-file {self.path} (no credential for it, and no agency's to mint one)"
        return f"--oauth-file {self.path} (minted from agency {self.company_id})"


def _lock_timeout(environ: Mapping[str, str]) -> float:
    raw = environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return LOCK_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise UsageError(f"{LOCK_TIMEOUT_ENV}={raw}: expected a number of seconds")
    return seconds


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: datetime
    lifetime_s: float | None  # as its answer said; None for one read from the file
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
        self._store = CredentialsStore(source.path, lock_timeout=source.lock_timeout_s)
        self._http = OAuthHttp(base_url, min(timeout, 30.0))
        self._v3 = api_version == "v3"
        self._clock = clock
        # The tokens' lifetime, as the last answer said: an app's tokens share it, so a token
        # another run wrote in the file is taken to live as long.
        self._lifetime_s: float | None = None
        self._tokens: dict[str, _Token] = {}  # location -> its access token now
        self._company: _Token | None = None
        self._refused: dict[str, NoToken] = {}  # location, or AGENCY -> why never
        # location -> when and why the last try failed for now
        self._failed: dict[str, tuple[float, NoToken | CredentialsBusy]] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.refreshes = 0
        self.mints = 0

    def key(self, location_id: str) -> int:
        return self._source.key(location_id)

    def margin(self, lifetime_s: float | None = None) -> timedelta:
        """How long before expiry a token is renewed: ``--refresh-margin``, at most half the
        token's lifetime (``lifetime_s``, else the last answer's), so that a margin at or
        above the lifetime does not renew before every request."""
        lifetime = lifetime_s if lifetime_s is not None else self._lifetime_s
        margin = (
            self._source.margin_s if lifetime is None else min(self._source.margin_s, lifetime / 2)
        )
        return timedelta(seconds=margin)

    async def headers(self, location_id: str) -> Headers | None:
        token = self._usable(location_id)
        if token is None:
            asked = time.monotonic()
            async with self._locks[location_id]:
                token = self._usable(location_id) or await self._obtain(location_id, None, asked)
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
                renewed = await self._obtain(location_id, stale, None)
            except NoToken as missing:
                if missing.code in RETRYABLE:
                    raise  # not now: the row is tried again, the token is not condemned
                return False
            renewed.forced = True
            return True

    async def lasting(
        self, location_id: str, left: timedelta
    ) -> tuple[str, datetime, float | None]:
        """A token with at least ``left`` to live (``pipeline oauth export-tokens``): the one
        held, else a new one, refreshed or minted; its expiry and, when new, its lifetime."""
        await self.headers(location_id)
        async with self._locks[location_id]:
            token = self._tokens[location_id]
            if token.expires_at - self._clock() < left:
                token = await self._obtain(location_id, token.value, None)
        return token.value, token.expires_at, token.lifetime_s

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- obtaining ----------------------------------------------------------------------

    def _usable(self, location_id: str) -> _Token | None:
        if location_id in self._refused:
            raise self._refused[location_id]
        token = self._tokens.get(location_id)
        if token is not None and self._fresh(token):
            return token
        return None

    def _fresh(self, token: _Token) -> bool:
        return token.expires_at - self.margin(token.lifetime_s) > self._clock()

    async def _obtain(self, location_id: str, stale: str | None, asked: float | None) -> _Token:
        """A token for the location that is not ``stale``: its own credential's, refreshed
        when needed, or one minted from the agency's."""
        if location_id in self._source.locations:
            obtain = self._refresh_own
        elif self._source.company_id is not None:
            obtain = self._minted
        else:
            raise NoToken(Code.NO_TOKEN, f"--oauth-file {self._source.path} has no credential")
        token = await self._shared(location_id, asked, lambda: obtain(location_id, stale))
        self._tokens[location_id] = token
        return token

    async def _shared(
        self, key: str, asked: float | None, obtain: Callable[[], Awaitable[_Token]]
    ) -> _Token:
        """``obtain()``, unless a passing failure of ``key``'s ended after ``asked`` (when the
        caller began to wait on ``key``'s lock; None: try regardless): then that failure.
        The rows queued behind a refresh that failed share its answer, rather than each
        spending its ``ATTEMPTS`` (and their waits) once more."""
        failed = self._failed.get(key)
        if asked is not None and failed is not None and failed[0] >= asked:
            raise _again(failed[1])
        try:
            return await obtain()
        except CredentialsBusy as busy:
            self._failed[key] = (time.monotonic(), busy)
            raise
        except NoToken as missing:
            if missing.code in RETRYABLE:
                self._failed[key] = (time.monotonic(), missing)
            raise

    async def _attempts(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt`` until it answers, ``ATTEMPTS`` times at most while its failure is a
        passing one; the waits are outside the file's lock, so another run may go on."""
        wait = FIRST_WAIT_S
        for number in range(1, ATTEMPTS + 1):
            try:
                return await attempt()
            except NoToken as failed:
                if failed.code not in RETRYABLE or number == ATTEMPTS:
                    raise
                await asyncio.sleep(failed.retry_after_s if failed.retry_after_s else wait)
                wait *= 2
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Transaction]:
        """The file's transaction; another run's hold past the bound is ``CredentialsBusy``."""
        try:
            async with self._store.atransaction() as tx:
                yield tx
        except CredentialsLocked as locked:
            raise CredentialsBusy(str(locked)) from None

    async def _refresh_own(self, location_id: str, stale: str | None) -> _Token:
        async def attempt() -> _Token:
            async with self._transaction() as tx:
                credential = tx.state.for_location(location_id)
                if credential is None:  # removed from the file while the run went on
                    raise NoToken(Code.NO_TOKEN, "the location's credential left the oauth file")
                return await self._fresh_or_refreshed(tx, credential, stale)

        try:
            return await self._attempts(attempt)
        except NoToken as refused:
            if refused.code not in RETRYABLE:  # a refused grant: never asked again
                self._refused[location_id] = refused
            raise

    async def _fresh_or_refreshed(
        self, tx: Transaction, credential: Credential, stale: str | None
    ) -> _Token:
        """Inside the file's transaction: the credential's access token if it is fresh and
        not ``stale`` (another run may have refreshed it), else a refresh, saved first."""
        now = self._clock()
        if credential.fresh(self.margin(), now) and credential.access_token != stale:
            assert credential.access_token is not None and credential.expires_at is not None
            return _Token(credential.access_token, credential.expires_at, None)
        answer = await self._refresh(tx.state, credential)
        lifetime = self._lifetime_s = _seconds(answer)
        expires_at = expiry(now, lifetime)
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
        return _Token(answer["access_token"], expires_at, lifetime)

    async def _refresh(self, state: CredentialsState, credential: Credential) -> dict[str, Any]:
        form = {
            "client_id": state.app.client_id,
            "client_secret": state.app.client_secret(),
            "grant_type": "refresh_token",
            "refresh_token": credential.refresh_token,
            "user_type": credential.user_type,
        }
        answer = await self._http.post(TOKEN_PATH, form, headers={}, what=credential.subject)
        for key in ("access_token", "refresh_token", "expires_in"):
            if not answer.get(key):
                raise NoToken(Code.UNAUTHORIZED, f"the token answer lacks {key}")
        _seconds(answer)  # a number, before anything is saved
        return answer

    async def _agency(self) -> _Token:
        """The agency's access token, refreshed (and saved) when it is due."""
        asked = time.monotonic()
        async with self._locks[AGENCY]:
            if AGENCY in self._refused:
                raise self._refused[AGENCY]
            if self._company is None or not self._fresh(self._company):
                self._company = await self._shared(AGENCY, asked, self._refresh_agency)
            return self._company

    async def _refresh_agency(self) -> _Token:
        async def attempt() -> _Token:
            async with self._transaction() as tx:
                company = tx.state.company()
                if company is None:
                    raise NoToken(Code.NO_TOKEN, "the oauth file has no agency credential")
                return await self._fresh_or_refreshed(tx, company, None)

        try:
            return await self._attempts(attempt)
        except NoToken as refused:
            if refused.code not in RETRYABLE:
                self._refused[AGENCY] = refused
            raise

    async def _minted(self, location_id: str, stale: str | None) -> _Token:
        """A location token from the agency's: cached in the file, minted when missing,
        expiring or ``stale``."""
        agency = await self._agency()

        async def attempt() -> _Token:
            async with self._transaction() as tx:
                now = self._clock()
                cached = tx.state.minted_for(location_id)
                if (
                    cached is not None
                    and cached.fresh(self.margin(), now)
                    and cached.access_token != stale
                ):
                    return _Token(cached.access_token, cached.expires_at, None)
                company = tx.state.company()
                if company is None:
                    raise NoToken(Code.NO_TOKEN, "the oauth file has no agency credential")
                answer = await self._mint(location_id, agency.value, company)
                lifetime = self._lifetime_s = _seconds(answer)
                expires_at = expiry(now, lifetime)
                tx.save(
                    tx.state.without_expired(now).with_minted(
                        location_id, access_token=answer["access_token"], expires_at=expires_at
                    )
                )
                self.mints += 1
                return _Token(answer["access_token"], expires_at, lifetime)

        return await self._attempts(attempt)

    async def _mint(self, location_id: str, agency: str, company: Credential) -> dict[str, Any]:
        form = {"companyId": company.company_id or "", "locationId": location_id}
        version = "v3" if self._v3 else OAUTH_VERSION_V2
        headers = {"Authorization": f"Bearer {agency}", constants.H_VERSION: version}
        path = MINT_PATHS["v3" if self._v3 else "v2"]
        try:
            answer = await self._http.post(
                path, form, headers=headers, what=f"Location {location_id}"
            )
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


def _seconds(answer: dict[str, Any]) -> float:
    """The answer's ``expires_in``, a number of seconds (else the answer is refused)."""
    try:
        seconds = float(answer["expires_in"])
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise NoToken(Code.UNAUTHORIZED, "the token answer's expires_in is not a number")
    return seconds


def _again(failed: NoToken | CredentialsBusy) -> NoToken | CredentialsBusy:
    """A copy of a failure to raise once more (to a row that waited on it)."""
    if isinstance(failed, CredentialsBusy):
        return CredentialsBusy(failed.message)
    return NoToken(
        failed.code,
        failed.message,
        failed.http_status,
        retry_after_s=failed.retry_after_s,
        connect_failed=failed.connect_failed,
    )

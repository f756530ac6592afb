"""The OAuth credentials file's model: the app, each installation's tokens, the minted cache.

Plain immutable values (``pipeline.auth.credentials`` explains the file and why it is state):
reading and writing them is ``pipeline.auth.credentials_file``, the lock and the atomic save
``pipeline.auth.credentials``. Every token and the client secret are handed to
``logs.register_secret`` as soon as they exist (a ``Credential`` or ``Minted`` registers its
tokens when it is made).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pipeline.core import logs
from pipeline.core.errors import UsageError

UserType = Literal["Location", "Company"]
Format = Literal["toml", "json"]

OPTION = "--oauth-file"
USER_TYPES: tuple[UserType, ...] = ("Location", "Company")


@dataclass(frozen=True, slots=True)
class App:
    """The Marketplace app: its ids, and where its client secret is (never the secret)."""

    client_id: str
    app_id: str | None = None
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    # For messages: the file this came from ("--oauth-file oauth.toml").
    origin: str = field(default=OPTION, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.client_secret_env is None) == (self.client_secret_file is None):
            raise ValueError("an App needs exactly one of client_secret_env, client_secret_file")

    def client_secret(self, environ: Mapping[str, str] | None = None) -> str:
        """The client secret, from the environment variable or the file named; registered for
        redaction before it is returned."""
        if self.client_secret_env is not None:
            env = os.environ if environ is None else environ
            secret = (env.get(self.client_secret_env) or "").strip()
            if not secret:
                raise UsageError(
                    f"{self.origin}: client_secret_env names {self.client_secret_env}, "
                    "which is not set"
                )
        else:
            assert self.client_secret_file is not None
            try:
                secret = self.client_secret_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(
                    f"{self.origin}: client_secret_file {self.client_secret_file} "
                    f"cannot be read ({os_reason(exc)})"
                ) from exc
            if not secret:
                raise UsageError(
                    f"{self.origin}: client_secret_file {self.client_secret_file} is empty"
                )
        logs.register_secret(secret)
        return secret


@dataclass(frozen=True, slots=True)
class Credential:
    """One installation's tokens: a sub-account's (``Location``) or an agency's (``Company``).

    ``expires_at`` is kept in UTC to the second (the file's precision), so a state compares
    equal to the same state read back."""

    user_type: UserType
    refresh_token: str = field(repr=False)  # tokens stay out of reprs and tracebacks
    location_id: str | None = None
    company_id: str | None = None  # a Location's agency, when known; a Company's own id
    access_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.user_type not in USER_TYPES:
            raise ValueError(f"user_type must be Location or Company, not {self.user_type!r}")
        if self.user_type == "Location" and not self.location_id:
            raise ValueError("a Location credential needs location_id")
        if self.user_type == "Company" and (not self.company_id or self.location_id):
            raise ValueError("a Company credential needs company_id and has no location_id")
        if not self.refresh_token:
            raise ValueError("a credential needs a refresh_token")
        object.__setattr__(self, "expires_at", _normal(self.expires_at))
        logs.register_secret(self.refresh_token)
        logs.register_secret(self.access_token or "")

    @property
    def key(self) -> tuple[UserType, str]:
        """What identifies the installation in the file: its type and location or company."""
        owner = self.location_id if self.user_type == "Location" else self.company_id
        assert owner is not None
        return (self.user_type, owner)

    @property
    def subject(self) -> str:
        """The installation as a message names it ("Location tDtD…"), never a token."""
        return f"{self.key[0]} {self.key[1]}"

    def fresh(self, margin: timedelta, now: datetime) -> bool:
        """Whether it holds an access token still valid for more than ``margin`` at ``now``."""
        return _fresh(self.access_token, self.expires_at, margin, now)


@dataclass(frozen=True, slots=True)
class Minted:
    """A location access token minted from the agency's token, cached so that a restarted run
    does not mint again. Minted tokens have no refresh token: when one expires, mint anew."""

    location_id: str
    access_token: str = field(repr=False)
    expires_at: datetime

    def __post_init__(self) -> None:
        if not self.location_id or not self.access_token:
            raise ValueError("a minted token needs location_id and access_token")
        object.__setattr__(self, "expires_at", _normal(self.expires_at))
        logs.register_secret(self.access_token)

    def fresh(self, margin: timedelta, now: datetime) -> bool:
        """Whether it is still valid for more than ``margin`` at ``now``."""
        return _fresh(self.access_token, self.expires_at, margin, now)


@dataclass(frozen=True, slots=True)
class CredentialsState:
    """What the file holds. Immutable: the ``with_*`` methods return a new state to save."""

    app: App
    credentials: tuple[Credential, ...]
    minted: tuple[Minted, ...] = ()
    # The file's text as read, so that a rewrite changes only what changed and keeps a
    # person's comments and key order. Not part of the state's value.
    source: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        keys = [c.key for c in self.credentials]
        if len(set(keys)) != len(keys):
            raise ValueError("an installation is listed twice")
        if sum(c.user_type == "Company" for c in self.credentials) > 1:
            raise ValueError("more than one Company credential")
        if not self.credentials:
            raise ValueError("a state needs at least one credential")
        if len({m.location_id for m in self.minted}) != len(self.minted):
            raise ValueError("a location has two minted tokens")

    def for_location(self, location_id: str) -> Credential | None:
        """The sub-account's own credential (user type Location), if the file has one."""
        return next((c for c in self.credentials if c.key == ("Location", location_id)), None)

    def company(self) -> Credential | None:
        """The agency's credential (user type Company), if the file has one."""
        return next((c for c in self.credentials if c.user_type == "Company"), None)

    def minted_for(self, location_id: str) -> Minted | None:
        """The cached minted token of ``location_id``, fresh or not."""
        return next((m for m in self.minted if m.location_id == location_id), None)

    def usable_token(self, location_id: str, *, margin: timedelta, now: datetime) -> str | None:
        """An access token for ``location_id`` valid beyond ``margin`` without any request:
        its own credential's, else a minted one; None when a refresh or a mint is needed."""
        own = self.for_location(location_id)
        if own is not None and own.fresh(margin, now):
            return own.access_token
        minted = self.minted_for(location_id)
        if minted is not None and minted.fresh(margin, now):
            return minted.access_token
        return None

    def with_refreshed(
        self,
        credential: Credential,
        *,
        access_token: str,
        refresh_token: str,
        expires_at: datetime,
    ) -> CredentialsState:
        """The state after refreshing ``credential``: its new tokens in place of the old.

        ``credential`` must be the one this state holds (same refresh token): refreshing a
        stale copy means a token was spent that this state no longer has, a caller's bug that
        would otherwise overwrite another run's refresh."""
        index = self._index(credential)
        held = self.credentials[index]
        if held.refresh_token != credential.refresh_token:
            raise ValueError(f"{credential.subject}: refreshed from a stale copy of the state")
        new = replace(
            held,
            refresh_token=refresh_token,
            access_token=access_token,
            expires_at=expires_at,
        )
        rest = self.credentials
        return replace(self, credentials=(*rest[:index], new, *rest[index + 1 :]))

    def with_minted(
        self, location_id: str, *, access_token: str, expires_at: datetime
    ) -> CredentialsState:
        """The state with a newly minted token of ``location_id`` cached (replacing any)."""
        new = Minted(location_id, access_token, expires_at)
        minted = list(self.minted)
        spot = next((i for i, m in enumerate(minted) if m.location_id == location_id), None)
        if spot is None:
            minted.append(new)
        else:
            minted[spot] = new
        return replace(self, minted=tuple(minted))

    def without_expired(self, now: datetime) -> CredentialsState:
        """The state without minted tokens expired at ``now``, so the cache does not grow."""
        return replace(self, minted=tuple(m for m in self.minted if m.expires_at > now))

    def _index(self, credential: Credential) -> int:
        for index, held in enumerate(self.credentials):
            if held.key == credential.key:
                return index
        raise ValueError(f"{credential.subject}: not in this state")


def expiry(now: datetime, expires_in: float) -> datetime:
    """When a token answered with ``expires_in`` seconds at ``now`` expires."""
    return now + timedelta(seconds=expires_in)


def _fresh(
    token: str | None, expires_at: datetime | None, margin: timedelta, now: datetime
) -> bool:
    return token is not None and expires_at is not None and expires_at - margin > now


def _normal(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("expires_at must be an aware datetime")
    return moment.astimezone(UTC).replace(microsecond=0)


def os_reason(exc: BaseException) -> str:
    """Why a file operation failed, in a word or two for a one-line message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__

"""What the sandbox remembers about OAuth: grants, their one valid refresh token, minted tokens.

HighLevel's Marketplace tokens behave in two ways a client must get right, and this store
models exactly those: an access token is good until it expires (a day), and a refresh token
is good for ONE use, which returns the next one. A grant is one installation (a location's
or a company's), identified as ``Location:<id>`` or ``Company:<id>``, and has exactly one
valid refresh token at any time; every refresh token it ever had stays known as spent, so
the log of uses can tell "spent twice" from "never issued".

Tests read it through ``SandboxThread.state`` (``oauth()``, ``refresh_uses()``,
``refresh_token_valid()``). Like the request log, everything it shows names a token by
``token_label`` only; the tokens themselves never leave this module except in the API's
own answers.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipeline.sandbox.config import (
    USER_TYPE_COMPANY,
    USER_TYPE_LOCATION,
    SandboxConfig,
)
from pipeline.sandbox.state import ID_ALPHABET, ID_LENGTH, token_label

# Bytes of randomness in a minted token (hex-encoded: 64 characters, unguessable).
TOKEN_BYTES = 32

# Why a refresh-token use was refused, as ``RefreshUse.reason`` says it.
REASON_SPENT = "spent"  # a token this grant had before: used already (or superseded)
REASON_UNKNOWN = "unknown"  # never issued by this sandbox
REASON_CLIENT = "client"  # wrong client_id or client_secret; the token was not spent
REASON_USER_TYPE = "user_type"  # user_type does not match the grant; not spent
REASON_RATE_LIMITED = "rate_limited"  # 429 before rotation; not spent


def grant_key(user_type: str, entity_id: str) -> str:
    """``Location:<locationId>`` or ``Company:<companyId>``: one grant per installation."""
    return f"{user_type}:{entity_id}"


@dataclass(slots=True)
class Grant:
    """One installation of the app, and the refresh token that is valid for it now."""

    key: str
    user_type: str
    location_id: str | None
    company_id: str | None
    user_id: str
    refresh_token: str
    rotations: int = 0

    @property
    def rate_key(self) -> str:
        """The resource whose rate window a request for this grant takes a slot of."""
        entity = self.location_id if self.user_type == USER_TYPE_LOCATION else self.company_id
        assert entity is not None  # config validation guarantees it
        return entity


@dataclass(frozen=True, slots=True)
class AccessGrant:
    """What a minted access token stands for, until ``expires_at`` (monotonic seconds)."""

    user_type: str
    location_id: str | None
    company_id: str | None
    user_id: str
    scopes: frozenset[str]
    expires_at: float

    def expired(self, now: float) -> bool:
        """True from ``expires_at`` on: the token is then refused like a bad JWT."""
        return now >= self.expires_at


class RefreshUse(NamedTuple):
    """One presentation of a refresh token to ``/oauth/token``, accepted or not.

    ``token`` is the ``token_label`` of the refresh token presented, never the token.
    ``grant`` is the grant it belongs (or belonged) to, None when it was never issued.
    ``reason`` is None when accepted, else one of the ``REASON_*`` values.
    """

    t: float
    token: str
    accepted: bool
    grant: str | None
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        """The admin endpoint's shape."""
        return {
            "t": self.t,
            "token": self.token,
            "accepted": self.accepted,
            "grant": self.grant,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class OAuthSnapshot:
    """A copy of the OAuth state for tests: labels only, never tokens.

    ``refresh_tokens`` maps each grant to the label of its currently valid refresh token
    (compare with ``token_label`` of the token a client has stored). ``location_mints`` and
    ``company_mints`` count the access tokens minted per location and per company, by
    ``/oauth/token`` and ``/oauth/locationToken`` alike.
    """

    refresh_uses: list[RefreshUse]
    refresh_tokens: dict[str, str]
    location_mints: dict[str, int]
    company_mints: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """The admin endpoint's shape."""
        return {
            "refreshUses": [use.to_json() for use in self.refresh_uses],
            "refreshTokens": dict(self.refresh_tokens),
            "locationMints": dict(self.location_mints),
            "companyMints": dict(self.company_mints),
        }


@dataclass
class OAuthStore:
    """Grants, minted access tokens and the log of refresh-token uses.

    Lives on the server's event loop, like ``SandboxState``. A config update adds, replaces
    or drops only the grants whose configured refresh token changed, so rotating tokens a
    client holds survive unrelated config changes; ``reset`` starts over from the config.
    """

    grants: dict[str, Grant] = field(default_factory=dict)
    uses: list[RefreshUse] = field(default_factory=list)
    location_mints: dict[str, int] = field(default_factory=dict)
    company_mints: dict[str, int] = field(default_factory=dict)
    _valid: dict[str, str] = field(default_factory=dict)  # refresh token -> grant key
    _spent: dict[str, str] = field(default_factory=dict)  # refresh token -> grant key
    _access: dict[str, AccessGrant] = field(default_factory=dict)
    _seeded: dict[str, str] = field(default_factory=dict)  # grant key -> configured token
    _ids: random.Random = field(default_factory=random.Random)

    # -- config -----------------------------------------------------------------------------

    def apply(self, config: SandboxConfig) -> None:
        """Bring the configured grants in: new ones start, changed ones get the configured
        refresh token (the old one is spent), removed ones end (their token stops working)."""
        wanted: dict[str, tuple[str, dict[str, str]]] = {}
        for token, spec in config.oauth_refresh_tokens.items():
            user_type = spec["user_type"]
            entity = spec["location_id" if user_type == USER_TYPE_LOCATION else "company_id"]
            wanted[grant_key(user_type, entity)] = (token, spec)
        for key in [k for k in self._seeded if k not in wanted]:
            del self._seeded[key]
            grant = self.grants.pop(key, None)
            if grant is not None:
                self._retire(grant)
        for key, (token, spec) in wanted.items():
            if self._seeded.get(key) == token:
                continue
            self._seeded[key] = token
            self.install(spec["user_type"], spec.get("location_id"), spec.get("company_id"), token)

    def reset(self, config: SandboxConfig) -> None:
        """Forget every grant, token and use, then start from the config again."""
        self.grants.clear()
        self.uses.clear()
        self.location_mints.clear()
        self.company_mints.clear()
        self._valid.clear()
        self._spent.clear()
        self._access.clear()
        self._seeded.clear()
        self.apply(config)

    # -- grants and refresh tokens ----------------------------------------------------------

    def install(
        self,
        user_type: str,
        location_id: str | None,
        company_id: str | None,
        refresh_token: str | None = None,
        user_id: str | None = None,
    ) -> Grant:
        """Start (or restart) the grant of a location or company with a new refresh token.

        An existing grant keeps its user id and loses its current refresh token: a grant
        has one valid refresh token at a time.
        """
        entity = location_id if user_type == USER_TYPE_LOCATION else company_id
        assert entity is not None
        key = grant_key(user_type, entity)
        token = refresh_token or self.new_token()
        grant = self.grants.get(key)
        if grant is None:
            grant = Grant(
                key=key,
                user_type=user_type,
                location_id=location_id if user_type == USER_TYPE_LOCATION else None,
                company_id=company_id,
                user_id=user_id or self._new_id(),
                refresh_token=token,
            )
            self.grants[key] = grant
        else:
            self._retire(grant)
            grant.refresh_token = token
            if company_id is not None:
                grant.company_id = company_id
        self._spent.pop(token, None)
        self._valid[token] = key
        return grant

    def grant_of(self, refresh_token: str) -> Grant | None:
        """The grant whose valid refresh token this is, or None (spent, or never issued)."""
        key = self._valid.get(refresh_token)
        return None if key is None else self.grants.get(key)

    def refused_reason(self, refresh_token: str) -> tuple[str | None, str]:
        """For a token ``grant_of`` does not know: its former grant, and why it is refused."""
        key = self._spent.get(refresh_token)
        return (key, REASON_SPENT) if key is not None else (None, REASON_UNKNOWN)

    def rotate(self, grant: Grant) -> str:
        """Spend the grant's refresh token and give it a new one, which is returned."""
        self._retire(grant)
        grant.refresh_token = self.new_token()
        grant.rotations += 1
        self._valid[grant.refresh_token] = grant.key
        return grant.refresh_token

    def record_use(
        self, t: float, refresh_token: str, accepted: bool, grant: str | None, reason: str | None
    ) -> None:
        """Log one presentation of a refresh token (by label)."""
        self.uses.append(RefreshUse(t, token_label(refresh_token), accepted, grant, reason))

    def refresh_token_valid(self, refresh_token: str) -> bool:
        """Whether this refresh token would be accepted now."""
        return refresh_token in self._valid

    def _retire(self, grant: Grant) -> None:
        old = grant.refresh_token
        if self._valid.pop(old, None) is not None:
            self._spent[old] = grant.key

    # -- access tokens ----------------------------------------------------------------------

    def mint(
        self,
        user_type: str,
        location_id: str | None,
        company_id: str | None,
        user_id: str,
        config: SandboxConfig,
        now: float,
    ) -> str:
        """A new access token, valid ``config.access_token_ttl_s`` from ``now`` (monotonic).

        Older access tokens of the same grant stay valid until they expire, as JWTs do.
        """
        token = self.new_token()
        self._access[token] = AccessGrant(
            user_type=user_type,
            location_id=location_id if user_type == USER_TYPE_LOCATION else None,
            company_id=company_id,
            user_id=user_id,
            scopes=frozenset(config.oauth_scopes),
            expires_at=now + config.access_token_ttl_s,
        )
        if user_type == USER_TYPE_LOCATION:
            assert location_id is not None
            self.location_mints[location_id] = self.location_mints.get(location_id, 0) + 1
        elif company_id is not None and user_type == USER_TYPE_COMPANY:
            self.company_mints[company_id] = self.company_mints.get(company_id, 0) + 1
        return token

    def access(self, token: str) -> AccessGrant | None:
        """What a minted access token stands for (expired or not), or None if not minted here.

        Expired tokens are kept, so that they keep getting the expired-JWT answer rather
        than the unknown-token one.
        """
        return self._access.get(token)

    # -- views ------------------------------------------------------------------------------

    def snapshot(self) -> OAuthSnapshot:
        """A copy for tests and the admin endpoint (labels, never tokens)."""
        return OAuthSnapshot(
            refresh_uses=list(self.uses),
            refresh_tokens={
                key: token_label(grant.refresh_token) for key, grant in self.grants.items()
            },
            location_mints=dict(self.location_mints),
            company_mints=dict(self.company_mints),
        )

    @staticmethod
    def new_token() -> str:
        """An unguessable opaque token (the live API's are JWTs; a client must not parse them)."""
        return secrets.token_hex(TOKEN_BYTES)

    def _new_id(self) -> str:
        return "".join(self._ids.choices(ID_ALPHABET, k=ID_LENGTH))

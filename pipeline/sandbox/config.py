"""How a sandbox behaves: one plain, JSON-serialisable value.

The config crosses process boundaries (``--config-json``, ``POST /_sandbox/config``), so it
is a frozen dataclass that round-trips through a dict and refuses keys it does not know:
a typo in a benchmark's fault name must fail loudly rather than silently test nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pipeline.core.constants import DEFAULT_DAILY_LIMIT, DEFAULT_RATE_INTERVAL_S, DEFAULT_RATE_MAX
from pipeline.sandbox.latency import CONSTANT, LOGNORMAL, UNIFORM, Latency, parse_spread

DEFAULT_TOKEN = "sandbox-token"  # noqa: S105 - a public demo token, not a secret

# OAuth (a Marketplace app's tokens): HighLevel's access tokens live one day (``expires_in``
# 86399), user types are the spec's ``user_type`` enum.
DEFAULT_ACCESS_TOKEN_TTL_S = 86_399
USER_TYPE_LOCATION = "Location"
USER_TYPE_COMPANY = "Company"
USER_TYPES = (USER_TYPE_LOCATION, USER_TYPE_COMPANY)
# The app the sandbox plays (``appId`` of installedLocations and of a minted location token),
# shaped like HighLevel's 24-hex app ids.
DEFAULT_OAUTH_APP_ID = "6578278e879ad2646715ba9c"
# Scopes of every token the sandbox mints. The oauth.* pair is what an agency token needs
# for /oauth/locationToken and /oauth/installedLocations; HighLevel adds it to a minted
# location token as well.
DEFAULT_OAUTH_SCOPES = (
    "conversations.write",
    "conversations.readonly",
    "oauth.write",
    "oauth.readonly",
)
_GRANT_KEYS = frozenset({"user_type", "location_id", "company_id"})

# Fault fields in the order the single per-request draw walks them (see faults.py).
FAULT_FIELDS: tuple[str, ...] = (
    "fault_429",
    "fault_500",
    "fault_502_after_create",
    "fault_broken_body",
    "fault_drop",
    "fault_hang",
)

_INT_FIELDS = ("rate_max", "rate_interval_ms", "daily_limit", "create_status", "seed")
_FLOAT_FIELDS = (
    "latency_ms",
    "latency_jitter_ms",
    "latency_spread",
    "latency_sigma",
    "latency_inbound_share",
    "search_lag_s",
    "hang_s",
    "access_token_ttl_s",
    "oauth_token_delay_s",
    *FAULT_FIELDS,
)


def _default_tokens() -> list[str]:
    return [DEFAULT_TOKEN]


def _default_oauth_scopes() -> list[str]:
    return list(DEFAULT_OAUTH_SCOPES)


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _check_refresh_tokens(grants: object) -> dict[str, dict[str, str]]:
    """Validate ``oauth_refresh_tokens`` and return an own copy.

    One grant per location or company: the sandbox keeps one valid refresh token per grant,
    and "which token is valid now" must have a single answer for a test to check.
    """
    if not isinstance(grants, dict):
        raise ValueError("oauth_refresh_tokens must map refresh tokens to grant objects")
    owners: dict[tuple[str, str], str] = {}
    copy: dict[str, dict[str, str]] = {}
    for token, grant in grants.items():
        if not _nonempty_str(token) or not isinstance(grant, dict):
            raise ValueError("oauth_refresh_tokens must map refresh tokens to grant objects")
        if set(grant) - _GRANT_KEYS or not all(_nonempty_str(v) for v in grant.values()):
            raise ValueError(
                "an oauth_refresh_tokens grant has only the string keys "
                "user_type, location_id and company_id"
            )
        user_type = grant.get("user_type")
        if user_type == USER_TYPE_LOCATION:
            if "location_id" not in grant:
                raise ValueError("a Location grant needs location_id")
            owner = (USER_TYPE_LOCATION, grant["location_id"])
        elif user_type == USER_TYPE_COMPANY:
            if "company_id" not in grant or "location_id" in grant:
                raise ValueError("a Company grant needs company_id and no location_id")
            owner = (USER_TYPE_COMPANY, grant["company_id"])
        else:
            raise ValueError("an oauth_refresh_tokens grant's user_type is Location or Company")
        if owner in owners:
            raise ValueError(f"two refresh tokens for the same {owner[0]} {owner[1]}")
        owners[owner] = token
        copy[token] = dict(grant)
    return copy


@dataclass(frozen=True)
class SandboxConfig:
    """Everything a test or benchmark may tune about the sandbox.

    Zero means "no limit" for ``rate_max`` and ``daily_limit``. Fault probabilities are
    mutually exclusive outcomes of one draw per create request, so their sum must be <= 1.
    ``token_scopes`` maps a token to the OAuth scopes it was granted; a token not listed
    there has every scope (creating needs ``conversations.write``, searching
    ``conversations.readonly``).

    The ``oauth_*`` fields describe one Marketplace app (see ``oauth.py``):
    ``oauth_clients`` maps client_id to client_secret; ``oauth_app_id`` is its appId;
    ``oauth_refresh_tokens`` maps each initial refresh token to its grant,
    ``{"user_type": "Location", "location_id": ..., ["company_id": ...]}`` or
    ``{"user_type": "Company", "company_id": ...}``; ``oauth_installed`` maps a company id to
    the locations where the app is installed; ``oauth_scopes`` are the scopes of every
    token minted. Minted access tokens live ``access_token_ttl_s``. ``oauth_token_delay_s``
    holds every ``/oauth/token`` answer after the refresh token has been rotated, so a
    crash test can kill a client while the new token is in flight.

    Latency (see ``latency.py``): each API request draws one from ``latency_distribution``,
    ``constant`` (``latency_ms``), ``uniform`` (mean ``latency_ms``, within ``latency_spread``
    of it, a fraction) or ``lognormal`` (median ``latency_ms``, ``latency_sigma`` of its log),
    plus ``uniform(0, latency_jitter_ms)``; ``latency_inbound_share`` of it passes before the
    request is counted, the rest before the answer. The spread and sigma default to 0.5, so
    naming a distribution alone gives a plausible network. ``seed`` seeds the latencies and
    the faults.
    """

    tokens: list[str] = field(default_factory=_default_tokens)
    location_tokens: dict[str, str] = field(default_factory=dict)
    token_scopes: dict[str, list[str]] = field(default_factory=dict)
    rate_max: int = DEFAULT_RATE_MAX
    rate_interval_ms: int = round(DEFAULT_RATE_INTERVAL_S * 1000)
    daily_limit: int = DEFAULT_DAILY_LIMIT
    retry_after: bool = True
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    latency_distribution: str = CONSTANT
    latency_spread: float = 0.5
    latency_sigma: float = 0.5
    latency_inbound_share: float = 0.5
    create_status: int = 201
    search_lag_s: float = 0.0
    fault_500: float = 0.0
    fault_502_after_create: float = 0.0
    fault_broken_body: float = 0.0
    fault_drop: float = 0.0
    fault_hang: float = 0.0
    fault_429: float = 0.0
    hang_s: float = 30.0
    seed: int = 0
    oauth_clients: dict[str, str] = field(default_factory=dict)
    oauth_app_id: str = DEFAULT_OAUTH_APP_ID
    oauth_refresh_tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    oauth_installed: dict[str, list[str]] = field(default_factory=dict)
    oauth_scopes: list[str] = field(default_factory=_default_oauth_scopes)
    access_token_ttl_s: float = DEFAULT_ACCESS_TOKEN_TTL_S
    oauth_token_delay_s: float = 0.0

    def __post_init__(self) -> None:
        """Validate and normalise, because configs arrive as untyped JSON from other processes."""
        if not isinstance(self.tokens, list) or not all(
            isinstance(t, str) and t for t in self.tokens
        ):
            raise ValueError("tokens must be a list of non-empty strings")
        if not isinstance(self.location_tokens, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v
            for k, v in self.location_tokens.items()
        ):
            raise ValueError("location_tokens must map non-empty strings to non-empty strings")
        if not isinstance(self.token_scopes, dict) or not all(
            isinstance(k, str)
            and k
            and isinstance(v, list)
            and all(isinstance(scope, str) and scope for scope in v)
            for k, v in self.token_scopes.items()
        ):
            raise ValueError(
                "token_scopes must map non-empty strings to lists of non-empty strings"
            )
        self._check_oauth()
        # Own copies: a caller mutating its list later must not change a running sandbox.
        object.__setattr__(self, "tokens", list(self.tokens))
        object.__setattr__(self, "location_tokens", dict(self.location_tokens))
        object.__setattr__(self, "token_scopes", {k: list(v) for k, v in self.token_scopes.items()})
        object.__setattr__(self, "oauth_clients", dict(self.oauth_clients))
        object.__setattr__(
            self, "oauth_refresh_tokens", _check_refresh_tokens(self.oauth_refresh_tokens)
        )
        object.__setattr__(
            self, "oauth_installed", {k: list(v) for k, v in self.oauth_installed.items()}
        )
        object.__setattr__(self, "oauth_scopes", list(self.oauth_scopes))
        if not isinstance(self.retry_after, bool):
            raise ValueError("retry_after must be a boolean")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
            object.__setattr__(self, name, float(value))
        if self.rate_max < 0 or self.daily_limit < 0:
            raise ValueError("rate_max and daily_limit must be >= 0 (0 = unlimited)")
        if self.rate_interval_ms <= 0:
            raise ValueError("rate_interval_ms must be > 0")
        if not 200 <= self.create_status <= 299:
            raise ValueError("create_status must be a 2xx status")
        for name in FAULT_FIELDS:
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must be a probability in [0, 1]")
        if self.fault_total > 1 + 1e-9:
            raise ValueError("fault probabilities are exclusive outcomes; their sum must be <= 1")
        if self.access_token_ttl_s <= 0:
            raise ValueError("access_token_ttl_s must be > 0")
        if not isinstance(self.latency_distribution, str):
            raise ValueError("latency_distribution must be a string")
        _ = self.latency  # checks the latency fields together (ValueError)

    def _check_oauth(self) -> None:
        """The OAuth fields' shapes (``oauth_refresh_tokens`` is checked when copied)."""
        if not isinstance(self.oauth_clients, dict) or not all(
            _nonempty_str(k) and _nonempty_str(v) for k, v in self.oauth_clients.items()
        ):
            raise ValueError("oauth_clients must map client ids to client secrets (strings)")
        if not _nonempty_str(self.oauth_app_id):
            raise ValueError("oauth_app_id must be a non-empty string")
        if not isinstance(self.oauth_installed, dict) or not all(
            _nonempty_str(k) and isinstance(v, list) and all(_nonempty_str(i) for i in v)
            for k, v in self.oauth_installed.items()
        ):
            raise ValueError("oauth_installed must map company ids to lists of location ids")
        if not isinstance(self.oauth_scopes, list) or not all(
            _nonempty_str(scope) for scope in self.oauth_scopes
        ):
            raise ValueError("oauth_scopes must be a list of non-empty strings")

    @cached_property
    def latency(self) -> Latency:
        """The latency fields as one distribution, built once per config (a request draws
        from it, so it is not rebuilt per request)."""
        return Latency(
            distribution=self.latency_distribution,
            ms=self.latency_ms,
            spread=self.latency_spread,
            sigma=self.latency_sigma,
            jitter_ms=self.latency_jitter_ms,
            inbound_share=self.latency_inbound_share,
        )

    @property
    def fault_total(self) -> float:
        """Probability that a create request meets any fault at all."""
        return float(sum(getattr(self, name) for name in FAULT_FIELDS))

    @property
    def accepted_tokens(self) -> frozenset[str]:
        """Tokens that pass authentication; empty means any non-empty token.

        Location-bound tokens are accepted too, so a per-location setup needs no duplicate
        listing in ``tokens``.
        """
        if not self.tokens:
            return frozenset()
        return frozenset(self.tokens) | frozenset(self.location_tokens.values())

    @property
    def granted_scopes(self) -> dict[str, frozenset[str]]:
        """``token_scopes`` as sets, for O(1) checks; tokens not listed have every scope."""
        return {token: frozenset(scopes) for token, scopes in self.token_scopes.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (lists and dicts are copied, not shared)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SandboxConfig:
        """Build from a (partial) dict; unknown keys raise ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError("sandbox config must be a JSON object")
        unknown = sorted(set(data) - _FIELD_NAMES)
        if unknown:
            raise ValueError(f"unknown sandbox config keys: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # e.g. a non-string key smuggled in
            raise ValueError(str(exc)) from exc

    def updated(self, **fields: Any) -> SandboxConfig:
        """A copy with some fields changed, validated like ``from_dict``."""
        return SandboxConfig.from_dict({**self.to_dict(), **fields})


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(SandboxConfig))

# What ``pipeline sandbox`` plays unless told (``--search-lag-s``): a new conversation shows
# in search this many seconds after its create, as the live index lags (a run meets it when
# a create's answer is lost and the create is sent again). In-process tests set their own.
SERVED_SEARCH_LAG_S = 5.0

_RATE_RE = re.compile(r"^\s*(\d+)\s*(?:/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|min)?\s*)?$")


def config_from_options(
    *,
    config_json: str | None = None,
    rate: str | None = None,
    latency_ms: float | None = None,
    latency_spread: str | None = None,
    latency_sigma: float | None = None,
    search_lag_s: float | None = None,
    seed: int | None = None,
    daily_limit: int | None = None,
    extra_tokens: list[str] | None = None,
    oauth_clients: list[str] | None = None,
    refresh_tokens: list[str] | None = None,
    installed: list[str] | None = None,
    access_token_ttl_s: float | None = None,
) -> SandboxConfig:
    """A config from ``pipeline sandbox``'s options: the flags override ``--config-json``,
    which overrides the defaults. ``extra_tokens`` are accepted beside the configured ones.
    ``latency_spread`` (``"50%"`` or ``"0.5"``) picks the uniform distribution,
    ``latency_sigma`` the log-normal one; ``search_lag_s`` defaults to
    ``SERVED_SEARCH_LAG_S``; both at once, or either without a latency to vary,
    is refused rather than half applied. The OAuth flags (``oauth_clients`` ``ID:SECRET``,
    ``refresh_tokens`` ``TOKEN=Location:ID`` or ``TOKEN=Company:ID``, ``installed``
    ``COMPANY:LOCATION,...``) add to ``--config-json``'s. Any problem is a ``ValueError``
    whose text names it."""
    if latency_spread is not None and latency_sigma is not None:
        raise ValueError(
            "--latency-spread (uniform) and --latency-sigma (log-normal) are two "
            "distributions; give one"
        )
    fields: dict[str, Any] = {}
    if config_json:
        loaded = json.loads(config_json)  # json.JSONDecodeError is a ValueError
        if not isinstance(loaded, dict):
            raise ValueError("--config-json must be a JSON object")
        fields.update(loaded)
    if rate is not None:
        fields["rate_max"], fields["rate_interval_ms"] = parse_rate(rate)
    if latency_ms is not None:
        fields["latency_ms"] = latency_ms
    if latency_spread is not None:
        fields["latency_distribution"] = UNIFORM
        fields["latency_spread"] = parse_spread(latency_spread)
    if latency_sigma is not None:
        fields["latency_distribution"] = LOGNORMAL
        fields["latency_sigma"] = latency_sigma
    if search_lag_s is not None:
        fields["search_lag_s"] = search_lag_s
    else:
        fields.setdefault("search_lag_s", SERVED_SEARCH_LAG_S)
    if seed is not None:
        fields["seed"] = seed
    if daily_limit is not None:
        fields["daily_limit"] = daily_limit
    _oauth_options(fields, oauth_clients or [], refresh_tokens or [], installed or [])
    if access_token_ttl_s is not None:
        fields["access_token_ttl_s"] = access_token_ttl_s
    if extra_tokens:
        tokens = fields.get("tokens", _default_tokens())
        if not isinstance(tokens, list):
            raise ValueError("tokens must be a list of non-empty strings")
        fields["tokens"] = [*tokens, *(t for t in extra_tokens if t not in tokens)]
    config = SandboxConfig.from_dict(fields)
    if (latency_spread is not None or latency_sigma is not None) and config.latency_ms <= 0:
        flag = "--latency-spread" if latency_spread is not None else "--latency-sigma"
        raise ValueError(f"{flag} varies a latency around --latency-ms, which is 0; give both")
    return config


def _oauth_options(
    fields: dict[str, Any], clients: list[str], grants: list[str], installed: list[str]
) -> None:
    """``--oauth-client``, ``--refresh-token`` and ``--installed`` into ``fields``, beside
    what ``--config-json`` holds."""
    for text in clients:
        client_id, _, secret = text.partition(":")
        if not client_id or not secret:
            raise ValueError(f"--oauth-client must look like CLIENT_ID:SECRET, got {text!r}")
        fields["oauth_clients"] = {**fields.get("oauth_clients", {}), client_id: secret}
    for text in grants:
        token, _, grant = text.partition("=")
        user_type, _, owner = grant.partition(":")
        if not token or user_type not in USER_TYPES or not owner:
            raise ValueError(
                "--refresh-token must look like TOKEN=Location:LOCATION_ID or "
                f"TOKEN=Company:COMPANY_ID, got {text!r}"
            )
        key = "location_id" if user_type == USER_TYPE_LOCATION else "company_id"
        given = {token: {"user_type": user_type, key: owner}}
        fields["oauth_refresh_tokens"] = {**fields.get("oauth_refresh_tokens", {}), **given}
    for text in installed:
        company, _, locations = text.partition(":")
        where = [loc.strip() for loc in locations.split(",") if loc.strip()]
        if not company or not where:
            raise ValueError(f"--installed must look like COMPANY_ID:LOCATION_ID,..., got {text!r}")
        known = dict(fields.get("oauth_installed", {}))
        known[company] = [*known.get(company, []), *where]
        fields["oauth_installed"] = known


def parse_rate(text: str) -> tuple[int, int]:
    """Parse ``"100/10s"`` (also ``/500ms``, ``/1m``, ``/s``; ``"0"`` = unlimited).

    Returns ``(rate_max, rate_interval_ms)``. The client parses ``--rate`` with its own
    ``values.parse_rate``: the sandbox shares only ``pipeline.core.constants`` with it.
    """
    if text.strip().lower() in {"0", "unlimited", "none"}:
        return 0, round(DEFAULT_RATE_INTERVAL_S * 1000)
    match = _RATE_RE.match(text)
    if match is None or (match.group(2) is None and match.group(3) is None):
        raise ValueError(f"rate must look like 100/10s, got {text!r}")
    count = int(match.group(1))
    amount = float(match.group(2)) if match.group(2) is not None else 1.0
    unit = match.group(3) or "s"
    scale = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "min": 60_000.0}[unit]
    interval_ms = round(amount * scale)
    if interval_ms <= 0:
        raise ValueError(f"rate interval must be positive, got {text!r}")
    return count, interval_ms

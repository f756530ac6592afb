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
from typing import Any

from pipeline.constants import DEFAULT_DAILY_LIMIT, DEFAULT_RATE_INTERVAL_S, DEFAULT_RATE_MAX

DEFAULT_TOKEN = "sandbox-token"  # noqa: S105 - a public demo token, not a secret

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
_FLOAT_FIELDS = ("latency_ms", "latency_jitter_ms", "search_lag_s", "hang_s", *FAULT_FIELDS)


def _default_tokens() -> list[str]:
    return [DEFAULT_TOKEN]


@dataclass(frozen=True)
class SandboxConfig:
    """Everything a test or benchmark may tune about the sandbox.

    Zero means "no limit" for ``rate_max`` and ``daily_limit``. Fault probabilities are
    mutually exclusive outcomes of one draw per create request, so their sum must be <= 1.
    ``token_scopes`` maps a token to the OAuth scopes it was granted; a token not listed
    there has every scope (creating needs ``conversations.write``, searching
    ``conversations.readonly``).
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
        # Own copies: a caller mutating its list later must not change a running sandbox.
        object.__setattr__(self, "tokens", list(self.tokens))
        object.__setattr__(self, "location_tokens", dict(self.location_tokens))
        object.__setattr__(self, "token_scopes", {k: list(v) for k, v in self.token_scopes.items()})
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

_RATE_RE = re.compile(r"^\s*(\d+)\s*(?:/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|min)?\s*)?$")


def config_from_options(
    *,
    config_json: str | None = None,
    rate: str | None = None,
    latency_ms: float | None = None,
    daily_limit: int | None = None,
    extra_tokens: list[str] | None = None,
) -> SandboxConfig:
    """A config from ``pipeline sandbox``'s options: the flags override ``--config-json``,
    which overrides the defaults. ``extra_tokens`` are accepted beside the configured ones.
    Any problem is a ``ValueError`` whose text names it."""
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
    if daily_limit is not None:
        fields["daily_limit"] = daily_limit
    if extra_tokens:
        tokens = fields.get("tokens", _default_tokens())
        if not isinstance(tokens, list):
            raise ValueError("tokens must be a list of non-empty strings")
        fields["tokens"] = [*tokens, *(t for t in extra_tokens if t not in tokens)]
    return SandboxConfig.from_dict(fields)


def parse_rate(text: str) -> tuple[int, int]:
    """Parse ``"100/10s"`` (also ``/500ms``, ``/1m``, ``/s``; ``"0"`` = unlimited).

    Returns ``(rate_max, rate_interval_ms)``. The client parses ``--rate`` with its own
    ``settings.parse_rate``: the sandbox shares only ``pipeline.constants`` with it.
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

"""User-typed values that need parsing (``--rate 100/10s``, ``--base-url``), parsed in one
place so that a bad value becomes one clear ``UsageError`` naming the option, instead of a
failure deep inside a stage. ``config.RunConfig`` validates every option with these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.core import constants
from pipeline.core.errors import UsageError

DEFAULT_ID_PATTERN = r"[A-Za-z0-9_-]+"
DEFAULT_ID_MAX_LENGTH = 64

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``max_requests`` per ``interval_s`` seconds: a ``--rate``, a location's
    window as its answers announce it, HighLevel's published limit. One type for all of
    them, so a limit read from headers and one typed on the command line compare equal."""

    max_requests: int
    interval_s: float

    def __post_init__(self) -> None:
        if self.max_requests < 1 or not self.interval_s > 0:
            raise ValueError("max_requests and interval_s must be positive")

    @classmethod
    def of(cls, rate: Rate | tuple[int, float]) -> Rate:
        return cls(*rate) if isinstance(rate, tuple) else rate

    def __str__(self) -> str:
        return f"{self.max_requests}/{self.interval_s:g}s"

    def as_tuple(self) -> tuple[int, float]:
        return (self.max_requests, self.interval_s)


# HighLevel's published per-location limit: what a location is assumed to allow until its
# first answer announces its own (the limiter, the plan's estimate and the report's chart).
PUBLISHED_RATE = Rate(constants.DEFAULT_RATE_MAX, constants.DEFAULT_RATE_INTERVAL_S)


def parse_rate(text: str) -> Rate:
    """Parse ``100/10s``, ``100/10``, ``5/s``, ``600/1m`` or ``100/500ms``."""
    match = _RATE.match(text)
    if not match:
        raise UsageError(f"--rate {text!r}: expected N/Ts, for example 100/10s")
    count, amount, unit = match.groups()
    interval = float(amount or 1) * _UNIT_SECONDS[unit or "s"]
    if int(count) < 1 or interval <= 0:
        raise UsageError(f"--rate {text!r}: both the count and the interval must be positive")
    return Rate(int(count), interval)


def check_base_url(url: str, *, allow_insecure_http: bool) -> str:
    """Refuse a base URL that would send the token in clear text to another machine."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"--base-url {url!r}: expected an http(s) URL such as {constants.DEFAULT_BASE_URL}"
        )
    if parts.username is not None or parts.password is not None:
        raise UsageError(
            f"--base-url {url!r}: a user or password in the URL cannot be sent: HighLevel "
            "takes the token alone, in the Authorization header; give the URL without them"
        )
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise UsageError(
            f"--base-url {url!r}: plain http would send the token unencrypted; "
            "use https, or --allow-insecure-http if you really mean it"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def is_uri(spec: str | Path) -> bool:
    """``s3://``, ``gs://``, ``az://``, ``https://`` ...: an input or output in object
    storage, read and written by polars' own object store."""
    return "://" in str(spec)


SEPARATOR_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}


def parse_separator(text: str) -> str:
    """``--separator``: a name (comma, semicolon, tab, pipe), ``\\t``, or one character."""
    value = SEPARATOR_NAMES.get(text.strip().lower(), text)
    value = "\t" if value == "\\t" else value
    if len(value) != 1 or value in '\r\n"':
        raise UsageError(
            f"--separator {text!r}: expected one character, or comma, semicolon, tab or pipe"
        )
    return value


DEFAULT_FAIL_ON = "invalid,failed,skipped"
# --lookup-wait: how long a conversation's id is searched for while the index lags (lookups).
DEFAULT_LOOKUP_WAIT_S = 90.0


def parse_fail_on(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """``--fail-on``: the statuses and error codes that make a run exit 1, comma-separated
    (``invalid,failed,skipped`` by default; ``failed,daily_quota_exhausted`` for a nightly
    job whose exports always hold a few blank IDs). Returns (statuses, error codes)."""
    from pipeline.core.outcomes import Code, Status

    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    statuses = {s.value for s in Status}
    codes = {c.value for c in Code}
    unknown = [name for name in names if name not in statuses | codes]
    if unknown or not names:
        raise UsageError(
            f"--fail-on {text!r}: expected statuses ({', '.join(sorted(statuses))}) or "
            "error codes (such as missing_contact_id, unauthorized), comma-separated"
            # Which names are unknown, when the value is not all of them (it is shown whole).
            + (f"; not {', '.join(unknown)}" if unknown and unknown != names else "")
        )
    return (
        frozenset(n for n in names if n in statuses),
        frozenset(n for n in names if n in codes and n not in statuses),
    )

"""Run settings: one frozen object built by the CLI and read by every stage.

Parsing user-typed values (``--rate 100/10s``) lives here too, so that a bad value becomes
one clear ``UsageError`` naming the option, instead of a failure deep inside a stage.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

from pipeline import constants
from pipeline.errors import UsageError
from pipeline.logs import LogFormat
from pipeline.progress import ProgressMode
from pipeline.reading import Columns
from pipeline.transport import HttpStack

DEFAULT_ID_PATTERN = r"[A-Za-z0-9_-]+"
DEFAULT_ID_MAX_LENGTH = 64

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``max_requests`` per ``interval_s`` seconds, per location."""

    max_requests: int
    interval_s: float

    def __str__(self) -> str:
        return f"{self.max_requests}/{self.interval_s:g}s"

    def as_tuple(self) -> tuple[int, float]:
        return (self.max_requests, self.interval_s)


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


@dataclass(frozen=True, slots=True)
class RunSettings:
    """Everything a run needs to know, built once by the CLI.

    For an output in object storage (``s3://...``), the journal and the lock cannot live
    beside it; they live in a local state folder, at ``output_path``.
    """

    source: str  # INPUT: a file, a glob, a folder of parts, or a URI
    output_path: Path  # the results file, or for a remote output the local anchor of its state
    output_uri: str | None = None  # set when the results go to object storage
    base_url: str = constants.DEFAULT_BASE_URL
    api_version: str = constants.DEFAULT_API_VERSION
    # The user's own per-location ceiling (--rate); None: follow what each location's answers
    # announce. Either way the announced limit holds too.
    rate: Rate | None = None
    concurrency: int = 64
    timeout_s: float = 30.0
    max_attempts: int = 5
    max_total_backoff_s: float = 300.0
    backoff_base_s: float = 0.5
    columns: Columns = field(default_factory=Columns)
    id_pattern: str = DEFAULT_ID_PATTERN
    id_max_length: int = DEFAULT_ID_MAX_LENGTH
    dry_run: bool = False
    overwrite: bool = False
    daily_quota: int = constants.DEFAULT_DAILY_LIMIT
    http_stack: HttpStack = "aiohttp"
    workers: int = 1
    log_format: LogFormat = "auto"
    log_level: int = logging.INFO
    progress: ProgressMode = "auto"
    progress_interval_s: float = 5.0

    @property
    def limits(self) -> list[tuple[int, float]]:
        """The per-location limits a plan is estimated with, before any answer: HighLevel's
        published one and the user's ceiling, both of which hold."""
        published = (constants.DEFAULT_RATE_MAX, constants.DEFAULT_RATE_INTERVAL_S)
        return [published] if self.rate is None else [published, self.rate.as_tuple()]

    @property
    def rate_label(self) -> str:
        return "as announced" if self.rate is None else f"{self.rate} and as announced"

    @property
    def results_location(self) -> str | Path:
        """Where the results file is read and written."""
        return self.output_uri or self.output_path

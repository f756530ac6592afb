"""Logging: structlog, JSON off a terminal, readable on one; secrets redacted in one place.

Redaction is a processor in the chain, not a habit at call sites: every event passes through
``redact`` before it is rendered, which replaces any registered secret value wherever it
appears (in any string, nested anywhere), any ``Bearer …`` credential, and the value of any
key that names a credential (``authorization``, ``token``, ...). Registering the token is
done once, where it is read.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from pipeline.core.errors import UsageError

if TYPE_CHECKING:
    import structlog

REDACTED = "[REDACTED]"
_SECRET_KEYS = frozenset(
    {"authorization", "token", "access_token", "api_key", "password", "secret", "ghl_token"}
)
_BEARER = re.compile(r"(?i)\bbearer\s+[^\s'\",}]+")

_secrets: list[str] = []  # longest first: "user:pass" is replaced before "pass"


# A value this short is no secret, and redacting it everywhere garbles every message: a
# GHL_TOKEN=x tried by hand made "http://e[REDACTED]ample.com" of a URL in an error.
MIN_SECRET_CHARS = 6


def register_secret(value: str) -> None:
    """Redact ``value`` from every log event from now on (unless it is too short to be one)."""
    if len(value) >= MIN_SECRET_CHARS and value not in _secrets:
        _secrets.append(value)
        _secrets.sort(key=len, reverse=True)  # here, once, not on every event scrubbed


def register_credentials(url: str) -> None:
    """Redact the credentials of ``url`` (``user:password@``) from now on; the whole of a
    text that cannot be read as a URL."""
    from urllib.parse import urlsplit

    try:
        user, password = urlsplit(url).username, urlsplit(url).password
    except ValueError:
        register_secret(url)
        return
    if password:
        register_secret(f"{user}:{password}")
    register_secret(password or user or "")


def scrub(text: str) -> str:
    """``text`` with every registered secret and bearer credential replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _BEARER.sub(f"Bearer {REDACTED}", text)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret_key(k) else _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub_value(v) for v in value]
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    return value


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in _SECRET_KEYS


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: scrub every value of the event."""
    for key, value in list(event_dict.items()):
        event_dict[key] = REDACTED if _is_secret_key(key) else _scrub_value(value)
    return event_dict


LogFormat = Literal["json", "console", "auto"]


class _Stderr:
    """Standard error as it is at each write, not as it was at set-up: while the progress
    bar is live, rich swaps ``sys.stderr`` for a proxy that prints a line above the bar, so
    a log line written through here never lands in the middle of it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


_log_files: dict[Path, TextIO] = {}  # kept open for the process's life, one per path
_summary_on_screen = False  # the last ``configure``: console lines, a summary table below


def summary_on_screen() -> bool:
    """Whether a person reads these log lines (``console``) with the summary table printed
    below them: a line that repeats the table (``finished``) is then left out."""
    return _summary_on_screen


def _open_log_file(path: Path) -> TextIO:
    """``path`` opened to append lines (each written whole), its folder made if missing."""
    if path not in _log_files:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _log_files[path] = path.open("a", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise UsageError(
                f"--log-file {path}: cannot be opened ({exc.strerror or exc})"
            ) from exc
    return _log_files[path]


def _terse(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A console line without the keys that say nothing (``dry_run=False``, ``None``)."""
    return {key: value for key, value in event.items() if value is not False and value is not None}


def configure(
    log_format: LogFormat = "auto",
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    log_file: Path | None = None,
    summary_table: bool = False,
) -> None:
    """Set up structlog to write to ``stream`` (stderr), or as JSON lines to ``log_file``;
    stdout is kept for the summary (``summary_table``: the command line prints its table).

    structlog is imported here, not at the top: its import alone (about 70 ms, most of it
    its console renderer) would double the time ``pipeline --help`` takes."""
    import structlog

    if log_file is not None:
        stream, log_format = _open_log_file(log_file), "json"
    out: TextIO | _Stderr = stream if stream is not None else _Stderr()
    if log_format == "auto":
        log_format = "console" if out.isatty() else "json"
    global _summary_on_screen
    _summary_on_screen = summary_table and log_format != "json"
    # JSON is for machines: every key, an ISO UTC time. The console is for a person: the
    # local time of day, and no key that says nothing (False, None), so a line fits.
    shown: list[structlog.types.Processor]
    if log_format == "json":
        shown = [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # tracebacks become text, then get scrubbed
            redact,
            structlog.processors.JSONRenderer(),
        ]
    else:
        shown = [
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.processors.format_exc_info,
            _terse,
            redact,
            structlog.dev.ConsoleRenderer(colors=out.isatty(), pad_event_to=0, pad_level=False),
        ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            *shown,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )

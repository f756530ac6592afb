"""``pipeline oauth export-tokens``: location tokens minted up front, for an array job.

The tasks of an array job must not share an ``--oauth-file`` (a refresh token works once,
and the file's lock is one machine's). One process instead reads the job's input as a run
does, and for each of its locations takes a token from the run's own OAuth machinery
(``OAuthSigner.lasting``: the token held, refreshed or minted from the agency's, the file
rewritten as in a run) that lives at least ``--min-lifetime``. Each token is written to a
file of its own (0600, in a 0700 folder) and a tokens file names them, in the format
``--tokens-file`` reads. A location that gets no token is listed with its reason, never
dropped silently; a ``--min-lifetime`` longer than a new token lives is a usage error.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.app.job import Job
from pipeline.app.preflight import plan_rows
from pipeline.auth.oauth import OAuthSigner, OAuthSource
from pipeline.auth.signer import CredentialsBusy, NoToken
from pipeline.auth.tokens import Tokens
from pipeline.core.errors import UsageError, plural
from pipeline.core.outcomes import RETRYABLE, Code

TOKENS_FILE = "tokens.toml"
_LIFETIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")  # a token file is named by its location
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Exported:
    location_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LeftOut:
    location_id: str
    rows: int  # the input's rows to send there
    reason: str  # one line: why no token, and what to do


@dataclass(frozen=True, slots=True)
class TokenExport:
    folder: Path
    tokens_file: Path
    exported: list[Exported]
    left_out: list[LeftOut]


def parse_lifetime(text: str) -> float:
    """``--min-lifetime``: ``20h``, ``90m``, ``3600`` (seconds), ``1d``; in seconds."""
    match = _LIFETIME.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(f"--min-lifetime {text}: expected a duration such as 20h, 90m or 3600s")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def export_tokens(
    job: Job, tokens: Tokens, folder: Path, min_lifetime_s: float, mount: str | None = None
) -> TokenExport:
    """Mint (or keep) a token for every location of the job's input that lives at least
    ``min_lifetime_s``, and write them under ``folder``; the tokens file names each token's
    file as ``mount`` (where the tasks will find the folder; ``folder`` itself by default)."""
    if tokens.oauth is None:
        raise UsageError("export-tokens mints OAuth tokens: give the --oauth-file the runs use")
    _, per_location = plan_rows(job)
    rows = dict(per_location.select("location_id", "rows").iter_rows())
    got, left_out = asyncio.run(_obtain_all(job, tokens.oauth, rows, min_lifetime_s))
    where = Path(mount) if mount else folder.resolve()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = [
        f"# written by pipeline oauth export-tokens at {_utc(datetime.now(UTC))}: "
        f"{len(got)} location tokens",
        "[tokens]",
    ]
    exported = []
    for location, (token, expires_at) in got.items():
        _write_private(folder / location, token + "\n")
        lines.append(
            f'"{location}" = {{ file = "{where / location}" }}  # expires {_utc(expires_at)}'
        )
        exported.append(Exported(location, expires_at))
    _write_private(folder / TOKENS_FILE, "\n".join(lines) + "\n")
    return TokenExport(folder, folder / TOKENS_FILE, exported, left_out)


async def _obtain_all(
    job: Job, source: OAuthSource, rows: dict[str, int], min_lifetime_s: float
) -> tuple[dict[str, tuple[str, datetime]], list[LeftOut]]:
    """A lasting token per location, one location at a time (each refresh or mint holds the
    credentials file's lock anyway), or why there is none."""
    signer = OAuthSigner(
        source,
        base_url=job.config.base_url,
        api_version=job.config.api_version,
        timeout=job.config.timeout,
    )
    left = timedelta(seconds=min_lifetime_s)
    got: dict[str, tuple[str, datetime]] = {}
    left_out: list[LeftOut] = []
    try:
        for location, count in rows.items():
            if not _SAFE_NAME.fullmatch(location):
                left_out.append(LeftOut(location, count, "its id cannot name a file"))
                continue
            if not source.serves(location):
                left_out.append(LeftOut(location, count, _NO_CREDENTIAL.format(source.path)))
                continue
            try:
                token, expires_at, lifetime_s = await signer.lasting(location, left)
            except (NoToken, CredentialsBusy) as failed:
                left_out.append(LeftOut(location, count, _reason(failed)))
                continue
            if lifetime_s is not None and lifetime_s < min_lifetime_s:
                raise UsageError(
                    f"--min-lifetime {_span(min_lifetime_s)}: HighLevel's tokens live "
                    f"{_span(lifetime_s)} (a new one's expires_in), so none lives that long; "
                    "ask for less, and end the job before its tokens expire"
                )
            got[location] = (token, expires_at)
    finally:
        await signer.aclose()
    return got, left_out


_NO_CREDENTIAL = (
    "no credential: --oauth-file {} has none for this location, and no agency's to mint "
    "one; install the app there and put its refresh token in the file"
)


def _reason(failed: NoToken | CredentialsBusy) -> str:
    """Why a location got no token, and what to do, in one line."""
    if isinstance(failed, CredentialsBusy):
        return f"credentials locked: {failed.message}; export again once that run is done"
    if failed.code is Code.NOT_INSTALLED:
        return (
            f"not installed: {failed.message}; install the app on this sub-account, then "
            "export again"
        )
    if failed.code in RETRYABLE:
        return f"not now: {failed.message}; export again in a while"
    return f"refused: {failed.message}"


def _write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, readable by its owner only (0600 even if it existed), atomic."""
    staged = path.with_name(f".{path.name}.tmp")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    staged.replace(path)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def render_export(export: TokenExport) -> str:
    """What a person reads: where the tokens are, when the first expires, what is left out."""
    lines = [f"{len(export.exported)} location tokens -> {export.folder}/ (0600 each)"]
    if export.exported:
        earliest = min(e.expires_at for e in export.exported)
        lines.append(
            f"tokens file: {export.tokens_file} (--tokens-file); the earliest token expires "
            f"at {_utc(earliest)}: the job must end before it"
        )
    if export.left_out:
        rows = sum(out.rows for out in export.left_out)
        lines.append(
            f"left out: {plural(len(export.left_out), 'location')} "
            f"({plural(rows, 'row', grouped=True)} of the input), no token:"
        )
        lines += [f"  {out.location_id}  {out.reason}" for out in export.left_out]
    return "\n".join(lines)

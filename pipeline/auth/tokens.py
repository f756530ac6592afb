"""Which token a location's requests carry: one token, or one per sub-account.

An agency migrating many sub-accounts holds one token per location. A tokens file maps each
location id to where its token lives, never to the token itself:

    # tokens.toml
    [tokens]
    "tDtDnQdgm2LXpyiqYvZ6" = { env = "GHL_TOKEN_ACME" }
    "ve9EPM428kjkvShlRW1KT" = { file = "/run/secrets/ghl_beta" }

or as CSV with the columns ``location_id`` and ``token_env`` or ``token_file``. With a tokens
file, a location it does not list has no token, and its rows are ``skipped`` / ``no_token``
(a default token is never guessed for an unlisted sub-account). Every token read is handed to
the log redaction at once.
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core import logs
from pipeline.core.outcomes import SKIP_MESSAGES, Code

if TYPE_CHECKING:
    from pipeline.auth.oauth import OAuthSource
from pipeline.core.errors import UsageError


@dataclass(frozen=True, slots=True)
class Tokens:
    default: str | None = None
    by_location: Mapping[str, str] = field(default_factory=dict)
    # Where each token came from, for messages a person acts on ("GHL_TOKEN in the
    # environment", "file /run/secrets/x"): never the token itself.
    default_source: str = "the token given"
    sources: Mapping[str, str] = field(default_factory=dict)  # by location, with by_location
    oauth: OAuthSource | None = None  # OAuth credentials instead of fixed tokens

    def serves(self, location_id: str) -> bool:
        """Whether a token can be tried for the location (else its rows are no_token)."""
        if self.oauth is not None:
            return self.oauth.serves(location_id)
        return self.for_location(location_id) is not None

    @property
    def any_token(self) -> bool:
        """Whether there is anything to sign with at all."""
        return self.oauth is not None or bool(self.all())

    @property
    def per_location(self) -> bool:
        """Each location has a token of its own (a location not listed has none)."""
        if self.oauth is not None:
            return self.oauth.company_id is None
        return bool(self.by_location)

    def for_location(self, location_id: str) -> str | None:
        return self.by_location.get(location_id) if self.by_location else self.default

    def source(self, location_id: str) -> str:
        """Where the token of ``location_id`` came from, to name in a message."""
        if self.oauth is not None:
            return self.oauth.source(location_id)
        if self.by_location:
            return self.sources.get(location_id, "no token")
        return self.default_source

    @property
    def no_token_message(self) -> str:
        """A ``no_token`` row's ``error_message``: what the run lacked for its location."""
        if self.oauth is not None:
            return (
                f"no credential for this location in --oauth-file {self.oauth.path}, and no "
                "agency's to mint one: install the app there and put its refresh token in the file"
            )
        return SKIP_MESSAGES[Code.NO_TOKEN]

    def all(self) -> list[str]:
        values = list(dict.fromkeys(self.by_location.values()))
        return values if self.by_location else ([self.default] if self.default else [])

    def key(self, location_id: str) -> int:
        """An identity for the token a location uses (never the token): locations with the
        same key share a token, whose first decisive answer accepts or rejects it for all."""
        if self.oauth is not None:
            return self.oauth.key(location_id)
        token = self.for_location(location_id)
        return self.all().index(token) if token in self.all() else -1


def load_tokens_file(path: Path, environ: Mapping[str, str]) -> Tokens:
    """Read a TOML or CSV tokens file and resolve every entry to its token."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--tokens-file {path}: cannot be read ({type(exc).__name__})") from exc
    if path.suffix.lower() == ".csv":
        entries = _csv_entries(path, text)
    else:
        entries = _toml_entries(path, text)
    if not entries:
        raise UsageError(f"--tokens-file {path}: no locations listed")
    resolved: dict[str, str] = {}
    sources: dict[str, str] = {}
    for location, (kind, where) in entries.items():
        resolved[location] = _resolve(path, location, kind, where, environ)
        logs.register_secret(resolved[location])
        sources[location] = f"{where} in the environment" if kind == "env" else f"file {where}"
    return Tokens(by_location=resolved, sources=sources)


def _toml_entries(path: Path, text: str) -> dict[str, tuple[str, str]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--tokens-file {path}: not valid TOML ({exc})") from exc
    table = data.get("tokens")
    if not isinstance(table, dict) or set(data) != {"tokens"}:
        raise UsageError(
            f"--tokens-file {path}: expected one [tokens] table of location = {{ env = ... }}"
        )
    entries: dict[str, tuple[str, str]] = {}
    for location, spec in table.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("env", "file"):
            raise UsageError(
                f"--tokens-file {path}: location {location!r}: "
                'expected { env = "VAR" } or { file = "PATH" }'
            )
        kind, where = next(iter(spec.items()))
        entries[location] = (kind, str(where))
    return entries


def _csv_entries(path: Path, text: str) -> dict[str, tuple[str, str]]:
    reader = csv.DictReader(text.splitlines())
    columns = set(reader.fieldnames or [])
    if "location_id" not in columns or not columns & {"token_env", "token_file"}:
        raise UsageError(
            f"--tokens-file {path}: expected the columns location_id and token_env or token_file"
        )
    entries: dict[str, tuple[str, str]] = {}
    for line, row in enumerate(reader, start=2):
        location = (row.get("location_id") or "").strip()
        env, file = (row.get("token_env") or "").strip(), (row.get("token_file") or "").strip()
        if not location or bool(env) == bool(file):
            raise UsageError(
                f"--tokens-file {path}: line {line}: "
                "needs a location_id and one of token_env, token_file"
            )
        entries[location] = ("env", env) if env else ("file", file)
    return entries


def _resolve(path: Path, location: str, kind: str, where: str, environ: Mapping[str, str]) -> str:
    if kind == "env":
        token = (environ.get(where) or "").strip()
        if not token:
            raise UsageError(
                f"--tokens-file {path}: location {location!r}: "
                f"environment variable {where} is not set"
            )
        return token
    try:
        token = Path(where).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"--tokens-file {path}: location {location!r}: token file {where} cannot be read"
        ) from exc
    if not token:
        raise UsageError(
            f"--tokens-file {path}: location {location!r}: token file {where} is empty"
        )
    return token

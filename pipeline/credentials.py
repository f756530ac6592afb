"""The OAuth credentials file (``--oauth-file``): a store the tool owns and rewrites.

A HighLevel Marketplace app holds a refresh token per installation (a sub-account, user type
``Location``, or an agency, ``Company``). An access token lives a day; a refresh token is
single-use: each refresh answers with a new access token AND a new refresh token, and the
old refresh token stops working. So the file is not configuration the tool reads once; it is
state the tool rewrites after every refresh, and losing a rewrite loses the installation.

The file (TOML if its name ends ``.toml``, else JSON; rewritten in the same format, a TOML
file keeping its comments and key order)::

    client_id = "65f1a2b3c4d5e6f7a8b9c0d1-lq0abcde"
    app_id = "65f1a2b3c4d5e6f7a8b9c0d1"
    client_secret_env = "GHL_CLIENT_SECRET"   # or client_secret_file = "/run/secrets/x"

    [[credentials]]
    user_type = "Location"
    location_id = "tDtDnQdgm2LXpyiqYvZ6"
    refresh_token = "eyJ..."
    access_token = "eyJ..."                   # written by the tool, with expires_at
    expires_at = "2026-11-29T13:00:00Z"

    [[minted]]                                # location tokens minted from the agency's
    location_id = "ve9EPM428kjkvShlRW1KT"
    access_token = "eyJ..."
    expires_at = "2026-11-29T13:00:00Z"

The client secret is never in it (it names an environment variable or a file), and the file
is refused when group or others can read or write it, as ssh refuses a private key: it
holds refresh tokens, which are the installation itself.

The order of a refresh (the caller does the HTTP; this module keeps the file)::

    with store.transaction() as tx:          # exclusive lock, then the file read afresh
        credential = tx.state.for_location(location_id)
        if not credential.fresh(margin, now):  # another run may have refreshed already
            answer = post_refresh(credential.refresh_token)        # the caller's HTTP
            tx.save(tx.state.with_refreshed(credential, ...))     # on disk, fsynced...
        token = tx.state.for_location(location_id).access_token  # ...before it is used

Saving before using is what makes a crash harmless: once the answer is on disk, a crash
anywhere later leaves the new refresh token for the next run. The lock makes two runs on one
file take turns, and the read inside it means the second run sees the first run's new
token instead of spending the old one (which HighLevel would refuse, or worse, honour while
the first run's token is lost).

One window no file can close: the server rotated the token but its answer never arrived
(the connection dropped, the process was killed mid-request). The old refresh token is then
spent and the new one is known only to HighLevel. The way back is the app's reconnect (or
installing the app again on that sub-account or agency), then putting the new refresh token
in the file by hand. The window is one request long, once a day per credential.

Crashes: ``save`` writes a temporary file beside the real one (0600 from its creation),
fsyncs it, renames it over the file and fsyncs the folder, so a crash at any point leaves
the old file or the new one, each whole. A temporary file left by a ``kill -9`` is ignored
when reading and removed by the next save. The lock is ``flock`` on a separate hidden file
beside it (``.NAME.lock``): a lock on the credentials file itself would be lost as the file
is replaced by a rename. It is removed as ``pipeline.locking`` removes its lock, safely.

Every token and the client secret are handed to ``logs.register_secret`` as soon as they
exist (a ``Credential`` or ``Minted`` registers its tokens when it is made).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import tomlkit
from tomlkit.container import Container
from tomlkit.items import AbstractTable

from pipeline import logs
from pipeline.errors import UsageError, one_line
from pipeline.locking import EXIT_LOCKED, names_open_file

UserType = Literal["Location", "Company"]
Format = Literal["toml", "json"]

OPTION = "--oauth-file"
LOCK_TIMEOUT = 60.0  # seconds: a refresh is one request; a minute means something is stuck
_OPEN_TO_OTHERS = 0o066  # group or others may read or write

_APP_KEYS = ("client_id", "app_id", "client_secret_env", "client_secret_file")
_TOP_KEYS = (*_APP_KEYS, "credentials", "minted")
_CREDENTIAL_KEYS = (
    "user_type",
    "location_id",
    "company_id",
    "refresh_token",
    "access_token",
    "expires_at",
)
_MINTED_KEYS = ("location_id", "access_token", "expires_at")
_USER_TYPES: tuple[UserType, ...] = ("Location", "Company")


class CredentialsLocked(UsageError):
    """Another run held the credentials file's lock for the whole wait. Exit 75 (try again
    later), as for a locked output."""

    exit_code = EXIT_LOCKED


# The model -------------------------------------------------------------------------------


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
                    f"cannot be read ({_reason(exc)})"
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
        if self.user_type not in _USER_TYPES:
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


# Reading: text to state, every refusal one line ---------------------------------------


def parse(text: str, fmt: Format, where: str) -> CredentialsState:
    """The state that ``text`` (a whole file, in ``fmt``) holds; ``where`` begins each
    refusal ("--oauth-file oauth.toml")."""
    data = _decode(text, fmt, where)
    if "client_secret" in data:
        raise UsageError(
            f"{where}: client_secret does not belong in this file; name where it is with "
            'client_secret_env = "VARIABLE" or client_secret_file = "PATH"'
        )
    _known_keys(data, _TOP_KEYS, where)
    if "client_id" not in data:
        raise UsageError(f"{where}: no client_id")
    client_id = _text(data, "client_id", where)
    app_id = _text(data, "app_id", where) if "app_id" in data else None
    env = _text(data, "client_secret_env", where) if "client_secret_env" in data else None
    file = _text(data, "client_secret_file", where) if "client_secret_file" in data else None
    if env is None and file is None:
        raise UsageError(
            f"{where}: no client_secret_env or client_secret_file (where the client secret is)"
        )
    if env is not None and file is not None:
        raise UsageError(f"{where}: both client_secret_env and client_secret_file; keep one")
    app = App(client_id, app_id, env, Path(file) if file is not None else None, origin=where)

    entries = _tables(data, "credentials", where)
    if not entries:
        raise UsageError(f"{where}: no credentials listed")
    credentials = [_credential(entry, f"{where}: credentials entry {n}") for n, entry in entries]
    seen: set[tuple[UserType, str]] = set()
    for credential in credentials:
        if credential.key in seen:
            kind = credential.user_type.lower()
            raise UsageError(f"{where}: {kind} {credential.key[1]} is listed twice in credentials")
        seen.add(credential.key)
    if sum(c.user_type == "Company" for c in credentials) > 1:
        raise UsageError(f"{where}: more than one Company credential; keep one agency per file")

    minted = [
        _minted(entry, f"{where}: minted entry {n}") for n, entry in _tables(data, "minted", where)
    ]
    locations: set[str] = set()
    for entry in minted:
        if entry.location_id in locations:
            raise UsageError(f"{where}: location {entry.location_id} is listed twice in minted")
        locations.add(entry.location_id)
    return CredentialsState(app, tuple(credentials), tuple(minted), source=text)


def _decode(text: str, fmt: Format, where: str) -> dict[str, Any]:
    if fmt == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{where}: not valid TOML ({one_line(str(exc))})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a JSON object at the top")
    return data


def _known_keys(table: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise UsageError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")


def _text(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def _tables(data: Mapping[str, Any], key: str, where: str) -> list[tuple[int, dict[str, Any]]]:
    """The entries of the array of tables ``key``, numbered from 1 as a person counts."""
    entries = data.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UsageError(f"{where}: {key} must be a list of tables ([[{key}]])")
    return list(enumerate(entries, start=1))


def _credential(entry: Mapping[str, Any], where: str) -> Credential:
    if "client_secret" in entry:
        raise UsageError(f"{where}: client_secret does not belong in this file")
    _known_keys(entry, _CREDENTIAL_KEYS, where)
    if "user_type" not in entry:
        raise UsageError(f'{where}: no user_type ("Location" or "Company")')
    user_type = entry["user_type"]
    if user_type not in _USER_TYPES:
        raise UsageError(f'{where}: user_type must be "Location" or "Company", not {user_type!r}')
    if "refresh_token" not in entry:
        raise UsageError(f"{where}: no refresh_token")
    texts = ("location_id", "company_id", "refresh_token", "access_token")
    values = {key: _text(entry, key, where) for key in texts if key in entry}
    if user_type == "Location" and "location_id" not in values:
        raise UsageError(f"{where}: a Location credential needs location_id")
    if user_type == "Company" and "company_id" not in values:
        raise UsageError(f"{where}: a Company credential needs company_id")
    if user_type == "Company" and "location_id" in values:
        raise UsageError(f"{where}: a Company credential has no location_id")
    return Credential(
        user_type=user_type,
        refresh_token=values["refresh_token"],
        location_id=values.get("location_id"),
        company_id=values.get("company_id"),
        access_token=values.get("access_token"),
        expires_at=_moment(entry, where) if "expires_at" in entry else None,
    )


def _minted(entry: Mapping[str, Any], where: str) -> Minted:
    _known_keys(entry, _MINTED_KEYS, where)
    for key in _MINTED_KEYS:
        if key not in entry:
            raise UsageError(f"{where}: no {key}")
    return Minted(
        _text(entry, "location_id", where),
        _text(entry, "access_token", where),
        _moment(entry, where),
    )


def _moment(entry: Mapping[str, Any], where: str) -> datetime:
    """``expires_at``: a TOML date-time or an ISO 8601 string, with its time zone."""
    value = entry["expires_at"]
    moment: date | None = None
    if isinstance(value, date):
        moment = value
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(value.strip())
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise UsageError(
            f"{where}: expires_at must be a date and time with its time zone, "
            "like 2026-11-29T13:00:00Z"
        )
    return moment


# Writing: state to text, changing only what changed --------------------------------------


def render(state: CredentialsState, fmt: Format) -> str:
    """The file's text for ``state``.

    With a source, the source is edited where the state differs, so comments, key order and
    layout survive; the result is read back and compared, and any surprise (a layout the
    editing does not handle) falls back to writing the file anew: after a refresh, writing
    the new token matters more than keeping a comment."""
    if state.source is not None:
        try:
            text = _edited(state, state.source, fmt)
            if parse(text, fmt, "") == state:
                return text
        except Exception:  # noqa: S110 - any failure here has the plain rendering below
            pass
    return _dump(_fresh_document(state, fmt), fmt)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _app_row(app: App) -> dict[str, str]:
    row = {"client_id": app.client_id, "app_id": app.app_id}
    row |= {"client_secret_env": app.client_secret_env}
    row |= {"client_secret_file": str(app.client_secret_file) if app.client_secret_file else None}
    return {key: value for key, value in row.items() if value is not None}


def _credential_row(credential: Credential) -> dict[str, str]:
    row = {
        "user_type": credential.user_type,
        "location_id": credential.location_id,
        "company_id": credential.company_id,
        "refresh_token": credential.refresh_token,
        "access_token": credential.access_token,
        "expires_at": _stamp(credential.expires_at) if credential.expires_at else None,
    }
    return {key: value for key, value in row.items() if value is not None}


def _minted_row(minted: Minted) -> dict[str, str]:
    return {
        "location_id": minted.location_id,
        "access_token": minted.access_token,
        "expires_at": _stamp(minted.expires_at),
    }


def _new_table(fmt: Format, row: Mapping[str, str]) -> MutableMapping[str, Any]:
    table: MutableMapping[str, Any] = tomlkit.table() if fmt == "toml" else {}
    table.update(row)
    return table


def _new_array(fmt: Format, rows: Sequence[Mapping[str, str]]) -> Any:
    tables = [_new_table(fmt, row) for row in rows]
    if fmt == "json":
        return tables
    array = tomlkit.aot()
    for table in tables:
        array.append(table)
    return array


def _fresh_document(state: CredentialsState, fmt: Format) -> MutableMapping[str, Any]:
    doc: MutableMapping[str, Any] = tomlkit.document() if fmt == "toml" else {}
    doc.update(_app_row(state.app))
    doc["credentials"] = _new_array(fmt, [_credential_row(c) for c in state.credentials])
    if state.minted:
        doc["minted"] = _new_array(fmt, [_minted_row(m) for m in state.minted])
    return doc


def _dump(doc: MutableMapping[str, Any], fmt: Format) -> str:
    if fmt == "toml":
        return tomlkit.dumps(doc)
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _edited(state: CredentialsState, source: str, fmt: Format) -> str:
    """``source`` with the values that differ from ``state`` set, added or removed."""
    old = parse(source, fmt, "")
    doc: MutableMapping[str, Any] = tomlkit.parse(source) if fmt == "toml" else json.loads(source)
    if old.app != state.app:
        _update(doc, _app_row(old.app), _app_row(state.app), _APP_KEYS)
    _update_array(
        doc,
        "credentials",
        fmt,
        {c.key: _credential_row(c) for c in old.credentials},
        {c.key: _credential_row(c) for c in state.credentials},
        _CREDENTIAL_KEYS,
    )
    _update_array(
        doc,
        "minted",
        fmt,
        {m.location_id: _minted_row(m) for m in old.minted},
        {m.location_id: _minted_row(m) for m in state.minted},
        _MINTED_KEYS,
    )
    return _dump(doc, fmt)


def _update_array(
    doc: MutableMapping[str, Any],
    name: str,
    fmt: Format,
    old: Mapping[Any, dict[str, str]],
    new: Mapping[Any, dict[str, str]],
    order: Sequence[str],
) -> None:
    """Edit the array of tables ``name`` from ``old`` (its entries, in the file's order) to
    ``new``: entries kept are edited in place, gone ones removed, new ones appended."""
    if not new:
        if name in doc:
            del doc[name]
        return
    if name not in doc:
        doc[name] = _new_array(fmt, list(new.values()))
        return
    array = doc[name]
    for index in reversed([i for i, key in enumerate(old) if key not in new]):
        del array[index]
    kept = [key for key in old if key in new]
    for index, key in enumerate(kept):
        _update(array[index], old[key], new[key], order)
    for key, row in new.items():
        if key not in old:
            array.append(_new_table(fmt, row))


def _update(
    table: MutableMapping[str, Any],
    old: Mapping[str, str],
    new: Mapping[str, str],
    order: Sequence[str],
) -> None:
    """Set in ``table`` the keys whose value differs from ``old`` to ``new``'s; a key new to
    the table goes right after the key before it in ``order``, not after trailing comments."""
    for position, key in enumerate(order):
        if old.get(key) == new.get(key):
            continue
        if key not in new:
            del table[key]
        elif key in table:
            table[key] = new[key]
        else:
            before = next((k for k in reversed(order[:position]) if k in table), None)
            _insert_after(table, before, key, new[key])


def _insert_after(
    table: MutableMapping[str, Any], before: str | None, key: str, value: str
) -> None:
    if before is None:
        table[key] = value
    elif isinstance(table, Container):  # a TOML document
        table._insert_after(before, key, value)
    elif isinstance(table, AbstractTable):  # a TOML table
        table.value._insert_after(before, key, value)
    else:  # a JSON object: rebuild it in order
        items = list(table.items())
        spot = [k for k, _ in items].index(before) + 1
        items.insert(spot, (key, value))
        table.clear()
        table.update(items)


# The store: the lock, the read inside it, the atomic write -------------------------------


class CredentialsStore:
    """The credentials file on disk. Read it with ``read`` (a snapshot, for checks at
    start-up); change it only inside ``transaction``."""

    def __init__(
        self, path: Path, *, lock_timeout: float = LOCK_TIMEOUT, option: str = OPTION
    ) -> None:
        self.path = Path(path)
        # Through a symbolic link, the file replaced is the one it points to, not the link.
        self._real = Path(os.path.realpath(self.path))
        self.format: Format = "toml" if self.path.name.lower().endswith(".toml") else "json"
        self.lock_path = self._real.with_name(f".{self._real.name}.lock")
        self.lock_timeout = lock_timeout
        self.where = f"{option} {self.path}"
        self._in_process = threading.Lock()  # flock does not order threads of one process
        self._owner: int | None = None  # the thread holding the transaction
        self._on_disk: str | None = None  # the file's text, while a transaction holds it

    def read(self) -> CredentialsState:
        """The file as it is now: refused unless only its owner can read and write it."""
        try:
            fd = os.open(self._real, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise UsageError(f"{self.where}: cannot be read ({_reason(exc)})") from exc
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & _OPEN_TO_OTHERS:
                raise UsageError(
                    f"{self.where}: group or others can read or write it (mode {mode:04o}); "
                    f"it holds refresh tokens, so make it private: chmod 600 {self.path}"
                )
            with os.fdopen(os.dup(fd), "rb") as stream:
                raw = stream.read()
        except OSError as exc:
            raise UsageError(f"{self.where}: cannot be read ({_reason(exc)})") from exc
        finally:
            os.close(fd)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{self.where}: not UTF-8 text") from exc
        return parse(text, self.format, self.where)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Hold the file's lock for the ``with`` block and yield its state read inside the
        lock; whatever the block saves is on disk before it goes on. Blocks while another
        run (or thread) holds it, up to ``lock_timeout`` seconds, then ``CredentialsLocked``.
        It waits in this thread: from async code, enter it in a worker thread."""
        if self._owner == threading.get_ident():
            raise RuntimeError("a credentials transaction is already open in this thread")
        deadline = time.monotonic() + self.lock_timeout
        if not self._in_process.acquire(timeout=max(self.lock_timeout, 0.0)):
            raise self._locked("another thread")
        try:
            fd = self._take(deadline)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self._owner = threading.get_ident()
                tx = Transaction(self, self.read())
                self._on_disk = tx.state.source
                try:
                    yield tx
                finally:
                    tx._open = False
                    self._owner = self._on_disk = None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    self.lock_path.unlink()  # while still holding it: see pipeline.locking
                os.close(fd)  # closing releases the lock
        finally:
            self._in_process.release()

    def save(self, state: CredentialsState) -> CredentialsState:
        """Replace the file with ``state``, atomically and durably; only inside this store's
        transaction, in its thread (a state saved outside it could undo another run's
        refresh). Returns the state as saved (its source the new text).

        ``state`` must derive (by the ``with_*`` methods) from the state the transaction
        holds now: one derived from an earlier read, or from before the last save, would
        put back refresh tokens already spent, so it is refused."""
        if self._owner != threading.get_ident():
            raise RuntimeError("save the credentials inside store.transaction()")
        if state.source != self._on_disk:
            raise RuntimeError(
                "this state was not derived from the transaction's current state; "
                "derive it from tx.state"
            )
        for credential in state.credentials:  # already registered when made; cheap to repeat
            logs.register_secret(credential.refresh_token)
            logs.register_secret(credential.access_token or "")
        for minted in state.minted:
            logs.register_secret(minted.access_token)
        text = render(state, self.format)
        self._remove_leftovers()
        folder = self._real.parent
        temporary = folder / f".{self._real.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # the umask may have taken the owner's bits too
                data = memoryview(text.encode("utf-8"))
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            temporary.replace(self._real)  # os.replace: atomic on one file system
        except BaseException as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            if isinstance(exc, OSError):
                raise UsageError(f"{self.where}: cannot be rewritten ({_reason(exc)})") from exc
            raise
        self._on_disk = text
        _fsync_folder(folder)
        return replace(state, source=text)

    def _take(self, deadline: float) -> int:
        """A descriptor of the lock file, locked, that the lock path still names."""
        pause = 0.002
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise UsageError(
                    f"{self.where}: cannot create its lock file {self.lock_path} "
                    f"({_reason(exc)}); the tool rewrites this file, so its folder must be "
                    "writable"
                ) from exc
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
                        os.close(fd)
                        raise self._locked(f"pid {owner or 'unknown'}") from None
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, 0.02)
            if names_open_file(self.lock_path, fd):
                return fd
            os.close(fd)  # its holder removed it as it finished: lock the path anew

    def _locked(self, holder: str) -> CredentialsLocked:
        return CredentialsLocked(
            f"{self.where}: another run ({holder}) held its lock for "
            f"{self.lock_timeout:g} s; try again later"
        )

    def _remove_leftovers(self) -> None:
        """Remove temporary files a killed save left: under the lock, no save is live."""
        for leftover in self._real.parent.glob(f".{self._real.name}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()


class Transaction:
    """One locked read-modify-write of the file. ``state`` is what the file held when the
    lock was taken and, after each ``save``, what it holds now."""

    def __init__(self, store: CredentialsStore, state: CredentialsState) -> None:
        self.store = store
        self.state = state
        self._open = True

    def save(self, state: CredentialsState) -> None:
        """Write ``state`` to the file now (fsynced when this returns)."""
        if not self._open:
            raise RuntimeError("this credentials transaction has ended")
        self.state = self.store.save(state)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; a file system that cannot sync a folder is let be."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__

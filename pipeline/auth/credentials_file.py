"""The OAuth credentials file's text: parsed into a state, and a state rendered back.

A refusal is one line that names the file and the entry ("--oauth-file oauth.toml:
credentials entry 2: no refresh_token"). Rendering edits the file's own text where the state
differs, so a person's comments and key order survive a rewrite (``render``).
"""

from __future__ import annotations

import contextlib
import json
import tomllib
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import AbstractTable

from pipeline.auth.credentials_model import (
    USER_TYPES,
    App,
    Credential,
    CredentialsState,
    Format,
    Minted,
    UserType,
)
from pipeline.core.errors import UsageError, one_line

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
    if user_type not in USER_TYPES:
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

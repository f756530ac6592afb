"""The OAuth credentials file: what it accepts and refuses, how it is rewritten, and that a
crash or a second run never loses a refresh token."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from pipeline.auth import credentials_file
from pipeline.auth.credentials import (
    App,
    Credential,
    CredentialsLocked,
    CredentialsState,
    CredentialsStore,
    Minted,
    expiry,
    parse,
    render,
)
from pipeline.core import logs
from pipeline.core.errors import UsageError

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
EXPIRES = datetime(2026, 11, 29, 13, 0, tzinfo=UTC)

EXAMPLE_TOML = """\
# the app
client_id = "65f1a2b3c4d5e6f7a8b9c0d1-lq0abcde"
app_id = "65f1a2b3c4d5e6f7a8b9c0d1"
client_secret_env = "GHL_CLIENT_SECRET"      # or: client_secret_file = "/run/secrets/x"

[[credentials]]
user_type = "Location"
location_id = "tDtDnQdgm2LXpyiqYvZ6"
refresh_token = "refresh-location-1"  # from the installation
# written by the tool after each refresh:
access_token = "access-location-1"
expires_at = "2026-11-29T13:00:00Z"

[[credentials]]
user_type = "Company"
company_id = "5DP4iH6HLkQsiKESj6rh"
refresh_token = "refresh-company-1"

# the agency's: one per file
"""

EXAMPLE_JSON = {
    "client_id": "65f1a2b3c4d5e6f7a8b9c0d1-lq0abcde",
    "client_secret_file": "/run/secrets/ghl_client_secret",
    "credentials": [
        {
            "refresh_token": "refresh-json-1",
            "user_type": "Location",
            "location_id": "ve9EPM428kjkvShlRW1KT",
        }
    ],
    "minted": [
        {
            "location_id": "tDtDnQdgm2LXpyiqYvZ6",
            "access_token": "minted-json-1",
            "expires_at": "2026-11-29T14:00:00+01:00",
        }
    ],
}


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


@pytest.fixture(autouse=True)
def _forget_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets registered here (some one letter long) would be redacted from every later
    test's log lines: each test registers into a copy, dropped when it ends."""
    monkeypatch.setattr(logs, "_secrets", list(logs._secrets))


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    return write(tmp_path / "oauth.toml", EXAMPLE_TOML)


# Reading -----------------------------------------------------------------------------------


def test_reads_the_toml_example(toml_file: Path) -> None:
    state = CredentialsStore(toml_file).read()
    assert state.app == App(
        "65f1a2b3c4d5e6f7a8b9c0d1-lq0abcde",
        "65f1a2b3c4d5e6f7a8b9c0d1",
        client_secret_env="GHL_CLIENT_SECRET",
    )
    location = state.for_location("tDtDnQdgm2LXpyiqYvZ6")
    assert location == Credential(
        "Location",
        "refresh-location-1",
        location_id="tDtDnQdgm2LXpyiqYvZ6",
        access_token="access-location-1",
        expires_at=EXPIRES,
    )
    assert location.expires_at is not None and location.expires_at.tzinfo is not None
    company = state.company()
    assert company is not None and company.key == ("Company", "5DP4iH6HLkQsiKESj6rh")
    assert company.access_token is None and company.expires_at is None
    assert state.for_location("elsewhere") is None and state.minted == ()


def test_reads_json_with_minted_tokens(tmp_path: Path) -> None:
    path = write(tmp_path / "oauth.json", json.dumps(EXAMPLE_JSON))
    state = CredentialsStore(path).read()
    assert state.app.client_secret_file == Path("/run/secrets/ghl_client_secret")
    assert state.company() is None
    assert state.minted == (Minted("tDtDnQdgm2LXpyiqYvZ6", "minted-json-1", EXPIRES),)
    assert state.minted_for("tDtDnQdgm2LXpyiqYvZ6") == state.minted[0]


def test_a_toml_date_time_is_read_too(tmp_path: Path) -> None:
    text = EXAMPLE_TOML.replace('"2026-11-29T13:00:00Z"', "2026-11-29T15:00:00+02:00")
    state = CredentialsStore(write(tmp_path / "oauth.toml", text)).read()
    assert state.credentials[0].expires_at == EXPIRES


HEAD = 'client_id = "c"\nclient_secret_env = "S"\n'
MINTED = '[[minted]]\nlocation_id = "L2"\naccess_token = "a"\nexpires_at = 2026-11-29T13:00:00Z\n'
LOCATION = '[[credentials]]\nuser_type = "Location"\nlocation_id = "L1"\nrefresh_token = "r"\n'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            HEAD + 'client_secret = "x"\n' + LOCATION,
            "client_secret does not belong in this file; name where it is with "
            'client_secret_env = "VARIABLE" or client_secret_file = "PATH"',
        ),
        (
            'colour = "red"\n' + HEAD + LOCATION,
            "unknown key 'colour' (known: client_id, app_id, client_secret_env, "
            "client_secret_file, credentials, minted)",
        ),
        ('client_secret_env = "S"\n' + LOCATION, "no client_id"),
        (
            'client_id = " "\nclient_secret_env = "S"\n' + LOCATION,
            "client_id must be a non-empty string",
        ),
        (
            'client_id = "c"\n' + LOCATION,
            "no client_secret_env or client_secret_file (where the client secret is)",
        ),
        (
            HEAD + 'client_secret_file = "/x"\n' + LOCATION,
            "both client_secret_env and client_secret_file; keep one",
        ),
        (HEAD, "no credentials listed"),
        (HEAD + "credentials = []\n", "no credentials listed"),
        (HEAD + 'credentials = "r"\n', "credentials must be a list of tables ([[credentials]])"),
        (
            HEAD + '[[credentials]]\nuser_type = "Location"\nlocation_id = "L1"\n',
            "credentials entry 1: no refresh_token",
        ),
        (
            HEAD + LOCATION + '[[credentials]]\nuser_type = "Location"\nrefresh_token = "r"\n',
            "credentials entry 2: a Location credential needs location_id",
        ),
        (
            HEAD + '[[credentials]]\nuser_type = "Company"\nrefresh_token = "r"\n',
            "credentials entry 1: a Company credential needs company_id",
        ),
        (
            HEAD + LOCATION.replace("Location", "Company") + 'company_id = "C"\n',
            "credentials entry 1: a Company credential has no location_id",
        ),
        (
            HEAD + LOCATION.replace('"Location"', '"Agency"'),
            'credentials entry 1: user_type must be "Location" or "Company", not \'Agency\'',
        ),
        (
            HEAD + '[[credentials]]\nlocation_id = "L1"\nrefresh_token = "r"\n',
            'credentials entry 1: no user_type ("Location" or "Company")',
        ),
        (HEAD + LOCATION + LOCATION, "location L1 is listed twice in credentials"),
        (
            HEAD
            + 2 * '[[credentials]]\nuser_type = "Company"\ncompany_id = "C"\nrefresh_token = "r"\n',
            "company C is listed twice in credentials",
        ),
        (
            HEAD
            + '[[credentials]]\nuser_type = "Company"\ncompany_id = "C1"\nrefresh_token = "r"\n'
            + '[[credentials]]\nuser_type = "Company"\ncompany_id = "C2"\nrefresh_token = "r"\n',
            "more than one Company credential; keep one agency per file",
        ),
        (
            HEAD + LOCATION + 'scope = "x"\n',
            "credentials entry 1: unknown key 'scope' (known: user_type, location_id, "
            "company_id, refresh_token, access_token, expires_at)",
        ),
        (
            HEAD + LOCATION + 'client_secret = "x"\n',
            "credentials entry 1: client_secret does not belong in this file",
        ),
        (
            HEAD + LOCATION + 'refresh_token = "r"\n',
            "not valid TOML (Cannot overwrite a value (at line 7, column 20))",
        ),
        (
            HEAD + LOCATION + 'expires_at = "2026-11-29T13:00:00"\n',
            "credentials entry 1: expires_at must be a date and time with its time zone, "
            "like 2026-11-29T13:00:00Z",
        ),
        (
            HEAD + LOCATION + "expires_at = 2026-11-29\n",
            "credentials entry 1: expires_at must be a date and time with its time zone, "
            "like 2026-11-29T13:00:00Z",
        ),
        (
            HEAD + LOCATION + '[[minted]]\nlocation_id = "L2"\naccess_token = "a"\n',
            "minted entry 1: no expires_at",
        ),
        (HEAD + LOCATION + 2 * MINTED, "location L2 is listed twice in minted"),
    ],
)
def test_every_refusal_is_one_line_naming_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path / "oauth.toml", text)
    with pytest.raises(UsageError) as caught:
        CredentialsStore(path).read()
    assert str(caught.value) == f"--oauth-file {path}: {problem}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"client_id": ', "not valid JSON (Expecting value at line 1)"),
        ("[1, 2]", "expected a JSON object at the top"),
    ],
)
def test_json_refusals(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path / "oauth.json", text)
    with pytest.raises(UsageError) as caught:
        CredentialsStore(path).read()
    assert str(caught.value) == f"--oauth-file {path}: {problem}"


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(UsageError) as caught:
        CredentialsStore(path).read()
    assert str(caught.value) == f"--oauth-file {path}: cannot be read (No such file or directory)"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o666])
def test_a_file_others_can_open_is_refused(toml_file: Path, mode: int) -> None:
    toml_file.chmod(mode)
    with pytest.raises(UsageError) as caught:
        CredentialsStore(toml_file).read()
    assert str(caught.value) == (
        f"--oauth-file {toml_file}: group or others can read or write it (mode {mode:04o}); "
        f"it holds refresh tokens, so make it private: chmod 600 {toml_file}"
    )


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_a_private_file_is_accepted(toml_file: Path, mode: int) -> None:
    toml_file.chmod(mode)
    assert CredentialsStore(toml_file).read().company() is not None


# The client secret -------------------------------------------------------------------------


def test_the_client_secret_comes_from_the_environment(toml_file: Path) -> None:
    app = CredentialsStore(toml_file).read().app
    assert app.client_secret({"GHL_CLIENT_SECRET": " s3cret-env\n"}) == "s3cret-env"
    with pytest.raises(UsageError) as caught:
        app.client_secret({})
    assert str(caught.value) == (
        f"--oauth-file {toml_file}: client_secret_env names GHL_CLIENT_SECRET, which is not set"
    )


def test_the_client_secret_comes_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-file\n")
    text = EXAMPLE_TOML.replace(
        'client_secret_env = "GHL_CLIENT_SECRET"', f'client_secret_file = "{secret}"'
    )
    path = write(tmp_path / "oauth.toml", text)
    app = CredentialsStore(path).read().app
    assert app.client_secret() == "s3cret-file"
    secret.write_text("  \n")
    with pytest.raises(UsageError) as caught:
        app.client_secret()
    assert str(caught.value) == f"--oauth-file {path}: client_secret_file {secret} is empty"
    secret.unlink()
    with pytest.raises(UsageError) as caught:
        app.client_secret()
    assert str(caught.value) == (
        f"--oauth-file {path}: client_secret_file {secret} cannot be read "
        "(No such file or directory)"
    )


# The model's helpers -------------------------------------------------------------------------


def test_fresh_means_valid_beyond_the_margin(toml_file: Path) -> None:
    state = CredentialsStore(toml_file).read()
    location = state.credentials[0]  # expires at 13:00
    assert location.fresh(timedelta(minutes=59), NOW)
    assert not location.fresh(timedelta(minutes=60), NOW)
    assert not location.fresh(timedelta(0), EXPIRES)
    company = state.company()
    assert company is not None and not company.fresh(timedelta(0), NOW)  # no access token
    margin = timedelta(minutes=5)
    assert state.usable_token("tDtDnQdgm2LXpyiqYvZ6", margin=margin, now=NOW) == (
        "access-location-1"
    )
    assert state.usable_token("tDtDnQdgm2LXpyiqYvZ6", margin=margin, now=EXPIRES) is None


def test_with_refreshed_replaces_one_credential(toml_file: Path) -> None:
    state = CredentialsStore(toml_file).read()
    company = state.company()
    assert company is not None
    after = state.with_refreshed(
        company, access_token="a2", refresh_token="r2", expires_at=expiry(NOW, 86399.5)
    )
    refreshed = after.company()
    assert refreshed is not None and refreshed.refresh_token == "r2"
    assert refreshed.expires_at == datetime(2026, 11, 30, 11, 59, 59, tzinfo=UTC)
    assert after.credentials[0] == state.credentials[0] and state.company() == company
    with pytest.raises(ValueError, match="stale copy"):
        after.with_refreshed(company, access_token="a3", refresh_token="r3", expires_at=NOW)
    with pytest.raises(ValueError, match="aware"):
        state.with_refreshed(
            company, access_token="a", refresh_token="r", expires_at=NOW.replace(tzinfo=None)
        )


def test_minted_tokens_are_cached_replaced_and_pruned(toml_file: Path) -> None:
    state = CredentialsStore(toml_file).read()
    state = state.with_minted("L2", access_token="m1", expires_at=NOW + timedelta(hours=1))
    state = state.with_minted("L3", access_token="m2", expires_at=NOW)
    state = state.with_minted("L2", access_token="m3", expires_at=NOW + timedelta(hours=2))
    assert [(m.location_id, m.access_token) for m in state.minted] == [("L2", "m3"), ("L3", "m2")]
    assert state.usable_token("L2", margin=timedelta(minutes=5), now=NOW) == "m3"
    assert state.usable_token("L3", margin=timedelta(0), now=NOW) is None
    assert [m.location_id for m in state.without_expired(NOW).minted] == ["L2"]


def test_tokens_stay_out_of_reprs(toml_file: Path) -> None:
    state = CredentialsStore(toml_file).read().with_minted("L", access_token="m", expires_at=NOW)
    shown = repr(state)
    assert "refresh-location-1" not in shown and "access-location-1" not in shown
    assert "access_token='m'" not in shown and "tDtDnQdgm2LXpyiqYvZ6" in shown


# Rewriting ---------------------------------------------------------------------------------


def test_a_rewrite_keeps_comments_and_key_order(toml_file: Path) -> None:
    store = CredentialsStore(toml_file)
    with store.transaction() as tx:
        location, company = tx.state.credentials
        state = tx.state.with_refreshed(
            location,
            access_token="access-location-2",
            refresh_token="refresh-location-2",
            expires_at=EXPIRES + timedelta(days=1),
        )
        state = state.with_refreshed(
            company,
            access_token="access-company-2",
            refresh_token="refresh-company-2",
            expires_at=EXPIRES,
        )
        tx.save(state.with_minted("L2", access_token="minted-1", expires_at=EXPIRES))
    assert toml_file.read_text() == EXAMPLE_TOML.replace(
        "refresh-location-1", "refresh-location-2"
    ).replace("access-location-1", "access-location-2").replace(
        '"2026-11-29T13:00:00Z"\n\n[[cred', '"2026-11-30T13:00:00Z"\n\n[[cred'
    ).replace(
        'refresh_token = "refresh-company-1"\n',
        'refresh_token = "refresh-company-2"\naccess_token = "access-company-2"\n'
        'expires_at = "2026-11-29T13:00:00Z"\n',
    ) + (
        '\n[[minted]]\nlocation_id = "L2"\naccess_token = "minted-1"\n'
        'expires_at = "2026-11-29T13:00:00Z"\n'
    )
    assert store.read() == tx.state


def test_saving_the_same_state_changes_nothing(toml_file: Path) -> None:
    store = CredentialsStore(toml_file)
    with store.transaction() as tx:
        tx.save(tx.state)
    assert toml_file.read_text() == EXAMPLE_TOML


def test_a_json_rewrite_keeps_key_order(tmp_path: Path) -> None:
    path = write(tmp_path / "oauth.json", json.dumps(EXAMPLE_JSON, indent=2))
    store = CredentialsStore(path)
    with store.transaction() as tx:
        credential = tx.state.credentials[0]
        state = tx.state.with_refreshed(
            credential, access_token="a2", refresh_token="r2", expires_at=EXPIRES
        )
        tx.save(state.without_expired(EXPIRES))
    written = json.loads(path.read_text())
    assert list(written) == ["client_id", "client_secret_file", "credentials"]
    assert written["credentials"] == [
        {
            "refresh_token": "r2",
            "access_token": "a2",
            "expires_at": "2026-11-29T13:00:00Z",
            "user_type": "Location",
            "location_id": "ve9EPM428kjkvShlRW1KT",
        }
    ]


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_a_state_without_source_is_written_anew(toml_file: Path, fmt: str) -> None:
    state = CredentialsStore(toml_file).read().with_minted("L", access_token="m", expires_at=NOW)
    bare = CredentialsState(state.app, state.credentials, state.minted)
    text = render(bare, "toml" if fmt == "toml" else "json")
    assert parse(text, "toml" if fmt == "toml" else "json", "x") == state


def test_an_inline_array_of_credentials_is_edited_in_place(tmp_path: Path) -> None:
    text = (
        HEAD
        + "credentials = [\n"
        + '  { user_type = "Location", location_id = "L1", refresh_token = "r" },\n]\n'
    )
    store = CredentialsStore(write(tmp_path / "oauth.toml", text))
    with store.transaction() as tx:
        credential = tx.state.credentials[0]
        tx.save(
            tx.state.with_refreshed(
                credential, access_token="a2", refresh_token="r2", expires_at=EXPIRES
            )
        )
    assert store.path.read_text() == text.replace(
        'refresh_token = "r" }',
        'refresh_token = "r2", access_token = "a2", expires_at = "2026-11-29T13:00:00Z" }',
    )


def test_when_editing_fails_the_file_is_written_anew(
    toml_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> str:
        raise KeyError("a layout the editing does not know")

    monkeypatch.setattr(credentials_file, "_edited", broken)
    store = CredentialsStore(toml_file)
    with store.transaction() as tx:
        company = tx.state.company()
        assert company is not None
        tx.save(
            tx.state.with_refreshed(
                company, access_token="a2", refresh_token="r2", expires_at=EXPIRES
            )
        )
    assert "# the app" not in toml_file.read_text()  # the comments are lost, the token is not
    assert store.read() == tx.state


def test_the_tool_writes_the_file_0600(toml_file: Path) -> None:
    old = os.umask(0)
    try:
        with CredentialsStore(toml_file).transaction() as tx:
            tx.save(tx.state.with_minted("L", access_token="m", expires_at=NOW))
    finally:
        os.umask(old)
    assert toml_file.stat().st_mode & 0o777 == 0o600


def test_a_symbolic_link_is_written_through(tmp_path: Path) -> None:
    real = write(tmp_path / "real.toml", EXAMPLE_TOML)
    link = tmp_path / "oauth.toml"
    link.symlink_to(real)
    with CredentialsStore(link).transaction() as tx:
        tx.save(tx.state.with_minted("L", access_token="m", expires_at=NOW))
    assert link.is_symlink() and "[[minted]]" in real.read_text()


def test_saving_needs_the_transaction(toml_file: Path) -> None:
    store = CredentialsStore(toml_file)
    with pytest.raises(RuntimeError, match=r"inside store\.transaction"):
        store.save(store.read())
    with store.transaction() as tx, pytest.raises(RuntimeError, match="already open"):
        store.transaction().__enter__()
    with pytest.raises(RuntimeError, match="has ended"):
        tx.save(tx.state)


def test_a_state_from_before_the_last_save_is_refused(toml_file: Path) -> None:
    store = CredentialsStore(toml_file)
    earlier = store.read()
    with store.transaction() as tx:  # another run's refresh, say
        company = tx.state.company()
        assert company is not None
        tx.save(
            tx.state.with_refreshed(
                company, access_token="a2", refresh_token="r2", expires_at=EXPIRES
            )
        )
    with store.transaction() as tx:
        with pytest.raises(RuntimeError, match="not derived from the transaction's current"):
            tx.save(earlier.with_minted("L", access_token="m", expires_at=NOW))
        first = tx.state
        tx.save(first.with_minted("L", access_token="m", expires_at=NOW))
        with pytest.raises(RuntimeError, match="not derived from the transaction's current"):
            tx.save(first.with_minted("L2", access_token="m2", expires_at=NOW))
        tx.save(tx.state.with_minted("L2", access_token="m2", expires_at=NOW))
    after = store.read()
    assert [m.location_id for m in after.minted] == ["L", "L2"]
    assert after.company() == replace(
        company, refresh_token="r2", access_token="a2", expires_at=EXPIRES
    )


def test_a_failed_rename_leaves_the_old_file_whole(
    toml_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    store = CredentialsStore(toml_file)
    with store.transaction() as tx:
        monkeypatch.setattr(os, "replace", full)
        with pytest.raises(UsageError) as caught:
            tx.save(tx.state.with_minted("L", access_token="m", expires_at=NOW))
        monkeypatch.undo()
    assert str(caught.value) == (
        f"--oauth-file {toml_file}: cannot be rewritten (No space left on device)"
    )
    assert toml_file.read_text() == EXAMPLE_TOML
    assert sorted(p.name for p in toml_file.parent.iterdir()) == ["oauth.toml"]


def test_leftover_temporary_files_are_ignored_then_removed(toml_file: Path) -> None:
    leftover = write(toml_file.parent / ".oauth.toml.0123456789ab.tmp", "torn = ")
    store = CredentialsStore(toml_file)
    assert store.read().company() is not None
    with store.transaction() as tx:
        tx.save(tx.state)
    assert not leftover.exists()


# The lock ----------------------------------------------------------------------------------


@pytest.mark.timing
def test_a_held_lock_is_waited_for_then_refused(toml_file: Path) -> None:
    store = CredentialsStore(toml_file, lock_timeout=0.2)
    fd = os.open(store.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"4242\n")
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(CredentialsLocked) as caught, store.transaction():
            pass
        assert 0.2 <= time.monotonic() - started < 2  # the wait it was given, not forever
    finally:
        os.close(fd)
    assert str(caught.value) == (
        f"--oauth-file {toml_file}: another run (pid 4242) held its lock for 0.2 s; try again later"
    )
    assert caught.value.exit_code == 75
    with store.transaction() as tx:  # released: taken over, and removed after
        assert tx.state.company() is not None
    assert not store.lock_path.exists()


def test_threads_of_one_process_take_turns(toml_file: Path) -> None:
    store = CredentialsStore(toml_file)
    other = CredentialsStore(toml_file)  # a second store on the same file, in-process

    def refresh(on: CredentialsStore) -> None:
        for _ in range(15):
            with on.transaction() as tx:
                company = tx.state.company()
                assert company is not None
                count = int(company.refresh_token.rsplit("-", 1)[1])
                tx.save(
                    tx.state.with_refreshed(
                        company,
                        access_token=f"access-{count + 1}",
                        refresh_token=f"refresh-company-{count + 1}",
                        expires_at=EXPIRES,
                    )
                )

    threads = [threading.Thread(target=refresh, args=(s,)) for s in (store, store, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    company = store.read().company()
    assert company is not None and company.refresh_token == "refresh-company-46"


def held_by_another(store: CredentialsStore) -> int:
    """The store's lock, taken as another run would take it (pid 4242); close to release."""
    fd = os.open(store.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"4242\n")
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@pytest.mark.timing
def test_an_async_wait_is_bounded_and_the_tasks_queued_behind_it_share_its_end(
    toml_file: Path,
) -> None:
    """On an event loop the lock is polled: the first task gives up at the bound, and the
    tasks that queued behind it give up with it rather than each waiting as long again."""
    store = CredentialsStore(toml_file, lock_timeout=0.3)

    async def enter() -> None:
        async with store.atransaction():
            pass

    async def three() -> list[BaseException | None]:
        return await asyncio.gather(enter(), enter(), enter(), return_exceptions=True)

    fd = held_by_another(store)
    try:
        started = time.monotonic()
        outcomes = asyncio.run(three())
        took = time.monotonic() - started
    finally:
        os.close(fd)
    assert all(isinstance(o, CredentialsLocked) for o in outcomes), outcomes
    assert {str(o) for o in outcomes} == {
        f"--oauth-file {toml_file}: another run (pid 4242) held its lock for 0.3 s; try again later"
    }
    # One wait of 0.3 s shared by the three, not three in turn (0.9 s): the property, with
    # the rest of that margin for a loaded machine.
    assert 0.3 <= took < 0.85, took
    asyncio.run(enter())  # released: a later wait is a wait of its own, and takes it


def test_an_async_wait_is_cancelled_like_any_request(toml_file: Path) -> None:
    store = CredentialsStore(toml_file)  # a minute's bound

    async def cancelled_while_waiting() -> float:
        waiting = asyncio.create_task(enter())
        await asyncio.sleep(0.1)
        started = time.monotonic()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return time.monotonic() - started

    async def enter() -> None:
        async with store.atransaction():
            pass

    fd = held_by_another(store)
    try:
        assert asyncio.run(cancelled_while_waiting()) < 0.1
    finally:
        os.close(fd)
    with store.transaction() as tx:  # nothing left held, in this process or on the file
        tx.save(tx.state)


def test_tasks_of_one_loop_take_turns_and_save_only_in_their_own(toml_file: Path) -> None:
    store = CredentialsStore(toml_file)

    async def refresh(times: int) -> None:
        for _ in range(times):
            async with store.atransaction() as tx:
                company = tx.state.company()
                assert company is not None
                count = int(company.refresh_token.rsplit("-", 1)[1])
                await asyncio.sleep(0.001)  # the request: another task runs meanwhile
                with pytest.raises(RuntimeError, match=r"inside store\.transaction"):
                    await asyncio.create_task(saving_elsewhere())
                tx.save(
                    tx.state.with_refreshed(
                        company,
                        access_token=f"access-{count + 1}",
                        refresh_token=f"refresh-company-{count + 1}",
                        expires_at=EXPIRES,
                    )
                )

    async def saving_elsewhere() -> None:  # another task: not the transaction's holder
        store.save(store.read())

    async def main() -> None:
        await asyncio.gather(refresh(10), refresh(10), refresh(10))

    asyncio.run(main())
    company = store.read().company()
    assert company is not None and company.refresh_token == "refresh-company-31"


# Processes: kill -9 mid-save, and two runs refreshing the same file ------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from pipeline.auth.credentials import CredentialsStore

    store = CredentialsStore(Path(sys.argv[1]))
    rounds = int(sys.argv[2])
    used = os.open(sys.argv[3], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    go = Path(sys.argv[4])
    slow = float(sys.argv[5])  # a slow disk: seconds each fsync takes
    if slow:
        fsync = os.fsync
        os.fsync = lambda fd: (time.sleep(slow), fsync(fd))[1]
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    def refresh(tx):
        credential = tx.state.credentials[0]
        count = int(credential.refresh_token.split("-")[1])
        os.write(used, f"{count}\\n".encode())  # "spends" the refresh token
        tx.save(tx.state.with_refreshed(
            credential,
            access_token=f"access-{count + 1}",
            refresh_token=f"refresh-{count + 1}",
            expires_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=count + 1),
        ))

    async def refresh_async():  # as a run does: on its event loop, two tasks at once
        async def task(share):
            for _ in range(share):
                async with store.atransaction() as tx:
                    await asyncio.sleep(0)  # the request, say
                    refresh(tx)
        await asyncio.gather(task(rounds // 2), task(rounds - rounds // 2))

    if sys.argv[6:] == ["async"]:
        asyncio.run(refresh_async())
    else:
        for _ in range(rounds):
            with store.transaction() as tx:
                refresh(tx)
    """
)

COUNTER_HEAD = (
    'client_id = "c"  # the app\nclient_secret_env = "S"\n\n'
    '[[credentials]]\nuser_type = "Location"\nlocation_id = "L"\nrefresh_token = "refresh-0"\n'
)


def start_child(
    path: Path, rounds: int, used: Path, go: Path, slow: float = 0.0, mode: str = "sync"
) -> subprocess.Popen[str]:
    """A process refreshing the counter credential ``rounds`` times, once ``go`` exists;
    ``mode`` ``async``: in two tasks of an event loop, by ``atransaction``."""
    argv = [str(path), str(rounds), str(used), str(go), str(slow), mode]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def counter(path: Path) -> int:
    """The count the file holds, checking that every part of it is from the same save."""
    state = CredentialsStore(path).read()
    credential = state.credentials[0]
    count = int(credential.refresh_token.split("-")[1])
    if count:
        assert credential.access_token == f"access-{count}"
        assert credential.expires_at == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=count)
    assert len(state.minted) == 20  # and the comment is still there: edited, not rewritten
    assert path.read_text().startswith('client_id = "c"  # the app\n')
    return count


def test_kill_9_at_any_moment_leaves_a_whole_file(tmp_path: Path) -> None:
    minted = "".join(
        f'\n[[minted]]\nlocation_id = "M{i}"\naccess_token = "m{i}"\n'
        'expires_at = "2026-11-29T13:00:00Z"\n'
        for i in range(20)
    )
    path = write(tmp_path / "oauth.toml", COUNTER_HEAD + minted)
    go, used = tmp_path / "go", tmp_path / "used"
    go.touch()
    shuffle = random.Random(7)
    counts, mid_save, seen = [0], 0, set[Path]()
    for _ in range(22):
        # Each fsync takes 20 ms, as on a slow disk, so that many kills land between the
        # temporary file's creation and its rename, or between the rename and the folder's
        # fsync; the others land in the reading, the rendering or the lock.
        child = start_child(path, 10**6, used, go, slow=0.02)
        time.sleep(shuffle.uniform(0.0, 0.1))
        child.send_signal(signal.SIGKILL)
        child.wait()
        counts.append(counter(path))
        left = set(tmp_path.glob(".oauth.toml.*.tmp"))
        mid_save += bool(left - seen)
        seen |= left
    assert counts == sorted(counts) and counts[-1] > 0
    assert mid_save > 0  # some kills did land between a write and its rename
    with CredentialsStore(path).transaction() as tx:
        tx.save(tx.state)  # removes the temporary files the kills left (and then its lock)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "oauth.toml", "used"]


@pytest.mark.parametrize("modes", [("sync", "sync"), ("async", "async"), ("sync", "async")])
def test_two_runs_refreshing_one_file_never_spend_a_token_twice(
    tmp_path: Path, modes: tuple[str, str]
) -> None:
    path = write(tmp_path / "oauth.toml", COUNTER_HEAD)
    go, used = tmp_path / "go", tmp_path / "used"
    rounds = 120
    children = [start_child(path, rounds, used, go, mode=mode) for mode in modes]
    go.touch()
    for child in children:
        assert child.wait(timeout=60) == 0
    spent = sorted(int(line) for line in used.read_text().split())
    assert spent == list(range(2 * rounds))
    credential = CredentialsStore(path).read().credentials[0]
    assert credential.refresh_token == f"refresh-{2 * rounds}"


# Redaction ---------------------------------------------------------------------------------


def test_every_token_read_or_written_is_redacted_from_logs(toml_file: Path) -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream)
    state = CredentialsStore(toml_file).read()
    secret = state.app.client_secret({"GHL_CLIENT_SECRET": "client-secret-xyz"})
    company = state.company()
    assert company is not None
    after = state.with_refreshed(
        company, access_token="new-access-zz", refresh_token="new-refresh-zz", expires_at=NOW
    ).with_minted("L", access_token="minted-zz", expires_at=NOW)
    values = [
        "refresh-location-1",
        "access-location-1",
        "refresh-company-1",
        secret,
        "new-access-zz",
        "new-refresh-zz",
        "minted-zz",
    ]
    structlog.get_logger("t").info("tokens", note=" ".join(values), state=repr(after))
    raw = stream.getvalue()
    assert not any(value in raw for value in values)
    assert json.loads(raw)["note"] == " ".join(["[REDACTED]"] * len(values))

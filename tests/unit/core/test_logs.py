"""Redaction happens in the logging chain, whatever a call site passes."""

from __future__ import annotations

import io
import json
import re

import pytest
import structlog

from pipeline.core import logs

SECRET = "pit-1234-very-secret-token"


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    logs.register_secret(SECRET)
    logs.configure("json", stream=stream)
    return stream


def test_secret_values_and_credential_keys_are_redacted(captured: io.StringIO) -> None:
    log = structlog.get_logger("t")
    log.info(
        f"event with {SECRET} inside",
        headers={"Authorization": f"Bearer {SECRET}", "Version": "2021-07-28"},
        token=SECRET,
        nested=[{"x": f"url?token={SECRET}"}],
        note="Authorization: Bearer abc.def-ghi",
    )
    raw = captured.getvalue()
    assert SECRET not in raw and "abc.def-ghi" not in raw
    event = json.loads(raw)
    assert event["headers"] == {"Authorization": "[REDACTED]", "Version": "2021-07-28"}
    assert event["token"] == "[REDACTED]"
    assert "[REDACTED]" in event["event"]


def test_exceptions_are_scrubbed_too(captured: io.StringIO) -> None:
    log = structlog.get_logger("t")
    try:
        raise RuntimeError(f"request failed with header Authorization: Bearer {SECRET}")
    except RuntimeError:
        log.exception("boom")
    raw = captured.getvalue()
    assert SECRET not in raw and "RuntimeError" in raw


def test_a_value_too_short_to_be_a_secret_is_not_redacted_everywhere() -> None:
    """A token of one letter tried by hand would turn every "x" of every message into
    [REDACTED]; a real token, six characters or more, is redacted wherever it appears."""
    logs.register_secret("x")
    logs.register_secret("")
    assert logs.scrub("http://example.com") == "http://example.com"
    logs.register_secret("sixsix")
    assert logs.scrub("a sixsix b") == f"a {logs.REDACTED} b"


def test_a_console_line_is_for_a_person_and_json_keeps_every_key() -> None:
    """On a terminal: the local time of day, the level, the event, and only the keys that
    say something (the plan's line was 166 characters); JSON keeps them all, ISO and UTC."""
    console, machine = io.StringIO(), io.StringIO()
    fields = {"rows": 1000, "to_send": 984, "already_done": 0, "dry_run": False, "shard": None}
    logs.configure("console", stream=console)
    structlog.get_logger("t").info("planned", token=SECRET, **fields)
    line = console.getvalue().strip()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d \[info\] planned already_done=0 rows=1000 to_send=984 token=\S+", line
    ), line
    assert SECRET not in line  # redacted on the console too
    logs.configure("json", stream=machine)
    structlog.get_logger("t").info("planned", **fields)
    event = json.loads(machine.getvalue())
    assert event["dry_run"] is False and event["shard"] is None and event["already_done"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", event["timestamp"])

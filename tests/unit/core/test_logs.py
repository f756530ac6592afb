"""Redaction happens in the logging chain, whatever a call site passes."""

from __future__ import annotations

import io
import json

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

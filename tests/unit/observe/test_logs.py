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

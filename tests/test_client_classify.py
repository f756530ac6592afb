"""Every answer the API can give, classified without a server."""

from __future__ import annotations

import json

import pytest

from pipeline.client import classify, classify_failure
from pipeline.outcomes import Code, Status
from pipeline.transport import TransportFailure

RATE_HEADERS = {
    "X-RateLimit-Limit-Daily": "200000",
    "X-RateLimit-Daily-Remaining": "199000",
    "X-RateLimit-Interval-Milliseconds": "10000",
    "X-RateLimit-Max": "100",
    "X-RateLimit-Remaining": "42",
}


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize("status", [200, 201])
def test_success_with_conversation_id_is_created(status: int) -> None:
    answer = classify(status, RATE_HEADERS, body({"success": True, "conversation": {"id": "c1"}}))
    assert (answer.status, answer.code, answer.conversation_id) == (Status.CREATED, None, "c1")
    assert answer.rate.remaining == 42 and answer.rate.max_requests == 100
    assert answer.rate.interval_ms == 10_000 and answer.rate.daily_remaining == 199_000


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"[]", body({"success": True}), body({"conversation": {"id": ""}})]
)
def test_success_without_an_id_is_invalid_response(raw: bytes) -> None:
    answer = classify(201, {}, raw)
    assert (answer.status, answer.code, answer.http_status) == (
        Status.FAILED,
        Code.INVALID_RESPONSE,
        201,
    )


def test_already_exists_is_exists() -> None:
    message = "Conversation with the contact id:abc123 already exists!"
    answer = classify(400, {}, body({"statusCode": 400, "message": message}))
    assert (answer.status, answer.code, answer.message) == (
        Status.EXISTS,
        Code.CONVERSATION_EXISTS,
        message,
    )


@pytest.mark.parametrize(
    ("status", "payload", "code", "message"),
    [
        (400, {"statusCode": 400, "message": "Bad Request"}, Code.BAD_REQUEST, "Bad Request"),
        (400, None, Code.INVALID_RESPONSE, "400 answer with an unreadable body"),
        (
            401,
            {
                "statusCode": 401,
                "message": "Invalid token: access token is invalid",
                "error": "Unauthorized",
            },
            Code.UNAUTHORIZED,
            "Invalid token: access token is invalid",
        ),
        (
            403,
            {"message": "The token does not have access to this location."},
            Code.FORBIDDEN,
            "The token does not have access to this location.",
        ),
        (404, None, Code.NOT_FOUND, "Not Found"),
        (
            422,
            {
                "statusCode": 422,
                "message": ["contactId must be a string", "x"],
                "error": "Unprocessable Entity",
            },
            Code.UNPROCESSABLE,
            "contactId must be a string; x",
        ),
        (429, {"message": "Too Many Requests"}, Code.RATE_LIMITED, "Too Many Requests"),
        (409, {}, Code.CLIENT_ERROR, "Conflict"),
        (500, {"message": "Internal Server Error"}, Code.SERVER_ERROR, "Internal Server Error"),
        (502, None, Code.SERVER_ERROR, "Bad Gateway"),
    ],
)
def test_error_answers(status: int, payload: object, code: Code, message: str) -> None:
    raw = b"<html>oops</html>" if payload is None else body(payload)
    answer = classify(status, {}, raw)
    assert (answer.status, answer.code, answer.http_status, answer.message) == (
        Status.FAILED,
        code,
        status,
        message,
    )


def test_retry_after_is_read() -> None:
    answer = classify(429, {"Retry-After": "3"}, b"")
    assert answer.rate.retry_after_s == 3.0


def test_messages_are_one_short_line() -> None:
    answer = classify(500, {}, body({"message": "line one\nline two " + "x" * 1000}))
    assert answer.message is not None and "\n" not in answer.message and len(answer.message) <= 300


def test_timeouts_and_network_errors() -> None:
    assert classify_failure(TransportFailure("slow", timeout=True)).code is Code.TIMEOUT
    refused = classify_failure(TransportFailure("ClientConnectorError: refused", timeout=False))
    assert (refused.status, refused.code, refused.message) == (
        Status.FAILED,
        Code.NETWORK_ERROR,
        "ClientConnectorError: refused",
    )

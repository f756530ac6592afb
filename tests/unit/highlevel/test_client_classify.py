"""Every answer the API can give, classified without a server."""

from __future__ import annotations

import json

import pytest

from pipeline.core.outcomes import Code, Status
from pipeline.highlevel.client import classify, classify_failure, classify_search
from pipeline.highlevel.transport import TransportFailure

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


# As the live API words it (GoHighLevel/highlevel-api-docs issue #5): a trace id follows.
LIVE_EXISTS = (
    "Conversation with the contact id:rTDJGD7SjqDamyzrk5UW already exists! "
    "cbf699cb-28e6-42d8-b49b-f6731af2560b"
)


def test_already_exists_as_the_live_api_words_it() -> None:
    answer = classify(
        400, {}, body({"statusCode": 400, "message": LIVE_EXISTS}), "rTDJGD7SjqDamyzrk5UW"
    )
    assert (answer.status, answer.code, answer.message) == (
        Status.EXISTS,
        Code.CONVERSATION_EXISTS,
        LIVE_EXISTS,
    )
    # No traceId key in the body: the one the message carries is kept.
    assert answer.trace_id == "cbf699cb-28e6-42d8-b49b-f6731af2560b"


@pytest.mark.parametrize(
    "tail",
    ["", " cbf699cb-28e6-42d8-b49b-f6731af2560b", " (trace abc) and more text", "!!", "\n x"],
)
def test_already_exists_whatever_follows(tail: str) -> None:
    message = "Conversation with the contact id:c1 already exists!" + tail
    answer = classify(400, {}, body({"statusCode": 400, "message": message}), "c1")
    assert (answer.status, answer.code) == (Status.EXISTS, Code.CONVERSATION_EXISTS)


@pytest.mark.parametrize(
    "message",
    [
        "Conversation with the contact id:OTHER already exists! x",  # another contact
        "Conversation with the contact id:c12 already exists!",  # c1 is only a prefix of it
        "Conversation with the contact id:c1 could not be created",
        "Bad Request",
    ],
)
def test_not_this_rows_exists_answer_is_a_bad_request(message: str) -> None:
    answer = classify(400, {}, body({"statusCode": 400, "message": message}), "c1")
    assert (answer.status, answer.code) == (Status.FAILED, Code.BAD_REQUEST)


def test_trace_id_is_kept_from_any_json_answer() -> None:
    trace = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
    created = classify(201, {}, body({"conversation": {"id": "c"}, "traceId": trace}))
    refused = classify(401, {}, body({"statusCode": 401, "message": "Invalid", "traceId": trace}))
    assert created.trace_id == trace and refused.trace_id == trace
    assert classify(500, {}, b"<html></html>").trace_id is None


@pytest.mark.parametrize(
    "payload",
    [
        {"success": False, "conversation": {"id": "c1"}},
        {"success": True, "conversation": {"id": "   "}},
        {"success": True, "conversation": {"id": 42}},
        {"success": True, "conversation": None},
        {"success": True, "id": "c1"},
    ],
)
def test_strict_success(payload: object) -> None:
    answer = classify(200, {}, body(payload))
    assert (answer.status, answer.code) == (Status.FAILED, Code.INVALID_RESPONSE)


def test_search_counts_only_the_rows_contact() -> None:
    hits = {
        "conversations": [
            {"id": "no-contact"},  # names no contact: not a match
            {"id": "other", "contactId": "c2"},
            {"id": "mine", "contactId": "c1"},
        ],
        "total": 3,
    }
    found = classify_search(200, {}, body(hits), "c1")
    assert (found.status, found.conversation_id) == (Status.EXISTS, "mine")
    none = classify_search(200, {}, body({"conversations": [{"id": "x"}], "total": 1}), "c1")
    assert (none.status, none.conversation_id) == (Status.EXISTS, None)


def test_401_that_names_a_scope_is_not_a_rejected_token() -> None:
    scope = {"statusCode": 401, "message": "The token is not authorized for this scope."}
    assert classify_search(401, {}, body(scope), "c1").code is Code.MISSING_SCOPE
    version = {"statusCode": 401, "message": "version header is invalid"}
    assert classify(401, {}, body(version)).code is Code.BAD_REQUEST


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


def test_connect_failures_are_told_apart() -> None:
    refused = TransportFailure("ClientConnectorError: refused", timeout=False, connect=True)
    dropped = TransportFailure("ServerDisconnectedError", timeout=False)
    assert classify_failure(refused).connect_failed
    assert not classify_failure(dropped).connect_failed


def test_timeouts_and_network_errors() -> None:
    assert classify_failure(TransportFailure("slow", timeout=True)).code is Code.TIMEOUT
    refused = classify_failure(TransportFailure("ClientConnectorError: refused", timeout=False))
    assert (refused.status, refused.code, refused.message) == (
        Status.FAILED,
        Code.NETWORK_ERROR,
        "ClientConnectorError: refused",
    )

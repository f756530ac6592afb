"""The API client: builds Create Conversation requests and classifies every answer.

The client knows HighLevel's API (paths, headers, bodies, what each answer means). How bytes
move is a separate seam, ``transport.Transport`` (aiohttp directly by default, or httpx).

Classification is a pure function of (status, headers, body), so every rule is unit-tested
without a server, and the same function serves real answers and the sandbox's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from pipeline import constants
from pipeline.logs import scrub
from pipeline.outcomes import Code, Status
from pipeline.tokens import Tokens
from pipeline.transport import HttpStack, Transport, TransportFailure, make_transport

MAX_MESSAGE_CHARS = 300


@dataclass(frozen=True, slots=True)
class RateInfo:
    """What the API said about its limits in one answer's headers (None where absent)."""

    remaining: int | None = None
    max_requests: int | None = None
    interval_ms: int | None = None
    daily_remaining: int | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP attempt, classified."""

    status: Status  # created, exists or failed
    code: Code | None
    conversation_id: str | None = None
    http_status: int | None = None
    message: str | None = None
    rate: RateInfo = RateInfo()


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get(constants.H_RETRY_AFTER)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date; rare for APIs, and the rate headers still guide us


def parse_rate_info(headers: Mapping[str, str]) -> RateInfo:
    return RateInfo(
        remaining=_int_header(headers, constants.H_REMAINING),
        max_requests=_int_header(headers, constants.H_MAX),
        interval_ms=_int_header(headers, constants.H_INTERVAL_MS),
        daily_remaining=_int_header(headers, constants.H_DAILY_REMAINING),
        retry_after_s=_retry_after(headers),
    )


def _message(body: Any, fallback: str) -> str:
    """The API's human message: ``message`` is a string, or a list of them for 422."""
    text: str | None = None
    if isinstance(body, dict):
        raw = body.get("message")
        if isinstance(raw, list):
            text = "; ".join(str(item) for item in raw)
        elif raw is not None:
            text = str(raw)
    text = text or fallback
    text = " ".join(text.split())  # one line, whatever the server sent
    return text[:MAX_MESSAGE_CHARS]


_CODE_BY_STATUS = {
    400: Code.BAD_REQUEST,
    401: Code.UNAUTHORIZED,
    403: Code.FORBIDDEN,
    404: Code.NOT_FOUND,
    422: Code.UNPROCESSABLE,
    429: Code.RATE_LIMITED,
}


def is_exists_message(message: str) -> bool:
    return message.startswith(constants.EXISTS_MESSAGE_PREFIX) and message.endswith(
        constants.EXISTS_MESSAGE_MARK.strip()
    )


def classify(status_code: int, headers: Mapping[str, str], body: bytes) -> Answer:
    """Turn one HTTP answer into a row outcome."""
    rate = parse_rate_info(headers)
    try:
        data: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    reason = httpx.codes.get_reason_phrase(status_code) or f"HTTP {status_code}"
    if 200 <= status_code < 300:
        conversation = data.get("conversation") if isinstance(data, dict) else None
        conv_id = conversation.get("id") if isinstance(conversation, dict) else None
        if isinstance(conv_id, str) and conv_id:
            return Answer(Status.CREATED, None, conv_id, status_code, None, rate)
        return Answer(
            Status.FAILED,
            Code.INVALID_RESPONSE,
            http_status=status_code,
            message="success status but the body has no conversation.id",
            rate=rate,
        )
    if status_code == 400 and not isinstance(data, dict):
        # HighLevel words every 400 in JSON; without it we cannot tell "already exists" from
        # a real bad request, and sending again is harmless, so treat it as unreadable.
        return Answer(
            Status.FAILED,
            Code.INVALID_RESPONSE,
            http_status=status_code,
            message="400 answer with an unreadable body",
            rate=rate,
        )
    message = _message(data, reason)
    if status_code == 400 and is_exists_message(message):
        return Answer(Status.EXISTS, Code.CONVERSATION_EXISTS, None, status_code, message, rate)
    if status_code >= 500:
        code = Code.SERVER_ERROR
    else:
        code = _CODE_BY_STATUS.get(status_code, Code.CLIENT_ERROR)
    return Answer(Status.FAILED, code, None, status_code, message, rate)


def classify_search(
    status_code: int, headers: Mapping[str, str], body: bytes, contact_id: str
) -> Answer:
    """A search answer: ``exists`` with the contact's conversation id, or why not.

    Found: ``Status.EXISTS`` with the id. Not (yet) indexed: ``Status.EXISTS`` without an id.
    Anything else is classified like a create answer, so the caller can retry or give up.
    """
    if not 200 <= status_code < 300:
        return classify(status_code, headers, body)
    rate = parse_rate_info(headers)
    try:
        data: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    items = data.get("conversations") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return Answer(
            Status.FAILED,
            Code.INVALID_RESPONSE,
            http_status=status_code,
            message="search answer has no conversations list",
            rate=rate,
        )
    for item in items:
        if isinstance(item, dict) and item.get("contactId", contact_id) == contact_id:
            conv_id = item.get("id")
            if isinstance(conv_id, str) and conv_id:
                return Answer(
                    Status.EXISTS, Code.CONVERSATION_EXISTS, conv_id, status_code, None, rate
                )
    return Answer(Status.EXISTS, Code.CONVERSATION_EXISTS, None, status_code, None, rate)


def classify_failure(failure: TransportFailure) -> Answer:
    """A request that got no HTTP answer. The message names the failure, never headers."""
    code = Code.TIMEOUT if failure.timeout else Code.NETWORK_ERROR
    return Answer(Status.FAILED, code, message=scrub(str(failure))[:MAX_MESSAGE_CHARS])


class ConversationsClient:
    """HighLevel's conversation endpoints over one shared, pooled transport for the whole run.

    One token rides in the pool's default headers; with a token per location, each request
    carries its location's ``Authorization`` header over the same pool.
    """

    def __init__(
        self,
        *,
        base_url: str,
        tokens: Tokens,
        api_version: str,
        timeout_s: float,
        max_connections: int,
        stack: HttpStack = "aiohttp",
        transport: Transport | None = None,
    ) -> None:
        self._tokens = tokens
        headers = {
            constants.H_VERSION: api_version,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        if not tokens.per_location and tokens.default:
            headers["Authorization"] = f"Bearer {tokens.default}"
        self._auth: dict[str, dict[str, str]] = {
            location: {"Authorization": f"Bearer {token}"}
            for location, token in tokens.by_location.items()
        }
        self._transport = transport or make_transport(
            stack,
            base_url=base_url,
            headers=headers,
            timeout_s=timeout_s,
            max_connections=max_connections,
        )

    def token_key(self, location_id: str) -> int:
        return self._tokens.key(location_id)

    async def create_conversation(self, location_id: str, contact_id: str) -> Answer:
        body = orjson.dumps({"locationId": location_id, "contactId": contact_id})
        try:
            raw = await self._transport.post(
                constants.CREATE_CONVERSATION_PATH, body, self._auth.get(location_id)
            )
        except TransportFailure as failure:
            return classify_failure(failure)
        return classify(raw.status, raw.headers, raw.body)

    async def find_conversation(self, location_id: str, contact_id: str) -> Answer:
        """Look up the contact's existing conversation (after an "already exists" answer)."""
        params = {"locationId": location_id, "contactId": contact_id}
        try:
            raw = await self._transport.get(
                constants.SEARCH_CONVERSATIONS_PATH, params, self._auth.get(location_id)
            )
        except TransportFailure as failure:
            return classify_failure(failure)
        return classify_search(raw.status, raw.headers, raw.body, contact_id)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> ConversationsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

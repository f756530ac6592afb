"""The API client: builds Create Conversation requests and classifies every answer.

The client knows HighLevel's API (paths, headers, bodies, what each answer means). How bytes
move is a separate seam, ``transport.Transport`` (aiohttp directly by default, or httpx).

Classification is a pure function of (status, headers, body, the row's contact), so every
rule is unit-tested without a server, and the same function serves real answers and the
sandbox's. It reads answers strictly, the way the live API words them (the README's
"Retries, limits and a rejected token"): success only with a conversation id, "already
exists" by its start and the row's contact id whatever follows it, a search hit only when it
names the row's contact. Every answer's ``traceId`` is kept, for HighLevel's support. What
it makes, ``Answer`` and ``RateHeaders``, is plain data in ``answers`` (no I/O import there).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson

from pipeline.auth.signer import CredentialsBusy, Headers, NoToken, Signer
from pipeline.auth.signing import FixedTokens
from pipeline.auth.tokens import Tokens
from pipeline.core import constants
from pipeline.core.errors import one_line
from pipeline.core.logs import scrub
from pipeline.core.outcomes import RETRYABLE, Code, Status
from pipeline.highlevel.answers import Answer, RateHeaders
from pipeline.highlevel.transport import (
    HttpStack,
    RawAnswer,
    Transport,
    TransportFailure,
    make_transport,
)

MAX_MESSAGE_CHARS = 300
MAX_TRACE_ID_CHARS = 100


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    if value.isdecimal() and len(value) <= 15:  # the usual: digits, as exact as a float
        return int(value)
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


def parse_rate_info(headers: Mapping[str, str]) -> RateHeaders:
    return RateHeaders(  # positionally: RateHeaders's fields in order (keywords cost twice as much)
        _int_header(headers, constants.H_REMAINING),
        _int_header(headers, constants.H_MAX),
        _int_header(headers, constants.H_INTERVAL_MS),
        _int_header(headers, constants.H_DAILY_REMAINING),
        _int_header(headers, constants.H_LIMIT_DAILY),
        _retry_after(headers),
    )


def _message(body: Any, fallback: str) -> str:
    """The API's human message, whole, on one line: ``message`` is a string, or a list of
    them for 422. (Cut to ``MAX_MESSAGE_CHARS`` only once it has been recognised.)"""
    text: str | None = None
    if isinstance(body, dict):
        raw = body.get("message")
        if isinstance(raw, list):
            text = "; ".join(str(item) for item in raw)
        elif raw is not None:
            text = str(raw)
    text = text or fallback
    return one_line(text)  # whatever the server sent


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _trace_id(body: Any, message: str | None = None) -> str | None:
    """HighLevel's ``traceId`` of an answer; failing that, the trace id the live API writes
    after the text of some messages ("... already exists! cbf699cb-...")."""
    if isinstance(body, dict):
        value = body.get(constants.TRACE_ID_KEY)
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_TRACE_ID_CHARS]
    if message:
        found = _UUID.search(message)
        if found:
            return found.group(0)
    return None


_CODE_BY_STATUS = {
    400: Code.BAD_REQUEST,
    401: Code.UNAUTHORIZED,
    403: Code.FORBIDDEN,
    404: Code.NOT_FOUND,
    422: Code.UNPROCESSABLE,
    429: Code.RATE_LIMITED,
}


def is_exists_message(message: str, contact_id: str | None) -> bool:
    """HighLevel's "already exists" 400, recognised by its start and the contact id.

    The live API goes on after "already exists!" (a trace id), so whatever follows is
    ignored; a message that names another contact is not this row's answer. Without a
    contact id (a caller that has none) any id is accepted."""
    prefix = constants.EXISTS_MESSAGE_PREFIX
    mark = constants.EXISTS_MESSAGE_MARK.strip()
    if not message.startswith(prefix):
        return False
    rest = message[len(prefix) :].lstrip()
    if contact_id is None:
        named, _, after = rest.partition(" ")
        return bool(named) and after.startswith(mark)
    return rest.startswith(contact_id) and rest[len(contact_id) :].lstrip().startswith(mark)


# 401 answers that do not mean "this token is rejected", told apart by the API's message:
# a token without the scope an endpoint needs, and a Version header the API refuses.
_MISSING_SCOPE = re.compile(r"not authori[sz]ed for this scope", re.IGNORECASE)
_BAD_VERSION = re.compile(r"\bversion\b", re.IGNORECASE)


def _code_for(status_code: int, message: str) -> Code:
    if status_code >= 500:
        return Code.SERVER_ERROR
    if status_code == 401:
        if _MISSING_SCOPE.search(message):
            return Code.MISSING_SCOPE
        if _BAD_VERSION.search(message):
            return Code.BAD_REQUEST
    return _CODE_BY_STATUS.get(status_code, Code.CLIENT_ERROR)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def classify(
    status_code: int, headers: Mapping[str, str], body: bytes, contact_id: str | None = None
) -> Answer:
    """Turn one answer to a create request for ``contact_id`` into a row outcome."""
    rate = parse_rate_info(headers)
    data = _json(body)
    trace = _trace_id(data)
    if 200 <= status_code < 300:
        conversation = data.get("conversation") if isinstance(data, dict) else None
        conv_id = conversation.get("id") if isinstance(conversation, dict) else None
        refused = isinstance(data, dict) and data.get("success") is False
        if isinstance(conv_id, str) and conv_id.strip() and not refused:
            return Answer(Status.CREATED, None, conv_id, status_code, None, rate, trace)
        why = "success: false" if refused else "no conversation.id"
        return Answer(
            Status.FAILED,
            Code.INVALID_RESPONSE,
            http_status=status_code,
            message=f"success status but the body has {why}",
            rate=rate,
            trace_id=trace,
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
    reason = httpx.codes.get_reason_phrase(status_code) or f"HTTP {status_code}"
    message = _message(data, reason)
    trace = trace or _trace_id(None, message)
    if status_code == 400 and is_exists_message(message, contact_id):
        return Answer(
            Status.EXISTS,
            Code.CONVERSATION_EXISTS,
            None,
            status_code,
            message[:MAX_MESSAGE_CHARS],
            rate,
            trace,
        )
    code = _code_for(status_code, message)
    return Answer(Status.FAILED, code, None, status_code, message[:MAX_MESSAGE_CHARS], rate, trace)


def classify_search(
    status_code: int, headers: Mapping[str, str], body: bytes, contact_id: str
) -> Answer:
    """A search answer: ``exists`` with the contact's conversation id, or why not.

    Found: ``Status.EXISTS`` with the id of the first item whose ``contactId`` is the row's
    contact (an item that names no contact is not a match). Not (yet) indexed:
    ``Status.EXISTS`` without an id. Anything else is classified like a create answer, so
    the caller can retry or give up.
    """
    if not 200 <= status_code < 300:
        return classify(status_code, headers, body, contact_id)
    rate = parse_rate_info(headers)
    data = _json(body)
    trace = _trace_id(data)
    items = data.get("conversations") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return Answer(
            Status.FAILED,
            Code.INVALID_RESPONSE,
            http_status=status_code,
            message="search answer has no conversations list",
            rate=rate,
            trace_id=trace,
        )
    for item in items:
        if isinstance(item, dict) and item.get("contactId") == contact_id:
            conv_id = item.get("id")
            if isinstance(conv_id, str) and conv_id.strip():
                return Answer(
                    Status.EXISTS, Code.CONVERSATION_EXISTS, conv_id, status_code, None, rate, trace
                )
    return Answer(Status.EXISTS, Code.CONVERSATION_EXISTS, None, status_code, None, rate, trace)


def classify_failure(failure: TransportFailure) -> Answer:
    """A request that got no HTTP answer. The message names the failure, never headers."""
    code = Code.TIMEOUT if failure.timeout else Code.NETWORK_ERROR
    return Answer(
        Status.FAILED,
        code,
        message=scrub(str(failure))[:MAX_MESSAGE_CHARS],
        connect_failed=failure.connect,
    )


def _rejects_token(raw: RawAnswer) -> bool:
    """A 401 about the token itself (not a missing scope or a bad Version header)."""
    return classify(raw.status, raw.headers, raw.body).code is Code.UNAUTHORIZED


class ConversationsClient:
    """HighLevel's conversation endpoints over one shared, pooled transport for the whole run.

    Each request is signed by the run's ``Signer`` (``pipeline.auth.signing``): one token rides in
    the pool's default headers; a token per location, or an OAuth token, rides on each
    request over the same pool. A 401 is sent once more when the signer has a fresher token
    (OAuth); only a 401 that survives it is the answer.
    """

    def __init__(
        self,
        *,
        base_url: str,
        tokens: Tokens | None = None,
        signer: Signer | None = None,
        api_version: str,
        timeout: float,
        concurrency: int,
        http_stack: HttpStack = "aiohttp",
        transport: Transport | None = None,
    ) -> None:
        if signer is None:
            if tokens is None:
                raise ValueError("a client needs tokens or a signer")
            signer = FixedTokens(tokens)
        self._signer = signer
        headers = {
            constants.H_VERSION: api_version,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        if isinstance(signer, FixedTokens) and signer.default_header is not None:
            headers["Authorization"] = signer.default_header
        self._transport = transport or make_transport(
            http_stack,
            base_url=base_url,
            headers=headers,
            timeout=timeout,
            concurrency=concurrency,
        )
        attach = getattr(signer, "attach", None)
        if attach is not None:  # an OAuth signer refreshes and mints over the same pool
            attach(self._transport)

    def token_key(self, location_id: str) -> int:
        return self._signer.key(location_id)

    async def _signed(
        self, location_id: str, send: Callable[[Headers | None], Awaitable[RawAnswer]]
    ) -> RawAnswer | Answer:
        """``send`` signed for the location; once more after a 401 when the signer has a
        fresher token. An ``Answer`` instead when no token can be had (nothing was sent)."""
        try:
            auth = await self._signer.headers(location_id)
            raw = await send(auth)
            rejected = raw.status == 401 and _rejects_token(raw)
            if rejected and await self._signer.renew(location_id, auth):
                raw = await send(await self._signer.headers(location_id))
        except NoToken as missing:
            # A token that could not be had for a passing reason (the OAuth endpoint's 5xx)
            # is a failure to retry; one that cannot be had at all ends the row skipped.
            status = Status.FAILED if missing.code in RETRYABLE else Status.SKIPPED
            return Answer(
                status,
                missing.code,
                message=missing.message,
                connect_failed=missing.connect_failed,
                sent=False,
            )
        except CredentialsBusy as busy:  # another run held the credentials: the run stops
            return Answer(Status.SKIPPED, Code.CREDENTIALS_LOCKED, message=busy.message, sent=False)
        return raw

    async def create_conversation(self, location_id: str, contact_id: str) -> Answer:
        body = orjson.dumps({"locationId": location_id, "contactId": contact_id})
        try:
            raw = await self._signed(
                location_id,
                lambda auth: self._transport.post(constants.CREATE_CONVERSATION_PATH, body, auth),
            )
        except TransportFailure as failure:
            return classify_failure(failure)
        if isinstance(raw, Answer):
            return raw
        return classify(raw.status, raw.headers, raw.body, contact_id)

    async def find_conversation(self, location_id: str, contact_id: str) -> Answer:
        """Look up the contact's existing conversation (after an "already exists" answer)."""
        params = {"locationId": location_id, "contactId": contact_id}
        try:
            raw = await self._signed(
                location_id,
                lambda auth: self._transport.get(constants.SEARCH_CONVERSATIONS_PATH, params, auth),
            )
        except TransportFailure as failure:
            return classify_failure(failure)
        if isinstance(raw, Answer):
            return raw
        return classify_search(raw.status, raw.headers, raw.body, contact_id)

    async def probe(self, location_id: str) -> Answer:
        """One search of the location (a single item), as ``pipeline check`` makes: it says
        whether the token is accepted, reaches the location and may search, and carries the
        location's live rate headers. A readable 2xx comes back with no ``code``; anything
        else is classified like a create answer (``missing_scope``, ``unauthorized``, ...)."""
        params = {"locationId": location_id, "limit": "1"}
        try:
            raw = await self._signed(
                location_id,
                lambda auth: self._transport.get(constants.SEARCH_CONVERSATIONS_PATH, params, auth),
            )
        except TransportFailure as failure:
            return classify_failure(failure)
        if isinstance(raw, Answer):
            return raw
        if 200 <= raw.status < 300:
            answer = classify_search(raw.status, raw.headers, raw.body, "")
            return Answer(
                answer.status,
                None if answer.status is Status.EXISTS else answer.code,
                http_status=raw.status,
                message=answer.message,
                rate=answer.rate,
                trace_id=answer.trace_id,
            )
        return classify(raw.status, raw.headers, raw.body)

    async def aclose(self) -> None:
        await self._signer.aclose()
        await self._transport.aclose()

    async def __aenter__(self) -> ConversationsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

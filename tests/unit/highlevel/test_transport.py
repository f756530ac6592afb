"""The transport seam: failures become TransportFailure, headers and bodies come back whole."""

from __future__ import annotations

import socket

import httpx
import pytest

from pipeline.auth.tokens import Tokens
from pipeline.core.outcomes import Code, Status
from pipeline.highlevel.client import ConversationsClient
from pipeline.highlevel.transport import (
    HTTP_STACKS,
    HttpxTransport,
    TransportFailure,
    make_transport,
)

HEADERS = {"Authorization": "Bearer t", "Version": "2021-07-28"}


async def test_httpx_transport_with_a_mock_sees_headers_body_and_encoded_query() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"conversations": [{"id": "c1", "contactId": "a b"}]})

    transport = HttpxTransport(
        base_url="http://api.test",
        headers=HEADERS,
        timeout=1,
        concurrency=2,
        transport=httpx.MockTransport(handler),
    )
    client = ConversationsClient(
        base_url="http://api.test",
        tokens=Tokens(default="t"),
        api_version="2021-07-28",
        timeout=1,
        concurrency=2,
        transport=transport,
    )
    answer = await client.find_conversation("L&x=1", "a b")
    await client.aclose()
    assert (answer.status, answer.conversation_id) == (Status.EXISTS, "c1")
    request = seen[0]
    assert request.url.params["locationId"] == "L&x=1" and request.url.params["contactId"] == "a b"
    assert (
        request.headers["Authorization"] == "Bearer t"
        and request.headers["Version"] == "2021-07-28"
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("stack", HTTP_STACKS)
async def test_connection_refused_is_a_network_error(stack: str) -> None:
    transport = make_transport(
        stack,  # type: ignore[arg-type]
        base_url=f"http://127.0.0.1:{closed_port()}",
        headers=HEADERS,
        timeout=2,
        concurrency=1,
    )
    with pytest.raises(TransportFailure) as info:
        await transport.post("/conversations/", b"{}")
    await transport.aclose()
    assert not info.value.timeout
    assert "Bearer" not in str(info.value)


@pytest.mark.parametrize("stack", HTTP_STACKS)
async def test_no_answer_in_time_is_a_timeout(stack: str) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        transport = make_transport(
            stack,  # type: ignore[arg-type]
            base_url=f"http://127.0.0.1:{server.getsockname()[1]}",
            headers=HEADERS,
            timeout=0.3,
            concurrency=1,
        )
        client = ConversationsClient(
            base_url="unused",
            tokens=Tokens(default="t"),
            api_version="v",
            timeout=0.3,
            concurrency=1,
            transport=transport,
        )
        answer = await client.create_conversation("L", "c")
        await client.aclose()
    finally:
        server.close()
    assert (answer.status, answer.code) == (Status.FAILED, Code.TIMEOUT)

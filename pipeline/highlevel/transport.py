"""How bytes move: the seam between the API client and the HTTP stack.

The client (``client.py``) builds requests and classifies answers; a transport only sends
them and hands back ``(status, headers, body)``, or raises ``TransportFailure`` when no
answer came. Three stacks sit behind the seam, chosen with ``--http-stack``:

- ``aiohttp`` (default): a lean path straight onto aiohttp's connection pool. Measured on
  this project's 2-core machine at about 5-6x httpx's own transport and 1.7x httpx over an
  aiohttp transport (BENCHMARKS.md); at thousands of requests per second per core, the
  per-request cost of building httpx's Request/Response objects is most of the budget.
- ``httpx``: ``httpx.AsyncClient`` with its own transport; any ``httpx.AsyncBaseTransport``
  can be handed in (``httpx.MockTransport`` in tests, a proxy-aware transport, ...).
- ``httpx-aiohttp``: ``httpx.AsyncClient`` over ``httpx_aiohttp.AiohttpTransport``.

Every stack keeps one pooled, keep-alive client for the whole run, sized to the
concurrency, with a per-request timeout and TLS verification always on. A failure's message
names the failure, never a header, so a token cannot leak through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp
import httpx
from yarl import URL

from pipeline.core.errors import one_line
from pipeline.core.outcomes import quick_init

HttpStack = Literal["aiohttp", "httpx", "httpx-aiohttp"]
HTTP_STACKS: tuple[HttpStack, ...] = ("aiohttp", "httpx", "httpx-aiohttp")


@quick_init
@dataclass(frozen=True, slots=True)
class RawAnswer:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes


class TransportFailure(Exception):
    """No HTTP answer: a timeout, or a connection refused, reset or dropped.

    ``connect``: no connection could be made at all (refused, DNS, TLS, connect timeout),
    as opposed to one that broke or went quiet after the request was sent. Only the first
    kind can mean that the API is out of reach."""

    def __init__(self, message: str, *, timeout: bool, connect: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.connect = connect


# A connection that is not made within this many seconds will not be made: a server that
# is up accepts in milliseconds. (The whole request still has ``--timeout``.)
CONNECT_TIMEOUT_S = 10.0


class Transport(Protocol):
    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RawAnswer: ...

    async def get(
        self, path: str, params: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> RawAnswer: ...

    async def aclose(self) -> None: ...


def _describe(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 300 characters (the type alone if no message)."""
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


class AiohttpTransport:
    """aiohttp, used directly: one session, URLs parsed once, no per-request wrapper objects."""

    def __init__(
        self, *, base_url: str, headers: Mapping[str, str], timeout: float, concurrency: int
    ) -> None:
        self._base = URL(base_url.rstrip("/"))
        self._headers = dict(headers)
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, sock_connect=min(timeout, CONNECT_TIMEOUT_S)
        )
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._post_urls: dict[str, URL] = {}

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running event loop, as aiohttp requires.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._concurrency,
                limit_per_host=0,
                keepalive_timeout=60,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=connector,
                raise_for_status=False,
            )
        return self._session

    def _url(self, path: str) -> URL:
        url = self._post_urls.get(path)
        if url is None:
            url = self._post_urls[path] = URL(str(self._base) + path)
        return url

    async def _send(
        self, method: str, url: URL, body: bytes | None, headers: Mapping[str, str] | None
    ) -> RawAnswer:
        try:
            async with self._open().request(method, url, data=body, headers=headers) as response:
                payload = await response.read()
                return RawAnswer(response.status, response.headers, payload)
        except aiohttp.ConnectionTimeoutError as exc:
            raise TransportFailure(
                f"no connection in time ({type(exc).__name__})", timeout=True, connect=True
            ) from exc
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError is one too
            raise TransportFailure(
                f"no answer in time ({type(exc).__name__})", timeout=True
            ) from exc
        except (aiohttp.ClientConnectorError, aiohttp.ClientSSLError) as exc:
            raise TransportFailure(_describe(exc), timeout=False, connect=True) from exc
        except aiohttp.ClientError as exc:
            raise TransportFailure(_describe(exc), timeout=False) from exc

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RawAnswer:
        return await self._send("POST", self._url(path), body, headers)

    async def get(
        self, path: str, params: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> RawAnswer:
        return await self._send("GET", self._url(path).with_query(dict(params)), None, headers)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class HttpxTransport:
    """``httpx.AsyncClient`` over any httpx transport."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        timeout: float,
        concurrency: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers),
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
            limits=limits,
            transport=transport,
            follow_redirects=False,
        )

    async def _send(self, request: httpx.Request) -> RawAnswer:
        try:
            response = await self._http.send(request)
            await response.aread()
        except httpx.TimeoutException as exc:
            cause = exc.__cause__
            if _is_disconnect(exc):
                connect = isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ClientSSLError)
                raise TransportFailure(
                    _describe(cause or exc), timeout=False, connect=connect
                ) from exc
            raise TransportFailure(
                f"no answer in time ({type(exc).__name__})",
                timeout=True,
                connect=isinstance(exc, httpx.ConnectTimeout),
            ) from exc
        except httpx.ConnectError as exc:
            raise TransportFailure(_describe(exc), timeout=False, connect=True) from exc
        except httpx.HTTPError as exc:
            raise TransportFailure(_describe(exc), timeout=False) from exc
        return RawAnswer(response.status_code, response.headers, response.content)

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RawAnswer:
        request = self._http.build_request("POST", path, content=body, headers=headers)
        return await self._send(request)

    async def get(
        self, path: str, params: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> RawAnswer:
        request = self._http.build_request("GET", path, params=dict(params), headers=headers)
        return await self._send(request)

    async def aclose(self) -> None:
        await self._http.aclose()


def _is_disconnect(exc: BaseException) -> bool:
    """httpx_aiohttp maps every aiohttp connection error to ConnectTimeout; tell them apart."""
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientError) and not isinstance(cause, TimeoutError)


def make_transport(
    stack: HttpStack,
    *,
    base_url: str,
    headers: Mapping[str, str],
    timeout: float,
    concurrency: int,
) -> Transport:
    if stack == "aiohttp":
        return AiohttpTransport(
            base_url=base_url, headers=headers, timeout=timeout, concurrency=concurrency
        )
    inner: httpx.AsyncBaseTransport | None = None
    if stack == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport as HttpxAiohttpTransport

        inner = HttpxAiohttpTransport(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        )
    return HttpxTransport(
        base_url=base_url,
        headers=headers,
        timeout=timeout,
        concurrency=concurrency,
        transport=inner,
    )

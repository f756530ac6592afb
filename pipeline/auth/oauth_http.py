"""The OAuth endpoints' requests: one form-encoded POST at a time, over one long-lived client.

The signer (``pipeline.auth.oauth``) makes a few of these a day per credential (a refresh, a
mint), each inside the credentials file's lock, so one POST is one attempt: the signer
waits between attempts outside the lock, where another run may refresh meanwhile. Every
request is a coroutine on the run's event loop, over one ``httpx.AsyncClient`` kept for the
run: a stop (SIGTERM, Ctrl-C) cancels it like any other request, and no worker thread is
left for the loop's shutdown to wait on.

An answer is a dict (the 2xx body, v3's camelCase token fields under their v2 names too), or
``NoToken``: with a code in ``RETRYABLE`` for a 429, a 5xx or no answer (worth another
attempt, ``retry_after_s`` when the answer said), ``unauthorized`` with the API's message
for a refusal.
"""

from __future__ import annotations

from typing import Any

import httpx
import structlog

from pipeline.auth.signer import NoToken
from pipeline.core import constants
from pipeline.core.errors import one_line
from pipeline.core.outcomes import Code

log = structlog.get_logger("pipeline.auth.oauth")

FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
MAX_RETRY_AFTER_S = 30.0  # a longer Retry-After is cut: the rows' own retries take over
# How a refused refresh grant starts its message (a row's error_message): the advice after a
# run (``app.advice``) tells it from a 401 of the API by it.
REFRESH_REFUSED = "the refresh token was refused"


class OAuthHttp:
    """POSTs to the OAuth endpoints of ``base_url``, each bounded by ``timeout`` seconds."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None  # made on the loop, at first use

    async def post(
        self, path: str, form: dict[str, str], *, headers: dict[str, str], what: str
    ) -> dict[str, Any]:
        """One attempt; ``what`` names the installation in messages, never a token."""
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self._base_url, timeout=self._timeout)
        try:
            answer = await self._client.post(path, data=form, headers={**FORM, **headers})
        except httpx.HTTPError as exc:
            raise NoToken(
                Code.TIMEOUT if isinstance(exc, httpx.TimeoutException) else Code.NETWORK_ERROR,
                f"{what}: {one_line(str(exc)) or type(exc).__name__}",
                connect_failed=isinstance(exc, httpx.ConnectError),
            ) from exc
        if answer.status_code == 429 or answer.status_code >= 500:
            raise NoToken(
                Code.SERVER_ERROR,  # as for a create's 5xx: a bounded number of tries
                f"{what}: HTTP {answer.status_code}",
                http_status=answer.status_code,
                retry_after_s=_retry_after(answer),
            )
        body = _json(answer)
        if 200 <= answer.status_code < 300:
            return body
        message = str(
            body.get("message") or body.get("error_description") or body.get("error") or ""
        )
        if form.get("grant_type") == "refresh_token" and _invalid_grant(answer.status_code, body):
            message = (
                f"{REFRESH_REFUSED} (HTTP 400 invalid_grant: spent or revoked); reconnect the "
                "app in HighLevel and put the new refresh token in the --oauth-file"
            )
        log.warning(
            "oauth request refused", installation=what, http_status=answer.status_code,
            message=message,
        )  # fmt: skip
        raise NoToken(
            Code.UNAUTHORIZED,
            f"{what}: {message}"
            if message.startswith(REFRESH_REFUSED)
            else f"{what}: HTTP {answer.status_code} {message}".strip(),
            http_status=answer.status_code,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _invalid_grant(status: int, body: dict[str, Any]) -> bool:
    """A refresh refused for its token (OAuth's ``invalid_grant``: spent, superseded or
    revoked), in either wording: ``{"error": "invalid_grant"}`` or HighLevel's
    ``{"message": "Invalid grant: ..."}``."""
    words = f"{body.get('error', '')} {body.get('message', '')}".lower()
    return status == 400 and ("invalid_grant" in words or "invalid grant" in words)


def _retry_after(answer: httpx.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds (cut to ``MAX_RETRY_AFTER_S``), if any."""
    wait = answer.headers.get(constants.H_RETRY_AFTER, "")
    try:
        return min(max(float(wait), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None


def _json(answer: httpx.Response) -> dict[str, Any]:
    """The body as a dict, with v3's camelCase token fields under their v2 names too."""
    try:
        body = answer.json()
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    for v2, v3 in (
        ("access_token", "accessToken"),
        ("refresh_token", "refreshToken"),
        ("expires_in", "expiresIn"),
    ):
        if v2 not in body and v3 in body:
            body[v2] = body[v3]
    return body

"""What a signer is to the client: the ``Signer`` protocol, the headers it gives, and the two
ways it can fail to give them (``NoToken``, ``CredentialsBusy``).

The contract alone, apart from the signers (``signing.FixedTokens``, ``oauth.OAuthSigner``),
so that every signer and the client import it and none imports another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pipeline.core.outcomes import Code

Headers = Mapping[str, str]


class NoToken(Exception):
    """No token can be had for the location: ``code`` says why (``not_installed``), or, with
    a code in ``RETRYABLE``, not now (the OAuth endpoint's 5xx, 429 or dropped connection)."""

    def __init__(
        self,
        code: Code,
        message: str,
        http_status: int | None = None,
        *,
        retry_after_s: float | None = None,
        connect_failed: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status  # the refusing answer's status, when there was one
        self.retry_after_s = retry_after_s  # the answer's Retry-After, when it said one
        # No connection could be made at all: as for a create, the API may be out of reach.
        self.connect_failed = connect_failed


class CredentialsBusy(Exception):
    """Another run held the OAuth credentials file's lock past its bound while this one
    waited for a token: the run stops (``credentials_locked``). ``message`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Signer(Protocol):
    def key(self, location_id: str) -> int:
        """An identity of the token the location's requests carry (never the token)."""
        ...

    async def headers(self, location_id: str) -> Headers | None:
        """The location's ``Authorization`` header (None: the pool's default one). May
        refresh or mint a token first; raises ``NoToken`` when none can be had, and
        ``CredentialsBusy`` when another run kept the credentials locked too long."""
        ...

    async def renew(self, location_id: str, used: Headers | None) -> bool:
        """After a 401 to a request signed with ``used``: whether a fresher token is now
        ready to try once more."""
        ...

    async def aclose(self) -> None: ...

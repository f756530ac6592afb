"""Who signs each request: fixed tokens, or OAuth credentials that renew themselves.

The client asks a ``Signer`` for a location's ``Authorization`` header before each request,
and, after a 401, whether a fresher token can be had (``renew``). Fixed tokens (one, or one
per location) never renew: their 401 is final. OAuth access tokens live a day, so the OAuth
signer (``pipeline.auth.oauth``) refreshes ahead of expiry and once after a 401, since HighLevel's
401 does not tell an expired token from a bad one; only a 401 that survives a fresh token
reaches the guards and stops the token.

A location for which no token can be had at all (an agency's app not installed there)
raises ``NoToken``: its rows end ``skipped`` with the signer's code, and no create is sent.
A token that waits on another run's hold of the OAuth credentials file past its bound
raises ``CredentialsBusy``: that is the run's problem, not the location's, so the run stops
(exit 75, try again later) instead of failing rows as if a bug had struck.
"""

from __future__ import annotations

from pipeline.auth.signer import Headers, Signer
from pipeline.auth.tokens import Tokens


def signer_for(tokens: Tokens, *, base_url: str, api_version: str, timeout: float) -> Signer:
    """The run's signer: OAuth credentials when the tokens say so, else the fixed tokens."""
    if tokens.oauth is None:
        return FixedTokens(tokens)
    from pipeline.auth.oauth import OAuthSigner

    return OAuthSigner(tokens.oauth, base_url=base_url, api_version=api_version, timeout=timeout)


class FixedTokens:
    """Tokens that are what they are: one in the pool's default headers, or one per
    location on each request."""

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens
        self._auth: dict[str, dict[str, str]] = {
            location: {"Authorization": f"Bearer {token}"}
            for location, token in tokens.by_location.items()
        }

    @property
    def default_header(self) -> str | None:
        """The one token's header, for the pool's defaults (None with a token per location)."""
        if self._tokens.per_location or not self._tokens.default:
            return None
        return f"Bearer {self._tokens.default}"

    def key(self, location_id: str) -> int:
        return self._tokens.key(location_id)

    async def headers(self, location_id: str) -> Headers | None:
        return self._auth.get(location_id)

    async def renew(self, location_id: str, used: Headers | None) -> bool:
        return False

    async def aclose(self) -> None:
        return None

"""Facts about HighLevel's API that both the client and the sandbox server need.

This is the only module the sandbox shares with the client side: names and numbers from the
API reference, no logic. Everything that *behaves* lives on one side or the other, so that
the sandbox tests the client rather than agreeing with it.
"""

from __future__ import annotations

from typing import Final

DEFAULT_BASE_URL: Final = "https://services.leadconnectorhq.com"
DEFAULT_API_VERSION: Final = "2021-07-28"

CREATE_CONVERSATION_PATH: Final = "/conversations/"
SEARCH_CONVERSATIONS_PATH: Final = "/conversations/search"

# HighLevel's published V2 limits, per location ("per app per resource").
DEFAULT_RATE_MAX: Final = 100
DEFAULT_RATE_INTERVAL_S: Final = 10.0
DEFAULT_DAILY_LIMIT: Final = 200_000

# Rate-limit headers carried by every API response.
H_LIMIT_DAILY: Final = "X-RateLimit-Limit-Daily"
H_DAILY_REMAINING: Final = "X-RateLimit-Daily-Remaining"
H_INTERVAL_MS: Final = "X-RateLimit-Interval-Milliseconds"
H_MAX: Final = "X-RateLimit-Max"
H_REMAINING: Final = "X-RateLimit-Remaining"
H_RETRY_AFTER: Final = "Retry-After"
H_VERSION: Final = "Version"

# The 400 answer for a contact that already has a conversation reads
# "Conversation with the contact id:<contactId> already exists!".
EXISTS_MESSAGE_PREFIX: Final = "Conversation with the contact id:"
EXISTS_MESSAGE_SUFFIX: Final = " already exists!"

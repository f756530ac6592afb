"""Facts about HighLevel's API that both the client and the sandbox server need.

This is the only module the sandbox shares with the client side: names and numbers from the
API reference, no logic. Everything that *behaves* lives on one side or the other, so that
the sandbox tests the client rather than agreeing with it.
"""

from __future__ import annotations

from typing import Final

DEFAULT_BASE_URL: Final = "https://services.leadconnectorhq.com"
DEFAULT_API_VERSION: Final = "2021-07-28"
# The values of the ``Version`` header HighLevel accepts (its versioning page, 2026). Create
# Conversation has the same request and answer under each.
API_VERSIONS: Final = ("v3", "2023-02-21", "2021-07-28", "2021-04-15")

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

# The 400 answer for a contact that already has a conversation starts with
# "Conversation with the contact id:<contactId> already exists!" and, as the live API words
# it, goes on with a trace id: "... already exists! cbf699cb-28e6-42d8-b49b-f6731af2560b".
EXISTS_MESSAGE_PREFIX: Final = "Conversation with the contact id:"
EXISTS_MESSAGE_MARK: Final = " already exists!"

# Every JSON answer may carry this key; HighLevel's support asks for its value.
TRACE_ID_KEY: Final = "traceId"

# OAuth scopes: creating needs the first, the search for an existing conversation the second.
SCOPE_WRITE: Final = "conversations.write"
SCOPE_READ: Final = "conversations.readonly"

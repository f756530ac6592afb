"""What the conversation endpoints read and write: the create body, the search query's
limit, and the answers' JSON, shaped as HighLevel's API reference and live answers are.

Kept apart from the handlers (``app.py``), which decide *whether* and *when* to answer;
this module says only *what* an answer holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipeline.core.constants import EXISTS_MESSAGE_MARK, EXISTS_MESSAGE_PREFIX
from pipeline.sandbox.gates import field_problems
from pipeline.sandbox.state import Conversation

SEARCH_DEFAULT_LIMIT = 20
SEARCH_MAX_LIMIT = 100


def exists_message(contact_id: str, trace_id: str) -> str:
    """HighLevel's live wording for a duplicate create: the documented text, then the trace id.

    ``Conversation with the contact id:rTDJGD7SjqDamyzrk5UW already exists! cbf699cb-…``
    """
    return f"{EXISTS_MESSAGE_PREFIX}{contact_id}{EXISTS_MESSAGE_MARK} {trace_id}"


def parse_create_body(raw: bytes) -> tuple[str | None, str | None, list[str]]:
    """``(locationId, contactId, problems)``; ids are None unless usable strings."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {}
    location, contact = data.get("locationId"), data.get("contactId")
    problems = field_problems("locationId", location) + field_problems("contactId", contact)
    return (
        location if isinstance(location, str) and location.strip() else None,
        contact if isinstance(contact, str) and contact.strip() else None,
        problems,
    )


def search_limit(query: Mapping[str, str]) -> int:
    """The search's ``limit``: the default when absent or not a number, clamped to 1..100."""
    try:
        limit = int(query.get("limit", SEARCH_DEFAULT_LIMIT))
    except ValueError:
        limit = SEARCH_DEFAULT_LIMIT
    return min(max(limit, 1), SEARCH_MAX_LIMIT)


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    """The create answer's ``conversation`` object."""
    return {
        "id": conversation.id,
        "dateUpdated": conversation.date_updated,
        "dateAdded": conversation.date_added,
        "deleted": False,
        "contactId": conversation.contact_id,
        "locationId": conversation.location_id,
        "lastMessageDate": None,
        "assignedTo": None,
    }


def search_item_json(conversation: Conversation) -> dict[str, Any]:
    """One search hit; the fields a migration tool can use plus a few the spec requires."""
    return {
        "id": conversation.id,
        "contactId": conversation.contact_id,
        "locationId": conversation.location_id,
        "dateAdded": conversation.date_added,
        "dateUpdated": conversation.date_updated,
        "deleted": False,
        "assignedTo": None,
        "lastMessageBody": "",
        "type": "TYPE_PHONE",
        "unreadCount": 0,
    }

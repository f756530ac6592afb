"""``/_sandbox/*``: inspect and steer a sandbox running in another process or thread.

No token needed: the sandbox binds to loopback, and tests and benchmarks must be able to
reset it or flip a fault on without knowing how it was configured. These requests are not
part of the API, so they are neither logged, rate limited nor delayed.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from pipeline.sandbox.app import Sandbox
from pipeline.sandbox.bodies import dumps

ADMIN_PREFIX = "/_sandbox"


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=dumps(payload), content_type="application/json")


def _bad_request(message: str) -> web.Response:
    return _json({"statusCode": 400, "message": message, "error": "Bad Request"}, 400)


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()
    return json.loads(raw) if raw.strip() else {}


class AdminHandlers:
    """Handlers bound to one sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    async def health(self, request: web.Request) -> web.Response:
        """Liveness, for a parent process waiting on startup."""
        return _json({"ok": True})

    async def state(self, request: web.Request) -> web.Response:
        """Full snapshot. ``?since=N`` returns request records from sequence number N on;
        ``?requests=0`` leaves the log out (it can be megabytes after a benchmark). ``oauth``
        is the OAuth state (token labels, never tokens)."""
        sandbox = self._sandbox
        state = sandbox.state
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return _bad_request("since must be an integer")
        with_requests = request.query.get("requests", "1") not in {"0", "false", "no"}
        records = state.requests_since(since) if with_requests else []
        return _json(
            {
                "conversations": [
                    {"locationId": c.location_id, "contactId": c.contact_id, "id": c.id}
                    for c in state.conversations.values()
                ],
                "requests": [r.to_json() for r in records],
                "requests_total": state.requests_total,
                "oauth": sandbox.oauth.snapshot().to_json(),
                "config": sandbox.config.to_dict(),
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        """Counts only; cheap enough to poll."""
        return _json(self._sandbox.state.stats())

    async def get_config(self, request: web.Request) -> web.Response:
        """The current config."""
        return _json(self._sandbox.config.to_dict())

    async def set_config(self, request: web.Request) -> web.Response:
        """Apply a partial config dict; unknown keys or bad values answer 400, changing nothing."""
        try:
            fields = await _read_json(request)
        except ValueError:
            return _bad_request("body must be a JSON object")
        if not isinstance(fields, dict):
            return _bad_request("body must be a JSON object")
        try:
            config = self._sandbox.update_config(**fields)
        except (ValueError, TypeError) as exc:
            return _bad_request(str(exc))
        return _json(config.to_dict())

    async def reset(self, request: web.Request) -> web.Response:
        """Clear conversations, the request log and rate windows."""
        self._sandbox.reset()
        return _json({"ok": True})

    async def seed(self, request: web.Request) -> web.Response:
        """Create pre-existing conversations: ``[{"locationId", "contactId"}, ...]``."""
        try:
            items = await _read_json(request)
        except ValueError:
            return _bad_request("body must be a JSON list")
        if not isinstance(items, list) or not all(
            isinstance(i, dict)
            and isinstance(i.get("locationId"), str)
            and isinstance(i.get("contactId"), str)
            and i["locationId"]
            and i["contactId"]
            for i in items
        ):
            return _bad_request("body must be a list of {locationId, contactId} objects")
        created = self._sandbox.seed_conversations((i["locationId"], i["contactId"]) for i in items)
        return _json(
            [{"locationId": c.location_id, "contactId": c.contact_id, "id": c.id} for c in created]
        )


def add_admin_routes(app: web.Application, sandbox: Sandbox) -> None:
    """Register the ``/_sandbox/*`` routes."""
    handlers = AdminHandlers(sandbox)
    router = app.router
    router.add_get(f"{ADMIN_PREFIX}/health", handlers.health)
    router.add_get(f"{ADMIN_PREFIX}/state", handlers.state)
    router.add_get(f"{ADMIN_PREFIX}/stats", handlers.stats)
    router.add_get(f"{ADMIN_PREFIX}/config", handlers.get_config)
    router.add_post(f"{ADMIN_PREFIX}/config", handlers.set_config)
    router.add_post(f"{ADMIN_PREFIX}/reset", handlers.reset)
    router.add_post(f"{ADMIN_PREFIX}/conversations", handlers.seed)

"""A local, real-HTTP stand-in for HighLevel's Conversations API, for demos, tests and benchmarks.

It also serves the OAuth endpoints of a Marketplace app (``oauth_api``): rotating
single-use refresh tokens, access tokens that expire, agency tokens that mint location
tokens.

It enforces the rules the client must cope with (auth, ``Version``, token scopes, validation,
per-location burst and daily limits, "already exists" worded as the live API words it, search
lag), puts a fresh ``traceId`` on every JSON answer, injects the failures production
throws at it (see ``faults``), and delays requests as a real network does, by a latency that
may vary from one request to the next (see ``latency``). Its request log names each
request's token by ``token_label`` (a digest), never by the token itself. It shares only
``pipeline.core.constants`` with the client, so it checks the client against the API reference
rather than against itself.
"""

from pipeline.sandbox.app import Sandbox
from pipeline.sandbox.config import DEFAULT_TOKEN, SandboxConfig, parse_rate
from pipeline.sandbox.faults import Fault
from pipeline.sandbox.oauth import OAuthSnapshot, RefreshUse
from pipeline.sandbox.server import (
    RunningSandbox,
    SandboxStateView,
    SandboxThread,
    build_app,
    serve,
    start_sandbox,
)
from pipeline.sandbox.state import Conversation, RequestRecord, SandboxState, token_label

__all__ = [
    "DEFAULT_TOKEN",
    "Conversation",
    "Fault",
    "OAuthSnapshot",
    "RefreshUse",
    "RequestRecord",
    "RunningSandbox",
    "Sandbox",
    "SandboxConfig",
    "SandboxState",
    "SandboxStateView",
    "SandboxThread",
    "build_app",
    "parse_rate",
    "serve",
    "start_sandbox",
    "token_label",
]

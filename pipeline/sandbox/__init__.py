"""A local, real-HTTP stand-in for HighLevel's Conversations API, for demos, tests and benchmarks.

It enforces the rules the client must cope with (auth, ``Version``, validation, per-location
burst and daily limits, "already exists", search lag) and injects the failures production
throws at it (see ``faults``). It shares only ``pipeline.constants`` with the client, so
it checks the client against the API reference rather than against itself.
"""

from pipeline.sandbox.app import Sandbox
from pipeline.sandbox.config import DEFAULT_TOKEN, SandboxConfig, parse_rate
from pipeline.sandbox.faults import Fault
from pipeline.sandbox.server import (
    RunningSandbox,
    SandboxStateView,
    SandboxThread,
    build_app,
    serve,
    start_sandbox,
)
from pipeline.sandbox.state import Conversation, RequestRecord, SandboxState

__all__ = [
    "DEFAULT_TOKEN",
    "Conversation",
    "Fault",
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
]

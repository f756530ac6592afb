"""Three ways to run a sandbox: in the caller's loop, in a background thread, or blocking.

* ``start_sandbox`` for async code that shares the loop (cheapest, direct state access).
* ``SandboxThread`` for synchronous tests, and for clients that run their own loop:
  the sandbox gets a separate loop so a client blocking or stalling its loop cannot
  distort the server's timing (and vice versa).
* ``serve`` for a separate process; prints one parseable line once bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from pipeline.core.constants import CREATE_CONVERSATION_PATH, SEARCH_CONVERSATIONS_PATH
from pipeline.sandbox.admin import add_admin_routes
from pipeline.sandbox.app import Sandbox
from pipeline.sandbox.config import DEFAULT_TOKEN, SandboxConfig
from pipeline.sandbox.oauth import OAuthSnapshot, RefreshUse
from pipeline.sandbox.oauth_api import add_oauth_routes
from pipeline.sandbox.state import RequestRecord, SandboxState

T = TypeVar("T")

DEFAULT_HOST = "127.0.0.1"
# How long close() lets in-flight answers finish. Hangs are released first, so this only
# bounds ordinary latency.
DEFAULT_SHUTDOWN_TIMEOUT_S = 2.0
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def build_app(sandbox: Sandbox) -> web.Application:
    """API routes (conversations, OAuth), admin routes, then a JSON 404 for everything else."""
    app = web.Application()
    for path in sorted({CREATE_CONVERSATION_PATH, CREATE_CONVERSATION_PATH.rstrip("/")}):
        app.router.add_post(path, sandbox.create_conversation)
    for path in sorted({SEARCH_CONVERSATIONS_PATH, SEARCH_CONVERSATIONS_PATH + "/"}):
        app.router.add_get(path, sandbox.search_conversations, allow_head=False)
    add_oauth_routes(app, sandbox)
    add_admin_routes(app, sandbox)
    app.router.add_route("*", "/{tail:.*}", sandbox.not_found)
    return app


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class RunningSandbox:
    """A sandbox serving on the current event loop."""

    def __init__(self, sandbox: Sandbox, runner: web.AppRunner, host: str, port: int) -> None:
        self.sandbox = sandbox
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def base_url(self) -> str:
        """``http://host:port``, to hand to a client as its API base URL."""
        return _url(self.host, self.port)

    @property
    def state(self) -> SandboxState:
        """Live state; read it from the sandbox's own loop only."""
        return self.sandbox.state

    @property
    def config(self) -> SandboxConfig:
        """The current config."""
        return self.sandbox.config

    def update_config(self, **fields: Any) -> SandboxConfig:
        """Change config fields at runtime (ValueError on unknown ones)."""
        return self.sandbox.update_config(**fields)

    def reset(self) -> None:
        """Clear conversations, the request log and rate windows."""
        self.sandbox.reset()

    async def close(self) -> None:
        """Stop listening, release hanging requests and wait briefly for in-flight answers."""
        self.sandbox.release_hangs()
        await self._runner.cleanup()


async def start_sandbox(
    config: SandboxConfig | None = None,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
) -> RunningSandbox:
    """Start serving on the running loop; ``port=0`` picks a free port."""
    sandbox = Sandbox(config)
    runner = web.AppRunner(
        build_app(sandbox),
        access_log=None,  # a log line per request would cost more than the request
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return RunningSandbox(sandbox, runner, host, bound_port)


class SandboxStateView:
    """Thread-safe snapshots of a ``SandboxThread``'s state (copied on the server loop)."""

    def __init__(self, owner: SandboxThread) -> None:
        self._owner = owner

    def conversations(self) -> dict[tuple[str, str], str]:
        """``{(locationId, contactId): conversationId}``."""
        return self._owner.call(lambda s: s.state.conversation_map())

    def requests(self, since: int = 0) -> list[RequestRecord]:
        """Request records, oldest first, from sequence number ``since``."""
        return self._owner.call(lambda s: s.state.requests_since(since))

    def stats(self) -> dict[str, Any]:
        """Counts by status and fault, conversations held."""
        return self._owner.call(lambda s: s.state.stats())

    def oauth(self) -> OAuthSnapshot:
        """OAuth state: refresh-token uses, each grant's valid refresh token (by label), and
        access tokens minted per location and per company."""
        return self._owner.call(lambda s: s.oauth.snapshot())

    def refresh_uses(self) -> list[RefreshUse]:
        """Every presentation of a refresh token to /oauth/token, oldest first (labels only):
        "no refresh token was spent twice" is ``accepted`` at most once per ``token``."""
        return self._owner.call(lambda s: list(s.oauth.uses))

    def refresh_token_valid(self, refresh_token: str) -> bool:
        """Whether /oauth/token would accept this refresh token now (e.g. the one a client
        has stored)."""
        return self._owner.call(lambda s: s.oauth.refresh_token_valid(refresh_token))


class SandboxThread:
    """A sandbox on its own event loop in a daemon thread; use as a context manager.

    Everything that touches sandbox state is marshalled onto that loop, so callers on any
    thread (or any other loop) get consistent snapshots without locks on the hot path.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    ) -> None:
        self._config = config
        self._host = host
        self._requested_port = port
        self._shutdown_timeout = shutdown_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: RunningSandbox | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.state = SandboxStateView(self)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the thread and wait until the server is bound (re-raising bind errors)."""
        if self._thread is not None:
            raise RuntimeError("sandbox thread already started")
        self._thread = threading.Thread(target=self._run, name="sandbox", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                self._running = loop.run_until_complete(
                    start_sandbox(
                        self._config,
                        self._host,
                        self._requested_port,
                        shutdown_timeout=self._shutdown_timeout,
                    )
                )
            except BaseException as exc:
                self._error = exc
                return
            self._loop = loop
            self._ready.set()
            loop.run_forever()
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        """Close the server and join the thread. Idempotent."""
        loop, running, thread = self._loop, self._running, self._thread
        if loop is None or running is None or thread is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(running.close(), loop)
        with contextlib.suppress(Exception):
            future.result(timeout=self._shutdown_timeout + 5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10.0)
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- access -----------------------------------------------------------------------------

    def _require(self) -> tuple[asyncio.AbstractEventLoop, RunningSandbox]:
        if self._loop is None or self._running is None:
            raise RuntimeError("sandbox thread is not running")
        return self._loop, self._running

    def call(self, fn: Callable[[Sandbox], T], timeout: float = 10.0) -> T:
        """Run ``fn(sandbox)`` on the server loop and return its result."""
        loop, running = self._require()

        async def on_loop() -> T:
            return fn(running.sandbox)

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout)

    @property
    def port(self) -> int:
        """The bound port."""
        return self._require()[1].port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self._require()[1].base_url

    @property
    def config(self) -> SandboxConfig:
        """The current config (an immutable value, safe to read from any thread)."""
        return self._require()[1].config

    def update_config(self, **fields: Any) -> SandboxConfig:
        """Change config fields at runtime (ValueError on unknown ones)."""
        return self.call(lambda s: s.update_config(**fields))

    def reset(self) -> None:
        """Clear conversations, the request log and rate windows."""
        self.call(lambda s: s.reset())

    def seed_conversations(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Pre-existing conversations; returns their ids."""
        items = list(pairs)
        created = self.call(lambda s: s.seed_conversations(items))
        return {(c.location_id, c.contact_id): c.id for c in created}


async def _serve(config: SandboxConfig | None, host: str, port: int) -> None:
    running = await start_sandbox(config, host, port)
    try:
        token = (config or SandboxConfig()).tokens[:1] or [DEFAULT_TOKEN]
        print(f"sandbox listening on {running.base_url}", flush=True)
        # Ready to paste into another shell: the run then needs no --base-url or token.
        print(f"export GHL_BASE_URL={running.base_url} GHL_TOKEN={token[0]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Not available on Windows or off the main thread; Ctrl-C still works there.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
        try:
            await stop.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
    finally:
        await running.close()


def serve(config: SandboxConfig | None = None, host: str = DEFAULT_HOST, port: int = 0) -> None:
    """Serve until SIGINT/SIGTERM. Prints ``sandbox listening on http://HOST:PORT`` once
    bound, then the ``export GHL_BASE_URL=... GHL_TOKEN=...`` line a client shell needs."""
    if host not in _LOOPBACK:
        print(
            f"warning: sandbox bound to non-loopback address {host}; it accepts demo tokens",
            file=sys.stderr,
            flush=True,
        )
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=_loop_factory()) as runner,
    ):
        runner.run(_serve(config, host, port))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed: the sandbox should outrun the client it measures. (The
    client's ``session.run_async`` makes the same choice; the sandbox keeps its own, as it
    shares only ``pipeline.core.constants`` with the client.)"""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return None
    return uvloop.new_event_loop

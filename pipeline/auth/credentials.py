"""The OAuth credentials file (``--oauth-file``): a store the tool owns and rewrites.

A HighLevel Marketplace app holds a refresh token per installation (a sub-account, user type
``Location``, or an agency, ``Company``). An access token lives a day; a refresh token is
single-use: each refresh answers with a new access token AND a new refresh token, and the
old refresh token stops working. So the file is not configuration the tool reads once; it is
state the tool rewrites after every refresh, and losing a rewrite loses the installation.

The file (TOML if its name ends ``.toml``, else JSON; rewritten in the same format, a TOML
file keeping its comments and key order)::

    client_id = "65f1a2b3c4d5e6f7a8b9c0d1-lq0abcde"
    app_id = "65f1a2b3c4d5e6f7a8b9c0d1"
    client_secret_env = "GHL_CLIENT_SECRET"   # or client_secret_file = "/run/secrets/x"

    [[credentials]]
    user_type = "Location"
    location_id = "tDtDnQdgm2LXpyiqYvZ6"
    refresh_token = "eyJ..."
    access_token = "eyJ..."                   # written by the tool, with expires_at
    expires_at = "2026-11-29T13:00:00Z"

    [[minted]]                                # location tokens minted from the agency's
    location_id = "ve9EPM428kjkvShlRW1KT"
    access_token = "eyJ..."
    expires_at = "2026-11-29T13:00:00Z"

The client secret is never in it (it names an environment variable or a file), and the file
is refused when group or others can read or write it, as ssh refuses a private key: it
holds refresh tokens, which are the installation itself.

The order of a refresh (the caller does the HTTP; this module keeps the file)::

    async with store.atransaction() as tx:   # exclusive lock, then the file read afresh
        credential = tx.state.for_location(location_id)
        if not credential.fresh(margin, now):  # another run may have refreshed already
            answer = await post_refresh(credential.refresh_token)  # the caller's HTTP
            tx.save(tx.state.with_refreshed(credential, ...))     # on disk, fsynced...
        token = tx.state.for_location(location_id).access_token  # ...before it is used

Saving before using is what makes a crash harmless: once the answer is on disk, a crash
anywhere later leaves the new refresh token for the next run. The lock makes two runs on one
file take turns, and the read inside it means the second run sees the first run's new
token instead of spending the old one (which HighLevel would refuse, or worse, honour while
the first run's token is lost).

One window no file can close: the server rotated the token but its answer never arrived
(the connection dropped, the process was killed mid-request). The old refresh token is then
spent and the new one is known only to HighLevel. The way back is the app's reconnect (or
installing the app again on that sub-account or agency), then putting the new refresh token
in the file by hand. The window is one request long, once a day per credential.

Crashes: ``save`` writes a temporary file beside the real one (0600 from its creation),
fsyncs it, renames it over the file and fsyncs the folder, so a crash at any point leaves
the old file or the new one, each whole. A temporary file left by a ``kill -9`` is ignored
when reading and removed by the next save. The lock is ``flock`` on a separate hidden file
beside it (``.NAME.lock``): a lock on the credentials file itself would be lost as the file
is replaced by a rename. It is removed as ``pipeline.state.locking`` removes its lock, safely.

The lock is taken two ways: ``atransaction`` (the run's, on its event loop) polls it with
``asyncio.sleep``, so that a wait is cancelled like any request and no thread outlives a
stopped run; ``transaction`` (scripts, tests) blocks its thread. Either gives up after
``lock_timeout`` seconds with ``CredentialsLocked``: a refresh holds the lock for one request,
so a minute means the other run is stuck, not busy.

The module is split in three: the values (``pipeline.auth.credentials_model``), the file's text
(``pipeline.auth.credentials_file``) and this one, the store; all are importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import secrets
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

from pipeline.auth.credentials_file import parse, render
from pipeline.auth.credentials_model import (
    OPTION,
    App,
    Credential,
    CredentialsState,
    Format,
    Minted,
    UserType,
    expiry,
    os_reason,
)
from pipeline.core import logs
from pipeline.core.errors import EXIT_LOCKED, UsageError
from pipeline.state.locking import names_open_file

__all__ = [
    "LOCK_TIMEOUT",
    "OPTION",
    "App",
    "Credential",
    "CredentialsLocked",
    "CredentialsState",
    "CredentialsStore",
    "Format",
    "Minted",
    "Transaction",
    "UserType",
    "expiry",
    "parse",
    "render",
]

LOCK_TIMEOUT = 60.0  # seconds: a refresh is one request; a minute means something is stuck
_OPEN_TO_OTHERS = 0o066  # group or others may read or write
_FIRST_PAUSE_S = 0.002  # between tries of a held lock, doubling up to _LAST_PAUSE_S
_LAST_PAUSE_S = 0.02


class CredentialsLocked(UsageError):
    """Another run held the credentials file's lock for the whole wait. Exit 75 (try again
    later), as for a locked output."""

    exit_code = EXIT_LOCKED


def _me() -> object:
    """Who holds a transaction: the asyncio task running, else the thread."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop runs in this thread
        task = None
    return task if task is not None else threading.get_ident()


class CredentialsStore:
    """The credentials file on disk. Read it with ``read`` (a snapshot, for checks at
    start-up); change it only inside ``atransaction`` or ``transaction``."""

    def __init__(
        self, path: Path, *, lock_timeout: float = LOCK_TIMEOUT, option: str = OPTION
    ) -> None:
        self.path = Path(path)
        # Through a symbolic link, the file replaced is the one it points to, not the link.
        self._real = Path(os.path.realpath(self.path))
        self.format: Format = "toml" if self.path.name.lower().endswith(".toml") else "json"
        self.lock_path = self._real.with_name(f".{self._real.name}.lock")
        self.lock_timeout = lock_timeout
        self.where = f"{option} {self.path}"
        self._in_process = threading.Lock()  # flock does not order threads of one process
        self._turns: asyncio.Lock | None = None  # the tasks of one event loop, in order
        self._gave_up: tuple[float, CredentialsLocked] | None = None  # when a wait ran out
        self._owner: object | None = None  # the thread or task holding the transaction
        self._on_disk: str | None = None  # the file's text, while a transaction holds it

    def read(self) -> CredentialsState:
        """The file as it is now: refused unless only its owner can read and write it."""
        try:
            fd = os.open(self._real, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise UsageError(f"{self.where}: cannot be read ({os_reason(exc)})") from exc
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & _OPEN_TO_OTHERS:
                raise UsageError(
                    f"{self.where}: group or others can read or write it (mode {mode:04o}); "
                    f"it holds refresh tokens, so make it private: chmod 600 {self.path}"
                )
            with os.fdopen(os.dup(fd), "rb") as stream:
                raw = stream.read()
        except OSError as exc:
            raise UsageError(f"{self.where}: cannot be read ({os_reason(exc)})") from exc
        finally:
            os.close(fd)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{self.where}: not UTF-8 text") from exc
        return parse(text, self.format, self.where)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Hold the file's lock for the ``with`` block and yield its state read inside the
        lock; whatever the block saves is on disk before it goes on. Blocks this thread while
        another run (or thread) holds it, up to ``lock_timeout`` seconds, then
        ``CredentialsLocked``. An event loop uses ``atransaction`` instead."""
        self._refuse_reentry()
        deadline = time.monotonic() + self.lock_timeout
        if not self._in_process.acquire(timeout=max(self.lock_timeout, 0.0)):
            raise self._locked("another thread")
        try:
            pause = _FIRST_PAUSE_S
            while (fd := self._try_lock()) is None:
                time.sleep(self._pause(pause, deadline))
                pause = min(2 * pause, _LAST_PAUSE_S)
            with self._held(fd) as tx:
                yield tx
        finally:
            self._in_process.release()

    @contextlib.asynccontextmanager
    async def atransaction(self) -> AsyncIterator[Transaction]:
        """``transaction`` for an event loop: the lock is polled with ``asyncio.sleep``, so a
        wait is cancelled like any request. The tasks of this loop take their turns in order
        and without a bound (each holds the lock for one request at most); the wait for
        another run (or thread) is bounded by ``lock_timeout``, and the tasks that queued
        behind a wait that ran out share its ``CredentialsLocked`` rather than each waiting
        as long again."""
        self._refuse_reentry()
        if self._turns is None:
            self._turns = asyncio.Lock()
        asked = time.monotonic()
        async with self._turns:
            if self._gave_up is not None and self._gave_up[0] >= asked:
                # Queued behind a wait that ran out: the same other run holds the lock.
                raise CredentialsLocked(str(self._gave_up[1]))
            try:
                fd = await self._lock_polling()
            except CredentialsLocked as locked:
                self._gave_up = (time.monotonic(), locked)
                raise
            try:
                with self._held(fd) as tx:
                    yield tx
            finally:
                self._in_process.release()

    async def _lock_polling(self) -> int:
        """The in-process lock, then the file's, polled until ``lock_timeout``; the file's
        locked descriptor (the in-process lock is the caller's to release)."""
        deadline = time.monotonic() + self.lock_timeout
        pause = _FIRST_PAUSE_S
        while not self._in_process.acquire(blocking=False):
            await asyncio.sleep(self._pause(pause, deadline, "another thread"))
            pause = min(2 * pause, _LAST_PAUSE_S)
        try:
            while (fd := self._try_lock()) is None:
                await asyncio.sleep(self._pause(pause, deadline))
                pause = min(2 * pause, _LAST_PAUSE_S)
        except BaseException:
            self._in_process.release()
            raise
        return fd

    def save(self, state: CredentialsState) -> CredentialsState:
        """Replace the file with ``state``, atomically and durably; only inside this store's
        transaction, by its holder (a state saved outside it could undo another run's
        refresh). Returns the state as saved (its source the new text).

        ``state`` must derive (by the ``with_*`` methods) from the state the transaction
        holds now: one derived from an earlier read, or from before the last save, would
        put back refresh tokens already spent, so it is refused."""
        if self._owner is None or self._owner != _me():
            raise RuntimeError("save the credentials inside store.transaction()")
        if state.source != self._on_disk:
            raise RuntimeError(
                "this state was not derived from the transaction's current state; "
                "derive it from tx.state"
            )
        for credential in state.credentials:  # already registered when made; cheap to repeat
            logs.register_secret(credential.refresh_token)
            logs.register_secret(credential.access_token or "")
        for minted in state.minted:
            logs.register_secret(minted.access_token)
        text = render(state, self.format)
        self._remove_leftovers()
        folder = self._real.parent
        temporary = folder / f".{self._real.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # the umask may have taken the owner's bits too
                data = memoryview(text.encode("utf-8"))
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            temporary.replace(self._real)  # os.replace: atomic on one file system
        except BaseException as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            if isinstance(exc, OSError):
                raise UsageError(f"{self.where}: cannot be rewritten ({os_reason(exc)})") from exc
            raise
        self._on_disk = text
        _fsync_folder(folder)
        return replace(state, source=text)

    # -- the lock -----------------------------------------------------------------------

    def _refuse_reentry(self) -> None:
        """A second transaction by the holder of one would wait for itself forever."""
        if self._owner is not None and self._owner == _me():
            raise RuntimeError("a credentials transaction is already open in this thread")

    @contextlib.contextmanager
    def _held(self, fd: int) -> Iterator[Transaction]:
        """The transaction on a locked descriptor ``fd``, which it closes (releasing it)."""
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._owner = _me()
            tx = Transaction(self, self.read())
            self._on_disk = tx.state.source
            try:
                yield tx
            finally:
                tx._open = False
                self._owner = self._on_disk = None
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()  # while still holding it: see pipeline.state.locking
            os.close(fd)  # closing releases the lock

    def _try_lock(self) -> int | None:
        """A descriptor of the lock file, locked, that the lock path still names; None
        while another holds it. Never waits."""
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise UsageError(
                    f"{self.where}: cannot create its lock file {self.lock_path} "
                    f"({os_reason(exc)}); the tool rewrites this file, so its folder must be "
                    "writable"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            if names_open_file(self.lock_path, fd):
                return fd
            os.close(fd)  # its holder removed it as it finished: lock the path anew

    def _pause(self, pause: float, deadline: float, holder: str | None = None) -> float:
        """How long to wait before the next try; ``CredentialsLocked`` past the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._locked(holder or f"pid {self._holder() or 'unknown'}")
        return min(pause, left)

    def _holder(self) -> str:
        """The pid the lock's holder wrote in it, for the message."""
        with contextlib.suppress(OSError):
            return self.lock_path.read_bytes()[:32].decode(errors="replace").strip()
        return ""

    def _locked(self, holder: str) -> CredentialsLocked:
        return CredentialsLocked(
            f"{self.where}: another run ({holder}) held its lock for "
            f"{self.lock_timeout:g} s; try again later"
        )

    def _remove_leftovers(self) -> None:
        """Remove temporary files a killed save left: under the lock, no save is live."""
        for leftover in self._real.parent.glob(f".{self._real.name}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()


class Transaction:
    """One locked read-modify-write of the file. ``state`` is what the file held when the
    lock was taken and, after each ``save``, what it holds now."""

    def __init__(self, store: CredentialsStore, state: CredentialsState) -> None:
        self.store = store
        self.state = state
        self._open = True

    def save(self, state: CredentialsState) -> None:
        """Write ``state`` to the file now (fsynced when this returns). Synchronous even in
        ``atransaction``: a save that a cancellation could cut short would release the lock
        with the new refresh token not yet on disk."""
        if not self._open:
            raise RuntimeError("this credentials transaction has ended")
        self.state = self.store.save(state)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; a file system that cannot sync a folder is let be."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)

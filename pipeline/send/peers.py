"""Our other runs on this machine that send to the same locations, known without asking the API.

A location's budget is the location's, whoever spends it. A run learns of another client
from the rate headers (``limiter.LocationLimiter``), but two of *our* runs can do better,
and need to in two places the headers cannot reach:

- Two runs that start at the same moment (two cron lines at one minute) each read a full
  window in their first answer, and each bursting into all of it is twice the window.
- A run that holds a location's whole window at every turn never sees the other run's
  requests (the API does not count a 429), so it never learns to share, and the other run
  draws a 429 at every try.

So each run that sends leaves a *lease* in a folder per user: a file listing a short hash
of each (API, location) it still has rows for, locked (``flock``) for as long as the run
lives. While ``n`` live leases list a location, each of those runs keeps to ``1/n`` of its
announced limit and of its daily quota (``LocationLimiter.observe(sharers=n)``): the shares
fit, so no run of ours draws a 429 from another, and none needs to probe for what is left.
The sender looks at the folder every ``REFRESH_S`` and applies the shares at once, and a
run that finds a location already leased waits ``JOIN_WAIT_S`` before its first request
there, so a burst the others made before they knew of it has left the window when its own
budget comes free. That makes the bound on 429s a property of the rules, not of timing:
at most the newcomer's first request, if it meets a window the others filled.
A location nobody else lists bursts into its whole window at once, so its first request
alone is the only round trip spent to learn the budget. A run that has started every row
of a location takes it off its lease (``done``), and the others take its share back.

Why a lock and not a pid: the kernel drops the lock when the process dies, ``kill -9``
included, and a lock cannot be mistaken for a reused pid. A lease whose lock can be taken is
a dead run's, and is removed by whoever finds it. The hashes say nothing of the token, and
only which locations when one already knows their ids.

The leases are this machine's: runs on other machines (an array job's tasks own disjoint
locations anyway) learn of each other from the headers alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:  # the sender's view of a location; imported only for its type
    from pipeline.send.rows import Location, SharedLocations

log = structlog.get_logger("pipeline.send.peers")

_DIGEST = 8  # bytes of a location's hash
_SUFFIX = ".lease"
# How old the view of the folder may be: the sender reads it this often and applies the
# shares at once (``follow``), so a peer that starts later is seen within it.
REFRESH_S = 0.25
# A run that finds a location already leased waits this long after registering before its
# first request there: by then every other run has read our lease and keeps to its share,
# so no burst of theirs from before they knew of us can meet ours in a window.
JOIN_WAIT_S = 2 * REFRESH_S + 0.1
# A location's first answer sizes its first burst: the view may be only this old, so that a
# peer that registered before the answer came is never missed.
FRESH_S = 0.02


def default_folder() -> Path:
    """Per user: ``$XDG_RUNTIME_DIR/ghl-pipeline``, else ``TMP/ghl-pipeline-UID``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "ghl-pipeline"
    return Path(tempfile.gettempdir()) / f"ghl-pipeline-{os.getuid()}"


def location_key(base_url: str, location_id: str) -> bytes:
    """What a lease says of a location: its hash, with the API's, so that two sandboxes on
    two ports (or the sandbox and the live API) never look shared."""
    text = f"{base_url.rstrip('/')}\0{location_id}".encode()
    return hashlib.blake2b(text, digest_size=_DIGEST).digest()


class Peers:
    """This run's lease and what the other live leases list.

    ``sharers(location_id)`` is cheap (a dict lookup); the folder is read again at most
    every ``REFRESH_S`` (``FRESH_S`` when asked for a fresh view). Nothing here may stop a
    run: a folder that cannot be written or read means no peers are known, and the headers
    alone steer (said once in the log).
    """

    def __init__(
        self,
        base_url: str,
        locations: Iterable[str],
        *,
        folder: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url
        self._mine = {location_key(base_url, name) for name in locations}
        self._folder = folder or default_folder()
        self._clock = clock
        self._lease: Path | None = None
        self._fd: int | None = None
        self._read_at = -float("inf")
        self.registered_at = -float("inf")  # our lease is readable from then on
        self._trusted = False  # the folder is ours: what is in it may be read
        self._theirs: Counter[bytes] = Counter()  # our keys -> live leases of others that list it
        # A live lease's (name, size, mtime) -> its keys: read once while it is unchanged.
        self._known: dict[tuple[str, int, int], frozenset[bytes]] = {}
        self.peers = 0  # live leases seen at the last read that share a location with us

    def __enter__(self) -> Peers:
        try:
            self._register()
        except OSError as exc:
            self._close()
            log.warning("cannot leave a lease for our other runs", error=str(exc))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def sharers(self, location_id: str, *, fresh: bool = False) -> int:
        """How many live runs of ours on this machine send to the location, this one too."""
        if not self._trusted:
            return 1
        now = self._clock()
        if now - self._read_at >= (FRESH_S if fresh else REFRESH_S):
            self._read_at = now
            self._read()
        if not self._theirs:
            return 1
        return 1 + self._theirs.get(location_key(self._base_url, location_id), 0)

    def join_wait_s(self, location_id: str) -> float:
        """How long to wait before the first request at a location that another run of
        ours already sends to (0 when no other run does): see ``JOIN_WAIT_S``."""
        if self.sharers(location_id, fresh=True) < 2:
            return 0.0
        return max(0.0, self.registered_at + JOIN_WAIT_S - self._clock())

    def done(self, location_id: str) -> None:
        """This run starts no more rows at the location: take it off the lease."""
        key = location_key(self._base_url, location_id)
        if key not in self._mine:
            return
        self._mine.discard(key)
        self._theirs.pop(key, None)
        if self._fd is None:
            return
        try:  # in place, under our lock: a reader may see a mix, never a stranger's key
            data = b"".join(sorted(self._mine))
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
        except OSError as exc:
            log.debug("cannot update the lease", error=str(exc))

    # -- the folder ---------------------------------------------------------------------

    def _register(self) -> None:
        """Write the lease under a temporary name, lock it, then rename it into place: a
        reader never sees a lease half written or one not yet locked."""
        if not self._mine:
            return
        self._folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = self._folder.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            # In a shared /tmp, a folder of that name made by someone else could feed us
            # leases that halve our share: only our own, private folder is trusted.
            raise PermissionError(f"{self._folder} is not this user's private folder")
        fd, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self._folder)
        self._fd = fd
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"".join(sorted(self._mine)))
        lease = self._folder / f"{os.getpid()}-{Path(temp).stem.lstrip('.')}{_SUFFIX}"
        Path(temp).rename(lease)
        self._lease = lease
        self._trusted = True
        self.registered_at = self._clock()

    def _close(self) -> None:
        if self._lease is not None:
            with contextlib.suppress(OSError):
                self._lease.unlink()
            self._lease = None
        if self._fd is not None:
            os.close(self._fd)  # the lock goes with it
            self._fd = None

    def _read(self) -> None:
        try:
            names = [p for p in self._folder.iterdir() if p.name.endswith(_SUFFIX)]
        except OSError:
            names = []
        theirs: Counter[bytes] = Counter()
        known: dict[tuple[str, int, int], frozenset[bytes]] = {}
        peers = 0
        for path in names:
            if path == self._lease:
                continue
            found = self._live_keys(path)
            if found is None:
                continue
            stamp, keys = found
            known[stamp] = keys
            common = keys & self._mine
            if common:
                peers += 1
                theirs.update(common)
        if peers != self.peers:
            log.info("our other runs on this machine share locations", runs=peers)
        self._theirs, self._known, self.peers = theirs, known, peers

    def _live_keys(self, path: Path) -> tuple[tuple[str, int, int], frozenset[bytes]] | None:
        """A live lease's keys; None for a dead run's lease (removed) or one gone meanwhile."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: its run is alive
                info = os.fstat(fd)
                stamp = (path.name, info.st_size, info.st_mtime_ns)
                keys = self._known.get(stamp)
                if keys is None:
                    data = os.read(fd, info.st_size)
                    keys = frozenset(data[k : k + _DIGEST] for k in range(0, len(data), _DIGEST))
                return stamp, keys
            with contextlib.suppress(OSError):
                path.unlink()  # nobody holds it: its run died
            return None
        except OSError:
            return None
        finally:
            os.close(fd)


async def follow(peers: SharedLocations, locations: Mapping[str, Location]) -> None:
    """Apply our other runs' leases to the locations as they change, between answers too
    (the sender runs this beside its rows): a run that learnt of a new peer only from its
    next answer could spend a whole window's burst first, and the newcomer's requests
    would meet it as 429s."""
    while True:
        await asyncio.sleep(REFRESH_S)
        for name, location in locations.items():
            if location.limiter.answers:
                location.limiter.share(peers.sharers(name))

"""The journals of a run whose results go to object storage, kept there as well.

A task of an array job runs on a machine that may vanish (a node drained, a spot instance
taken back) and its next attempt starts on another one, with an empty disk. Its journal
(``journal``) is what makes a crash lose nothing, so for an output in object storage it is
copied next to the results, under ``.NAME.checkpoint/`` beside ``NAME``, every
``--checkpoint-interval`` seconds and when the run stops. A run that finds that folder and
no journal of its own on disk takes it up, and ``--resume`` goes on from there: what was
sent after the last copy is sent again and resolves to ``exists`` with the right id.

Each copy uploads only the bytes appended since the last one, as a new object (a *segment*),
never the whole journal again: the traffic is the journal's own growth, not its square.

**Fencing.** Every run that takes the folder up claims the next *epoch* first, by creating
``epochs/epoch-EEEEEE`` only if it does not exist (a conditional PUT: two claimants of one epoch
cannot both win). Its segments are named by its epoch, so nothing it writes can overwrite
what another attempt wrote. An older attempt that is still running somewhere (a node cut
off from the cluster, not dead) sees the newer claim at its next copy and stops: it neither
sends more nor writes its part over the newer attempt's (``Superseded``).

Segments of every epoch are restored, record lines in epoch order after one header line:
a record is a row's outcome as it happened, true whichever attempt wrote it, and the last
record of a row wins, so a stale attempt's late segment does no harm.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from pipeline.core.errors import EXIT_LOCKED, CheckpointTakenOver, UsageError, first_line
from pipeline.state import objects
from pipeline.state.output_files import OutputFiles

log = structlog.get_logger("pipeline.state.checkpoints")

DEFAULT_INTERVAL_S = 5.0
# Two subfolders, so that the epoch check at every copy lists the few claims, never the
# segments, whose number grows with the task's hours (a store lists by whole path segments).
_EPOCHS = "epochs/"
_SEGMENTS = "segments/"
_EPOCH = "epoch-"
_SEGMENT = "segment-"
_HEADER = b'{"journal"'


class Superseded(CheckpointTakenOver):
    """A newer attempt of this task took its checkpoint over: this one must stop writing.
    Exit 75, as for an output another run holds (``locking``): another attempt of this
    task is writing it, and this one did nothing more. Callers catch it by its public
    name, ``pipeline.CheckpointTakenOver``."""

    exit_code = EXIT_LOCKED


def checkpoint_folder(uri: str) -> tuple[str, str]:
    """The store's root (the results' folder) and the prefix of ``.NAME.checkpoint/``."""
    folder, _, name = uri.rstrip("/").rpartition("/")
    return folder + "/", f".{name}.checkpoint/"


@dataclass(slots=True)
class _Journal:
    """One local journal's upload state: bytes already in the store, segments written."""

    path: Path
    uploaded: int = 0


@dataclass(slots=True)
class Checkpoints:
    """The checkpoint folder of one remote output, and the thread that keeps it current."""

    files: OutputFiles
    interval_s: float = DEFAULT_INTERVAL_S
    store: Any = None
    epoch: int = 0
    superseded: bool = False
    segments: int = 0  # written by this attempt
    bytes_up: int = 0
    requests: int = 0  # to the store, by this attempt: claims, lists, puts, gets, deletes
    _prefix: str = ""
    _journals: dict[Path, _Journal] = field(default_factory=dict)
    _seq: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _on_superseded: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.files.uri is None:
            raise ValueError("checkpoints are for an output in object storage")
        root, self._prefix = checkpoint_folder(self.files.uri)
        if self.store is None:
            self.store = objects.open_store(root)

    # -- taking the folder up -----------------------------------------------------------

    def take_up(self) -> int:
        """Claim the next epoch and restore the journals from the folder (``claim``,
        ``restore``); the record lines restored. A store that fails on the way stops the
        run in one line (``objects.describe``), and gives the claim back (``release``)."""
        self.claim()
        try:
            with objects.failures(self.where, "taken up"):
                return self.restore()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give this attempt's claim back when it copied nothing: a run that stops before it
        sends (an unreadable input, the results of another input) leaves the folder as it
        found it, and no checkpoint at all when it found none. An attempt that wrote a
        segment keeps its claim: a later claim of the same epoch would collide with its
        segments' names."""
        if not self.epoch or self.segments:
            return
        import obstore

        try:
            self.requests += 1
            obstore.delete(self.store, f"{self._prefix}{_EPOCHS}{_EPOCH}{self.epoch:06d}")
        except Exception as exc:  # the run's own error is the one to report
            log.warning("cannot give the checkpoint epoch back", error=first_line(exc))
            return
        log.info("checkpoint epoch given back", epoch=self.epoch, where=self.where)
        self.epoch = 0

    def claim(self) -> int:
        """Claim the next epoch (conditional create; retried past a claimant that won)."""
        import obstore

        latest = max(self._epochs(), default=0)
        for epoch in range(latest + 1, latest + 100):
            note = {"host": socket.gethostname(), "pid": os.getpid(), "at": _now()}
            self.requests += 1
            with objects.failures(self.where, "claimed"):
                try:
                    obstore.put(
                        self.store,
                        f"{self._prefix}{_EPOCHS}{_EPOCH}{epoch:06d}",
                        json.dumps(note).encode(),
                        mode="create",
                    )
                except obstore.exceptions.AlreadyExistsError:
                    continue  # another claimant won this epoch: try the next
            self.epoch = epoch
            log.info("checkpoint epoch claimed", epoch=epoch, where=self.where)
            return epoch
        raise UsageError(f"{self.where}: cannot claim a checkpoint epoch")

    def holds_journals(self) -> bool:
        """Whether an earlier attempt copied any journal here."""
        return any(name.startswith(_SEGMENT) for name in self._names(_SEGMENTS))

    def restore(self) -> int:
        """Rebuild the local journals from the segments when there are none on disk; the
        number of record lines restored (0: nothing to take up, or the disk had its own).

        Journals already on this disk (the task started again on the same machine) are the
        fuller copy and are kept; their first copy uploads them whole, since how much of
        them reached the store before the crash is not known (a record copied twice is
        harmless: the last record of a row wins, and they are the same)."""
        if self.files.existing_journals():
            return 0

        by_journal: dict[str, list[tuple[int, int, str]]] = {}
        for name in self._names(_SEGMENTS):
            if not name.startswith(_SEGMENT):
                continue
            epoch, seq, suffix = _parse_segment(name)
            by_journal.setdefault(suffix, []).append((epoch, seq, name))
        restored = 0
        for suffix, segments in sorted(by_journal.items()):
            path = self.files.anchor.with_name(f"{self.files.anchor.name}.{suffix}")
            count = self._rebuild(path, [name for _, _, name in sorted(segments)])
            if count is None:
                log.warning("checkpoint has records but no header; not taken up", journal=suffix)
                continue
            self._journals[path] = _Journal(path, path.stat().st_size)
            restored += count
        if restored:
            log.info("took up the checkpoint", records=restored, where=self.where)
        return restored

    def _rebuild(self, path: Path, names: list[str]) -> int | None:
        """Write one journal from its segments, in order, one segment in memory at a time:
        the first header line, then every record line. The record lines written, or None
        (nothing written) when no segment holds a header."""
        header = next((h for h in map(self._header_of, names) if h is not None), None)
        if header is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        with path.open("wb") as handle:
            handle.write(header)
            for name in names:
                lines = [
                    line
                    for line in self._segment(name).splitlines(keepends=True)
                    if line.strip() and not line.startswith(_HEADER)
                ]
                handle.writelines(lines)
                count += len(lines)
            handle.flush()
            os.fsync(handle.fileno())
        return count

    def _header_of(self, name: str) -> bytes | None:
        """The segment's journal header line, if it begins a journal (it is then first)."""
        first = self._segment(name).split(b"\n", 1)[0] + b"\n"
        return first if first.startswith(_HEADER) else None

    def _segment(self, name: str) -> bytes:
        import obstore

        self.requests += 1
        return bytes(obstore.get(self.store, f"{self._prefix}{_SEGMENTS}{name}").bytes())

    # -- keeping it current ---------------------------------------------------------------

    def start(self, on_superseded: Callable[[], None]) -> None:
        """Copy new journal lines every ``interval_s`` in a thread; ``on_superseded`` is
        called (from that thread) once a newer attempt has claimed the folder."""
        self._on_superseded = on_superseded
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and make the last copy (what the journals hold now). Raises
        ``Superseded`` only: a store that fails now costs the copy, not the run, whose
        results are about to hold everything anyway."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.upload()
        except Superseded:
            raise
        except Exception as exc:
            log.warning("the last checkpoint upload failed", error=first_line(exc))

    def upload(self) -> int:
        """Copy what the journals gained since the last copy; the bytes copied. Raises
        ``Superseded`` when a newer attempt claimed the folder (nothing is copied then)."""
        with self._lock:
            pending = self._pending()
            if not pending:
                return 0
            self.check_fence()
            import obstore

            sent = 0
            for journal, body in pending:
                self._seq += 1
                suffix = journal.path.name[len(self.files.anchor.name) + 1 :]
                name = f"{_SEGMENT}{self.epoch:06d}-{self._seq:08d}-{suffix}"
                self.requests += 1
                obstore.put(self.store, f"{self._prefix}{_SEGMENTS}{name}", body, mode="create")
                journal.uploaded += len(body)
                sent += len(body)
                self.segments += 1
            self.bytes_up += sent
            return sent

    def check_fence(self) -> None:
        """Raise ``Superseded`` if an attempt with a later epoch claimed the folder."""
        newer = max(self._epochs(), default=0)
        if newer > self.epoch:
            self.superseded = True
            raise Superseded(
                f"{self.files.uri}: a newer attempt of this task (epoch {newer}) took its "
                f"checkpoint over; this one (epoch {self.epoch}) stops without writing"
            )

    def clear(self) -> None:
        """Remove the folder: the results now hold everything its segments did."""
        import obstore

        names = [
            f"{self._prefix}{sub}{name}"
            for sub in (_SEGMENTS, _EPOCHS)
            for name in self._names(sub)
        ]
        if names:
            self.requests += 1
            obstore.delete(self.store, names)

    # -- the mechanism --------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.upload()
            except Superseded as exc:
                log.error("superseded", reason=str(exc))
                if self._on_superseded is not None:
                    self._on_superseded()
                return
            except Exception as exc:  # a store that fails now may answer next time
                log.warning("checkpoint upload failed; will try again", error=first_line(exc))

    def _pending(self) -> list[tuple[_Journal, bytes]]:
        """Each journal's complete lines not yet copied (a torn tail waits for its end)."""
        for path in self.files.existing_journals():
            self._journals.setdefault(path, _Journal(path))
        pending = []
        for journal in self._journals.values():
            with contextlib.suppress(FileNotFoundError), journal.path.open("rb") as handle:
                handle.seek(journal.uploaded)
                body = handle.read()
                body = body[: body.rfind(b"\n") + 1]
                if body:
                    pending.append((journal, body))
        return pending

    def _names(self, folder: str) -> list[str]:
        """The names of the objects in one subfolder of the checkpoint. A store's error is
        one line (``objects.describe``): the first listing is the run's first request to
        the folder, and a run stopped there sent nothing."""
        import obstore

        self.requests += 1
        prefix = f"{self._prefix}{folder}".rstrip("/")
        with objects.failures(self.where, "listed"):
            listed = obstore.list(self.store, prefix=prefix).collect()
        return [str(item["path"]).rpartition("/")[2] for item in listed]

    def _epochs(self) -> list[int]:
        names = self._names(_EPOCHS)
        return [int(name[len(_EPOCH) :]) for name in names if name.startswith(_EPOCH)]

    @property
    def where(self) -> str:
        """The checkpoint folder's URI."""
        root, prefix = checkpoint_folder(str(self.files.uri))
        return root + prefix


def _parse_segment(name: str) -> tuple[int, int, str]:
    """``segment-EEEEEE-SSSSSSSS-SUFFIX`` -> (epoch, seq, suffix)."""
    _, epoch, seq, suffix = name.split("-", 3)
    return int(epoch), int(seq), suffix


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def released_on_failure(checkpoints: Checkpoints | None) -> Iterator[None]:
    """Around a run after it took the checkpoint up: a run that fails gives its claim back
    when it copied nothing (``Checkpoints.release``), so that a run stopped before sending
    leaves no checkpoint object behind."""
    try:
        yield
    except BaseException:
        if checkpoints is not None:
            checkpoints.release()
        raise


def for_output(files: OutputFiles, interval_s: float) -> Checkpoints | None:
    """The checkpoints of a remote output (None for a local one: its disk is its journal's)."""
    if files.uri is None:
        return None
    return Checkpoints(files, interval_s=interval_s)


def take_up(files: OutputFiles, interval_s: float, *, resume: bool) -> Checkpoints | None:
    """For an output in object storage: claim the checkpoint beside it (fencing off any
    older attempt of this task) and, with no journal on this disk, take up its journals,
    which ``--resume`` then goes on from. Without ``--resume``, a checkpoint that holds an
    unfinished run's journal stops the run before it claims anything: starting over would
    send its rows again, and the claim would stop that run if it is still going somewhere.
    None for a local output."""
    checkpoints = for_output(files, interval_s)
    if checkpoints is None:
        return None
    if not resume and checkpoints.holds_journals():
        raise UsageError(
            f"{checkpoints.where}: an unfinished run left its journal's checkpoint there; add "
            "--resume to continue it (or remove that folder to start over)"
        )
    checkpoints.take_up()
    return checkpoints

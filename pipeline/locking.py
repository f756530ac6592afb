"""One run per output at a time: an advisory lock beside the output file.

Cron starts a run every hour; a slow run must not find a second one sending the same rows
and writing the same journal. The lock is ``flock`` on a hidden file beside the output
(``OutputFiles.lock``), so it is released by the kernel the moment the process ends, however
it ends (no stale lock after a ``kill -9``), and it holds the owner's pid for the message
the second run prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from pipeline.errors import UsageError
from pipeline.outputs import OutputFiles

EXIT_LOCKED = 75  # EX_TEMPFAIL: try again later


class OutputLocked(UsageError):
    """Another run holds the output. Exit 75, so a scheduler can tell it from a bad file."""

    exit_code = EXIT_LOCKED


@contextlib.contextmanager
def exclusive(files: OutputFiles) -> Iterator[None]:
    """Hold the output's lock for the ``with`` block, or refuse at once if a run holds it."""
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise OutputLocked(
                f"{files.anchor}: another run (pid {owner}) is writing this output; "
                "wait for it to finish, or choose another -o"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock

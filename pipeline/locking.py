"""One run per output at a time: an advisory lock beside the output file.

Cron starts a run every hour; a slow run must not find a second one sending the same rows
and writing the same journal. The lock is ``flock`` on a hidden file beside the output, so it
is released by the kernel the moment the process ends, however it ends (no stale lock after
a ``kill -9``), and it holds the owner's pid for the message the second run prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UsageError

EXIT_LOCKED = 75  # EX_TEMPFAIL: try again later


class OutputLocked(UsageError):
    """Another run holds the output. Exit 75, so a scheduler can tell it from a bad file."""

    exit_code = EXIT_LOCKED


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.lock")


@contextlib.contextmanager
def exclusive(output: Path) -> Iterator[None]:
    path = lock_path(output)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise OutputLocked(
                f"{output}: another run (pid {owner}) is writing this output; "
                "wait for it to finish, or choose another -o"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock

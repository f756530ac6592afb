"""One run per output at a time: an advisory lock beside the output file.

Cron starts a run every hour; a slow run must not find a second one sending the same rows
and writing the same journal. The lock is ``flock`` on a hidden file beside the output
(``OutputFiles.lock``), so it is released by the kernel the moment the process ends, however
it ends (no stale lock after a ``kill -9``), and it holds the owner's pid for the message
the second run prints.

The lock file is removed when the run ends, so lock files do not pile up beside outputs.
Removing a file others may have opened needs care: a run that opened the old file just
before it was removed could lock that orphan while a third run locks a new file at the
same path, and both would believe they hold the lock. So the owner removes the file while
it still holds the lock, and whoever takes a lock checks, once it holds it, that the path
still names the file it locked; if not, it opens the path again. (After a ``kill -9`` the
file stays; the next run on that output takes it over and removes it.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.errors import EXIT_LOCKED, UsageError
from pipeline.state.output_files import OutputFiles


class OutputLocked(UsageError):
    """Another run holds the output. Exit 75, so a scheduler can tell it from a bad file."""

    exit_code = EXIT_LOCKED


@contextlib.contextmanager
def exclusive(files: OutputFiles) -> Iterator[None]:
    """Hold the output's lock for the ``with`` block, or refuse at once if a run holds it;
    the lock file is gone when the block ends."""
    fd = _take(files)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            files.lock.unlink()  # while still holding it: see the module's docstring
        os.close(fd)  # closing releases the lock


def _take(files: OutputFiles) -> int:
    """A descriptor of the lock file, locked, that the lock path still names."""
    while True:
        fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLocked(
                f"{files.anchor}: another run (pid {owner}) is writing this output; "
                "wait for it to finish, or choose another -o"
            ) from None
        if names_open_file(files.lock, fd):
            return fd
        os.close(fd)  # the run that held it removed it as it ended: lock the path anew


def names_open_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open at ``fd``."""
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

"""Reading what other processes append to files, a complete line at a time: the progress
display reads the journals so (``observe.progress``), and a run with ``--workers`` its
workers' log files (``send.workers``)."""

from __future__ import annotations

from pathlib import Path


class FileTails:
    """The complete lines appended to some files since the last read, each byte read once
    (a line still being written waits for the next read; a file not there yet is empty)."""

    def __init__(self, offsets: dict[Path, int]) -> None:
        self._offsets = dict(offsets)

    def read(self) -> bytes:
        new = b""
        for path, offset in self._offsets.items():
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except FileNotFoundError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offsets[path] = offset + len(complete)
            new += complete
        return new

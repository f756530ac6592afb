"""Every file around one output, named in one place.

A run writes its results to ``-o`` and keeps beside them the files that let it survive a
crash and share a machine with cron. For a local output ``out/results.parquet``:

=================================  =============================================  ==========
path                               what                                           how long
=================================  =============================================  ==========
``out/results.parquet``            the results                                    for good
``out/.results.parquet.PID.tmp``   the results while they are written            the write
``out/results.parquet.journal``    the journal of a run in one process            the run
``out/results.parquet.journal.wK`` worker K's journal (``--workers N``)           the run
``out/.results.parquet.lock``      the lock: one run per output at a time         for good
``out/.results.parquet.stage/``    the run's working files (the checked input)    the run
``out/.pipeline-XXXXXXXX/``        the rows and reports shared with the workers   sending
=================================  =============================================  ==========

("The run" ends when the results are written; a run that crashes leaves its journals and
its staging folder, which the next run resumes from and clears.)

For an output in object storage (``s3://bucket/results/run-1.parquet``) the results go to
the URI, written whole by a single PUT (no temporary file), and every other file lives in
a local state folder (``--state-dir``) beside a stand-in for the output, the *anchor*:
``STATE/<digest>-run-1.parquet``, where the digest of the whole URI keeps two outputs of the
same name apart. For a local output the anchor is the results file itself.

These names are read back by later runs, possibly of an earlier version: they never change
(``tests/unit/state/test_output_files.py`` holds them to the letter).
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UsageError
from pipeline.core.values import is_uri


def state_anchor(uri: str, state_dir: Path) -> Path:
    """The local stand-in of a remote output: its journal and lock live beside this path."""
    digest = hashlib.blake2b(uri.encode(), digest_size=6).hexdigest()
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "results.parquet"
    return state_dir / f"{digest}-{name}"


@dataclass(frozen=True, slots=True)
class WorkerFiles:
    """What a run hands its worker processes and gets back, in a folder of its own."""

    folder: Path

    def rows(self, worker: int) -> Path:
        """The rows worker ``worker`` sends (Parquet)."""
        return self.folder / f"rows-{worker}.parquet"

    def report(self, worker: int) -> Path:
        """What worker ``worker`` reports when its session ends (JSON)."""
        return self.folder / f"report-{worker}.json"

    def log(self, worker: int) -> Path:
        """Worker ``worker``'s log lines while a progress bar holds the terminal."""
        return self.folder / f"log-{worker}.txt"


@dataclass(frozen=True, slots=True)
class OutputFiles:
    """The files around one output (see the module's table)."""

    anchor: Path  # the results file; for a remote output, its local stand-in
    uri: str | None = None  # where the results go when that is object storage

    @classmethod
    def of(cls, output: str, state_dir: Path) -> OutputFiles:
        """From the ``-o`` value; ``state_dir`` counts only for a remote output."""
        if is_uri(output):
            return cls(state_anchor(output, state_dir), output)
        return cls(Path(output))

    @property
    def results(self) -> str | Path:
        """Where the results file is read and written."""
        return self.uri or self.anchor

    @property
    def folder(self) -> Path:
        """The local folder every file but a remote output's results lives in."""
        return self.anchor.parent

    @property
    def journal(self) -> Path:
        """The journal of a run in one process."""
        return self.anchor.with_name(f"{self.anchor.name}.journal")

    def journals(self, workers: int) -> list[Path]:
        """The journals a run with ``workers`` processes writes: one, or one per worker."""
        if workers == 1:
            return [self.journal]
        return [self.journal.with_name(f"{self.journal.name}.w{k}") for k in range(workers)]

    def existing_journals(self) -> list[Path]:
        """The journals on disk, left by an unfinished run with any number of workers."""
        return sorted(p for p in self.folder.glob(f"{self.journal.name}*") if p.is_file())

    @property
    def lock(self) -> Path:
        return self.anchor.with_name(f".{self.anchor.name}.lock")

    @property
    def stage(self) -> Path:
        """The run's working files: hidden, beside the output, one folder per output."""
        return self.anchor.with_name(f".{self.anchor.name}.stage")

    def results_temp(self, pid: int) -> Path:
        """The local results while process ``pid`` writes them, before the rename."""
        return self.anchor.with_name(f".{self.anchor.name}.{pid}.tmp")

    @contextlib.contextmanager
    def worker_files(self) -> Iterator[WorkerFiles]:
        """A fresh folder for the files shared with the workers, removed when they are done."""
        with tempfile.TemporaryDirectory(prefix=".pipeline-", dir=self.folder) as folder:
            yield WorkerFiles(Path(folder))


def require_parquet_name(output: str) -> None:
    """The results file is the run's state (``--resume``, ``retry`` and ``report`` read
    it), so it is Parquet, and its name says so: ``-o results.csv`` would be a Parquet file
    under a CSV's name."""
    name = output.rstrip("/").rsplit("/", 1)[-1]
    if not name.lower().endswith(".parquet"):
        raise UsageError(
            f"-o {output}: the results file is Parquet (resume, retry and report read it); "
            f"name it {Path(name).stem or 'results'}.parquet, and write a CSV of it with "
            "pipeline report RESULTS --format csv -o FILE.csv"
        )

"""What every benchmark shares: the run's options, the progress log, a failed run's rows."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.metrics import Table
from bench.processes import Finished


@dataclass(frozen=True)
class Options:
    large: bool
    workdir: Path
    concurrency: int | None  # the limit benchmark's --concurrency (None: the default, auto)
    repeats: int
    capacity_rows: int
    only: frozenset[str]


def log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def failed_run(table: Table, what: str, run: Finished) -> None:
    why = "timed out" if run.timed_out else f"exit code {run.code}"
    table.add(f"{what} ran", why, "finishes", False)
    table.notes.append(f"{what} stderr: {run.stderr_tail()}")
    table.error = True

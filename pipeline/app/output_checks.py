"""What an output must be before a run writes to it, and the run's staging folder beside it.

Checked under the output's lock and before anything is sent: a run that cannot write its
results, or would write them over its input, over another run's results or (a dry run) over
the results it was asked to continue, is refused in one line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from pipeline.app.job import Job
from pipeline.core.errors import UsageError
from pipeline.core.values import is_uri
from pipeline.inputs.resuming import results_exist
from pipeline.state.output_files import OutputFiles


def check_output_folder(files: OutputFiles) -> None:
    """The output's folder must exist (it is created) and be writable, before anything else."""
    folder = files.folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"{folder}: cannot create the output folder ({exc.strerror or exc})"
        ) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{folder}: the output folder is not writable")


def check_paths(job: Job, files: OutputFiles, *, resume: bool) -> None:
    """Refuse an output that should not be written, before anything is sent."""
    where = files.results
    if files.uri is not None:
        same = files.uri == job.source
    else:
        same = not is_uri(job.source) and Path(job.source).resolve() == where
    if same or (files.uri is None and files.anchor.resolve() == Path(job.source).resolve()):
        raise UsageError(f"{where}: the output would overwrite the input; choose another -o")
    if files.uri is None and files.anchor.is_dir():
        raise UsageError(
            f"{where}: the output is a directory; give a file path such as out/results.parquet"
        )
    exists = results_exist(files)  # for an output in object storage, a request: ask once
    if exists and not (resume or job.overwrite):
        raise UsageError(
            f"{where}: the output exists; add --overwrite to replace it, "
            "or --resume to continue the run that wrote it"
        )
    if job.dry_run and resume and (exists or files.existing_journals()):
        # A dry run continues no run: its plan would replace the results (ids and all).
        raise UsageError(
            f"{where}: --dry-run with --resume would write its plan over this run's results; "
            + (
                f"to see what is left to send, plan into another file: --dry-run --known {where} "
                "-o plan.parquet"
                if exists
                else "resume the run first (without --dry-run), or plan into another -o"
            )
        )


@contextlib.contextmanager
def staging(files: OutputFiles) -> Iterator[Path]:
    """A clean staging folder for this run, removed when it ends however it ends.

    It is only ever used under the output's lock, so anything already there was left by a
    run that died (``kill -9``) and is removed first."""
    folder = files.stage
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)

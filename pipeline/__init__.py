"""Create HighLevel conversations in bulk: read → validate and plan → send → journal → results.

From Python (a notebook, a script), the whole job is one call::

    import polars as pl
    import pipeline

    results = pipeline.create_conversations(
        pl.read_csv("contacts.csv"), token=token, output="results.parquet"
    )
    results = await pipeline.create_conversations_async(frame, token=token)  # in Jupyter

    summary = pipeline.run_conversations("contacts.csv", fail_on="failed", notify=[url])
    summary.exit_code, summary.exit_reason, summary.report.by_status, summary.rows

Every option of ``pipeline run`` is taken by its name; tokens come from ``token=`` or
``tokens=``, else from where the options say (``GHL_TOKEN`` by default).
Bad input or options raise ``UsageError``; a newer attempt that took an object-storage
output's checkpoint over stops the call with ``CheckpointTakenOver`` (a ``UsageError`` too).

Everything else in the package is private by convention; ``ARCHITECTURE.md`` maps it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.app.config import RunConfig
    from pipeline.app.library import (
        create_conversations,
        create_conversations_async,
        run_conversations,
        run_conversations_async,
    )
    from pipeline.core.errors import CheckpointTakenOver, UsageError
    from pipeline.observe.summary import RunSummary

__all__ = [
    "CheckpointTakenOver",
    "RunConfig",
    "RunSummary",
    "UsageError",
    "create_conversations",
    "create_conversations_async",
    "run_conversations",
    "run_conversations_async",
]

_EXPORTS = {
    "create_conversations": "pipeline.app.library",
    "create_conversations_async": "pipeline.app.library",
    "run_conversations": "pipeline.app.library",
    "run_conversations_async": "pipeline.app.library",
    "RunSummary": "pipeline.observe.summary",
    "RunConfig": "pipeline.app.config",
    "UsageError": "pipeline.core.errors",
    "CheckpointTakenOver": "pipeline.core.errors",
}


def __getattr__(name: str) -> Any:
    """The public names, imported on first use: ``pipeline --help`` must not pay for polars."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


# Polars' streaming engine cuts data into morsels of this many rows; it reads the setting
# once, so it is set before any module imports polars (a value in the environment wins).
# With the default (100,000) the allocator held up to 1 GB of freed buffers while the
# results were written: peak RSS on a 15M-row CSV varied from 0.55 to 1.6 GB between runs.
# With 20,000 it stayed at 0.55-0.58 GB, at the same speed (BENCHMARKS.md, "Large CSV files").
os.environ.setdefault("POLARS_IDEAL_MORSEL_SIZE", "20000")

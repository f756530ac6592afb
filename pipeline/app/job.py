"""One invocation of ``run``, ``retry`` or ``check``: the configuration, what to read, where
the results go, and the switches that are not configuration.

The configuration (``config.RunConfig``) holds every option under the option's own name,
with its default, in one place; each stage builds the small value it needs from it, beside
its own code (``reading.Columns.of``, ``planning.IdRules.of``, ``retrying.RetryPolicy.of``,
the client from ``timeout``, ``concurrency``, ``http_stack``...). A ``Job`` only adds what
is particular to this invocation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.app.config import RunConfig
from pipeline.core.errors import UsageError
from pipeline.core.values import PUBLISHED_RATE, Rate, parse_rate
from pipeline.inputs.shards import Shard
from pipeline.state.output_files import OutputFiles

if TYPE_CHECKING:
    from pipeline.auth.tokens import Tokens


@dataclass(frozen=True, slots=True)
class Job:
    config: RunConfig
    source: str  # INPUT: a file, a glob, a folder of parts, or a URI
    files: OutputFiles  # the results and the files around them
    dry_run: bool = False
    overwrite: bool = False
    log_level: int = logging.INFO
    # SIGINT/SIGTERM stop the run gracefully (the command line owns its process); a library
    # call installs no handler it cannot own, and Ctrl-C interrupts it as Python does.
    handle_signals: bool = False
    # The command line as typed, to print the commands that continue it (a second Ctrl-C's
    # --resume); None for a Python call, which prints none.
    argv: tuple[str, ...] | None = None
    shard: Shard | None = None  # one task of an array job: its part of the locations
    merge_into: str | None = None  # --merge: the whole output, written once all parts are in

    @property
    def rate(self) -> Rate | None:
        """The user's own per-location ceiling (``--rate``); None: as each location's
        answers announce. Either way the announced limit holds too."""
        return parse_rate(self.config.rate) if self.config.rate else None

    @property
    def limits(self) -> list[tuple[int, float]]:
        """The per-location limits a plan is estimated with, before any answer: HighLevel's
        published one and the user's ceiling, both of which hold."""
        published = PUBLISHED_RATE.as_tuple()
        rate = self.rate
        return [published] if rate is None else [published, rate.as_tuple()]

    @property
    def bounds(self) -> dict[str, Any]:
        """What bounds the sending time (``planning.sending_seconds``): the plan's estimate
        and the progress bar's ETA are made with it."""
        from pipeline.inputs.planning import CLIENT_PACE  # polars: not for --help
        from pipeline.send.inflight import DEFAULT_CEILING

        concurrency = self.config.concurrency
        return {
            "limits": self.limits,
            "daily_quota": self.config.daily_quota,
            "max_in_flight": DEFAULT_CEILING if concurrency == "auto" else concurrency,
            "pace": CLIENT_PACE * min(self.config.workers, os.cpu_count() or 1),
        }

    @property
    def rate_label(self) -> str:
        rate = self.rate
        return "as announced" if rate is None else f"{rate} and as announced"


def require_token(job: Job, tokens: Tokens | None, *, call: bool = False) -> None:
    """Only a dry run goes on without a token: the one "no API token" message, naming every
    place a token can come from (``call``: a Python call, which may also pass one)."""
    if job.dry_run or (tokens is not None and tokens.any_token):
        return
    passed = "pass token=... (or tokens={location_id: token}), or " if call else ""
    raise UsageError(
        f"no API token: {passed}set the environment variable {job.config.token_env} "
        "(or use --token-file, --tokens-file or --oauth-file)"
    )

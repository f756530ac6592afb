"""One invocation, from its settings to its summary: the path the command line and the
Python call share, so that both honour every option the same way.

- ``tokens_for``: where the tokens come from (``--oauth-file``, ``--tokens-file``,
  ``--token-file``, the environment variable ``--token-env``), read once and registered
  with the log redaction before anything else can see them;
- ``job_for``: the job (the output, a shard's part and ``--merge``, the switches);
- ``perform``: run it, judge it (``summary.verdict``), and tell others (``--notify``,
  ``--metrics-file``, ``--pushgateway``), who may never change the outcome.

Nothing here prints: the command line prints the summary, a Python call returns it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.app.config import RunConfig
from pipeline.app.job import Job
from pipeline.auth.tokens import Tokens, load_tokens_file
from pipeline.core import logs
from pipeline.core.errors import UsageError
from pipeline.state.output_files import OutputFiles

if TYPE_CHECKING:  # polars and the sending stack load only when a run is performed
    from pipeline.observe.summary import RunSummary


def tokens_for(config: RunConfig, environ: Mapping[str, str]) -> Tokens | None:
    """The run's tokens as its settings name them; None when none is set (a dry run)."""
    for url in [*config.notify, config.pushgateway or ""]:
        logs.register_secret(url)  # a webhook's URL is its key
    if config.oauth_file is not None:
        if config.tokens_file is not None:
            raise UsageError("--oauth-file and --tokens-file: give one of them")
        from pipeline.auth.oauth import OAuthSource

        return Tokens(oauth=OAuthSource.load(config.oauth_file, config.refresh_margin))
    if config.tokens_file is not None:
        return load_tokens_file(config.tokens_file, environ)
    token = read_token(config.token_file, config.token_env, environ)
    if token is None:
        return None
    source = (
        f"--token-file {config.token_file}"
        if config.token_file is not None
        else f"{config.token_env} in the environment"
    )
    return Tokens(default=token, default_source=source)


def read_token(token_file: Path | None, token_env: str, environ: Mapping[str, str]) -> str | None:
    """The token, from a file (read once) or the environment; never from the command line.

    It is registered with the log redaction before anything else can see it.
    """
    if token_file is not None:
        try:
            raw = token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"--token-file {token_file}: cannot be read ({type(exc).__name__})"
            ) from exc
        token = raw.strip() or None
        if token is None:
            raise UsageError(f"--token-file {token_file}: the file is empty")
    else:
        token = (environ.get(token_env) or "").strip() or None
    if token is not None:
        logs.register_secret(token)
        if any(ch.isspace() for ch in token):
            raise UsageError("the token holds whitespace inside it; check its source")
    return token


def job_for(
    source: str,
    config: RunConfig,
    *,
    output: str,
    dry_run: bool = False,
    overwrite: bool = False,
    log_level: int = logging.INFO,
    handle_signals: bool = False,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Job:
    """The job: ``output`` (a shard writes its part beside it: ``--shard``, or the engine's
    index in ``environ``), and with ``--merge``, the whole output once every part is in."""
    from pipeline.inputs.shards import resolve_shard

    shard = resolve_shard(
        config.shard, config.shard_count, os.environ if environ is None else environ
    )
    merge_into = None
    if config.merge:
        if shard is None:
            raise UsageError(
                "--merge: this is not a task of an array job (no --shard, and no index in "
                "the environment); merge parts with pipeline merge PARTS -o OUTPUT"
            )
        merge_into = output
    if shard is not None and output != os.devnull:
        output = shard.part_name(output)
    return Job(
        config=config,
        source=source,
        shard=shard,
        merge_into=merge_into,
        files=OutputFiles.of(output, config.state_dir),
        dry_run=dry_run,
        overwrite=overwrite,
        log_level=log_level,
        handle_signals=handle_signals,
        argv=None if argv is None else tuple(argv),
    )


def perform(
    job: Job,
    tokens: Tokens | None,
    *,
    resume: bool = False,
    retry_from: str | Path | None = None,
) -> RunSummary:
    """Run the job, judge it, and tell others."""
    from pipeline.app.run import execute
    from pipeline.app.summary import summarise

    result = execute(job, tokens, resume=resume, retry_from=retry_from)
    summary = summarise(
        job,
        result,
        token_source=tokens.source if tokens is not None else lambda _: "",
    )
    tell_others(job.config, summary)
    return summary


def tell_others(config: RunConfig, summary: RunSummary) -> None:
    """Notifications and metrics, once the results are written. Neither may change the
    run's outcome: a receiver that cannot be reached is a warning in the log."""
    if not (config.notify or config.metrics_file is not None or config.pushgateway is not None):
        return
    if config.notify:
        from pipeline.observe.notify import notify

        notify(config.notify, summary, when=config.notify_on)
    if config.metrics_file is not None or config.pushgateway is not None:
        from pipeline.observe.metrics import publish

        publish(summary, path=config.metrics_file, pushgateway=config.pushgateway)

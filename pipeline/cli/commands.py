"""The command line: ``pipeline run``, ``retry``, ``check``, ``report`` and ``sandbox``.

Every way a command can go wrong before sending (bad option, bad config, bad file, missing
token) ends here as one line on stderr and exit 2; ``--debug`` adds the traceback.
Precedence of settings: command line > environment (``GHL_*``) > ``--config`` file > defaults
(merged and validated in one place, ``config.load_config``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, Literal

import click

from pipeline.app.config import RunConfig, load_config, option_specs
from pipeline.app.job import Job
from pipeline.auth.tokens import Tokens, load_tokens_file
from pipeline.cli.helpformat import RUN_SECTIONS, FlowGroup, SectionedCommand
from pipeline.core import logs
from pipeline.core.errors import (
    EXIT_INTERNAL,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_ROWS_NOT_DONE,
    EXIT_SIGINT,
    EXIT_USAGE,
    UsageError,
    one_line,
)
from pipeline.core.settings import parse_fail_on
from pipeline.state.outputs import OutputFiles, require_parquet_name


@click.group(
    cls=FlowGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="pipeline")
def cli() -> None:
    """Bulk-create HighLevel (LeadConnector) conversations from CSV, Excel or Parquet files,
    as fast as the API's limits allow, with a result for every row."""


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _config_options() -> list[Decorator]:
    """One option per configuration field (``config.RunConfig``): values are passed on as
    typed, and pydantic-settings validates them together with the environment and file."""
    options: list[Decorator] = []
    for flag, name, default, help_text, metavar in option_specs():
        if isinstance(default, bool):
            options.append(click.option(flag, name, is_flag=True, default=None, help=help_text))
        elif isinstance(default, list):  # repeatable
            options.append(click.option(flag, name, multiple=True, help=help_text, metavar=metavar))
        else:
            options.append(click.option(flag, name, default=None, help=help_text, metavar=metavar))
    return options


_CONFIG_FILE_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML file of settings (see configs/example.toml).",
)
_DEBUG_OPTION = click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")

_RUN_OPTIONS: list[Decorator] = [
    click.option(
        "-o",
        "--output",
        type=str,
        required=True,
        help="Results Parquet file.",
    ),
    _CONFIG_FILE_OPTION,
    *_config_options(),
    click.option(
        "--dry-run",
        is_flag=True,
        help="Validate and plan, send nothing, write skipped/dry_run rows.",
    ),
    click.option(
        "--resume",
        is_flag=True,
        help="Continue an interrupted or crashed run: keep what its journal and results hold.",
    ),
    click.option(
        "--overwrite", is_flag=True, help="Replace an existing output file (otherwise refused)."
    ),
    _DEBUG_OPTION,
]


def _run_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_RUN_OPTIONS):
        command = option(command)
    return command


_RUN_EXAMPLES = (
    ("against the sandbox: start `pipeline sandbox`, paste the line it prints",
     "pipeline run data/sample.csv -o out/results.parquet"),
    ("one sub-account's contacts export, keeping a column to join back on",
     "pipeline run export.csv -o out/acme.parquet --location-id LOC --keep-columns Email"),
    ("validate and estimate, send nothing",
     "pipeline run contacts.csv -o out/plan.parquet --dry-run"),
    ("continue after Ctrl-C or a crash (every settled row is kept)",
     "pipeline run contacts.csv -o out/results.parquet --resume"),
    ("the problem rows as CSV, to fix and run again",
     "pipeline report out/results.parquet --rows failed,invalid,skipped --format csv "
     "-o out/problems.csv"),
)  # fmt: skip


@cli.command(
    no_args_is_help=True,
    cls=SectionedCommand,
    sections=RUN_SECTIONS,
    examples=_RUN_EXAMPLES,
    short_help="Create a conversation for every row of a CSV, Excel or Parquet file.",
)
@click.argument("input", type=str)
@_run_options
def run(input: str, **options: Any) -> None:
    """Create a conversation for every (locationId, contactId) row of INPUT."""
    _execute(input, options, retry_from=None)


@cli.command(
    no_args_is_help=True,
    cls=SectionedCommand,
    sections=RUN_SECTIONS,
    examples=(
        ("send again what did not settle, into a new complete results file",
         "pipeline retry out/results.parquet -o out/results-retry.parquet"),
    ),
    short_help="Send again the rows of a results file that did not settle.",
)  # fmt: skip
@click.argument("results", type=str)
@_run_options
def retry(results: str, **options: Any) -> None:
    """Send again the rows of RESULTS that did not settle; write a complete new results file.

    Rows that failed for a transient reason (429, 5xx, timeout, network, rejected token) and
    skipped rows are sent; every other row keeps its outcome.
    """
    _execute(results, options, retry_from=results)


def _execute(input_path: str, options: dict[str, Any], *, retry_from: str | None) -> None:
    require_parquet_name(options["output"])
    job, tokens = _job_and_tokens(input_path, options, output=options["output"])
    # The heavy imports (polars, aiohttp) only once the options hold: --help and usage
    # errors answer without them (BENCHMARKS.md, "Start-up").
    from pipeline.app.run import execute
    from pipeline.cli.advice import advise
    from pipeline.core.outcomes import Code
    from pipeline.observe.report import count_matching, render

    result = execute(job, tokens, resume=options["resume"], retry_from=retry_from)
    results = str(job.files.results)
    if result.signal is not None:
        code = 128 + result.signal
        verdict = "interrupted"
    elif result.report.by_error_code.get(Code.CREDENTIALS_LOCKED):
        # The run stopped: another run held the --oauth-file's lock past its bound (the
        # line on stderr says which). Exit 75 (EX_TEMPFAIL): try again later.
        code = EXIT_LOCKED
        verdict = "stopped: another run held the --oauth-file's lock; try again later"
    else:
        statuses, codes = parse_fail_on(job.config.fail_on)
        failing = count_matching(job.files.results, statuses, codes)
        code = EXIT_ROWS_NOT_DONE if failing else EXIT_OK
        verdict = f"{failing} rows match --fail-on {job.config.fail_on}"
    advice = advise(
        results,
        argv=(click.get_current_context().obj or {}).get("argv", sys.argv[1:]),
        token_source=tokens.source if tokens is not None else lambda _: "",
        problem_rows=result.report.problem_rows,
        interrupted=result.signal is not None,
        dry_run=job.dry_run,
        shard=job.shard.label if job.shard is not None else None,
    )
    summary = {
        "input": job.source,
        "results": results,
        **result.report.to_dict(),
        "plan": None if result.plan is None else result.plan.to_dict(),
        "exit_code": code,
        "exit_reason": verdict,
        "advice": advice.lines,
        "next": advice.next.removeprefix("next: "),
    }
    if job.config.summary == "json":
        click.echo(logs.scrub(json.dumps(summary, default=str)))
    elif job.config.summary == "table":
        if job.dry_run and result.plan is not None:
            click.echo(result.plan.render())
        click.echo(render(result.report, "table", title=results))
        click.echo(f"exit {code}: {verdict}")
        for line in advice.lines:
            click.echo(logs.scrub(line))
        click.echo(logs.scrub(advice.next))
    _tell_others(job, summary)
    if result.stop_detail is not None:
        click.echo(f"pipeline: {logs.scrub(result.stop_detail)}", err=True)
    sys.exit(code)


def _tell_others(job: Job, summary: dict[str, Any]) -> None:
    """Notifications and metrics, once the results are written. Neither may change the
    run's outcome: a receiver that cannot be reached is a warning in the log."""
    config = job.config
    if config.notify:
        from pipeline.observe.notify import notify

        notify(config.notify, summary, when=config.notify_on)
    if config.metrics_file is not None or config.pushgateway is not None:
        from pipeline.observe.metrics import publish

        publish(summary, path=config.metrics_file, pushgateway=config.pushgateway)


def _job_and_tokens(
    input_path: str, options: dict[str, Any], *, output: str
) -> tuple[Job, Tokens | None]:
    """The invocation and its tokens from the command's options (also sets up logging).

    Shared by ``run``/``retry`` and ``check``, so a check reads the input, the tokens and
    the connection exactly as the run it precedes will. A command without ``--dry-run`` or
    ``--overwrite`` counts as not asking for them; without a token, only a dry run goes on.
    """
    given = {  # an option not given is None (a repeatable one, empty): not a value
        name: options[name]
        for name in RunConfig.model_fields
        if options.get(name) is not None and options.get(name) != ()
    }
    config = load_config(given, options["config_file"])
    for url in [*config.notify, config.pushgateway or ""]:
        logs.register_secret(url)  # a webhook's URL is its key
    log_level = logging.DEBUG if options["debug"] else logging.INFO
    tokens: Tokens | None
    if config.oauth_file is not None:
        if config.tokens_file is not None:
            raise UsageError("--oauth-file and --tokens-file: give one of them")
        from pipeline.auth.oauth import OAuthSource

        tokens = Tokens(oauth=OAuthSource.load(config.oauth_file, config.refresh_margin))
    elif config.tokens_file is not None:
        tokens = load_tokens_file(config.tokens_file, os.environ)
    else:
        token = _read_token(config.token_file, config.token_env)
        source = (
            f"--token-file {config.token_file}"
            if config.token_file is not None
            else f"{config.token_env} in the environment"
        )
        tokens = Tokens(default=token, default_source=source) if token else None
    from pipeline.inputs.shards import resolve_shard

    shard = resolve_shard(config.shard, config.shard_count, os.environ)
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
    job = Job(
        config=config,
        source=str(input_path),
        shard=shard,
        merge_into=merge_into,
        files=OutputFiles.of(output, config.state_dir),
        dry_run=options.get("dry_run", False),
        overwrite=options.get("overwrite", False),
        log_level=log_level,
        handle_signals=True,
    )
    if tokens is None and not job.dry_run:
        raise UsageError(
            f"no API token: set the environment variable {config.token_env} (or use --token-file)"
        )
    # After the usage errors, so that they reach the person (see _execute).
    logs.configure(config.log_format, level=log_level, log_file=config.log_file)
    return job, tokens


_CHECK_OPTIONS: list[Decorator] = [
    _CONFIG_FILE_OPTION,
    *_config_options(),
    click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="A table to read, or one JSON document for scripts.",
    ),
    _DEBUG_OPTION,
]


def _check_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_CHECK_OPTIONS):
        command = option(command)
    return command


@cli.command(
    no_args_is_help=True,
    cls=SectionedCommand,
    sections=RUN_SECTIONS,
    examples=(
        ("what a run of this file would meet: tokens, access, scopes, live limits, time",
         "pipeline check contacts.csv"),
        ("the same, for a script", "pipeline check contacts.csv --format json"),
    ),
    short_help="Ask the API, once per location, what a run would meet; create nothing.",
)  # fmt: skip
@click.argument("input", type=str)
@_check_options
def check(input: str, fmt: Literal["table", "json"], **options: Any) -> None:
    """Check, before a run, what it would meet: one search request per location of INPUT.

    Reads and validates INPUT like a run, then asks the API once per location whether its
    token is accepted, may use the location and may search, and what the live rate and
    daily limits are; estimates the sending time. Creates nothing. Exit 0 when every
    location can be sent (warnings allowed), 1 when one cannot, 2 for a usage error.
    """
    from pipeline.app.preflight import render as render_check
    from pipeline.app.preflight import run_check

    job, tokens = _job_and_tokens(input, options, output=os.devnull)
    assert tokens is not None  # _job_and_tokens refuses a missing token unless dry run
    outcome = run_check(job, tokens)
    click.echo(logs.scrub(render_check(outcome, fmt)))
    if outcome.unreachable is not None:
        line = f"{job.config.base_url}: cannot reach the API: {outcome.unreachable}"
        click.echo(f"pipeline: {logs.scrub(one_line(line))}", err=True)
    sys.exit(EXIT_OK if outcome.ready else EXIT_ROWS_NOT_DONE)


@cli.command(
    no_args_is_help=True,
    cls=SectionedCommand,
    sections=(("Options", ("statuses", "fmt", "output", "help")),),
    examples=(
        ("the summary of a run", "pipeline report out/results.parquet"),
        ("paste into a ticket", "pipeline report out/results.parquet --format markdown"),
        ("the problem rows as CSV: fix the IDs there, then run that file",
         "pipeline report out/results.parquet --rows failed,invalid,skipped --format csv "
         "-o out/problems.csv"),
        ("a page with charts, to open in a browser or attach (it fetches nothing)",
         "pipeline report out/results.parquet --format html -o out/report.html"),
    ),
    short_help="Summarise a results file, or list some of its rows.",
)  # fmt: skip
@click.argument("results", type=str)
@click.option(
    "--rows",
    "statuses",
    default=None,
    metavar="STATUSES",
    help="List the rows of these statuses or error codes (comma-separated, e.g. "
    "failed,invalid,skipped or id_not_found_yet; or all) instead of the summary.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown", "csv", "html"]),
    default="table",
    show_default=True,
    help="csv lists rows (all of them without --rows), with every column. html is one "
    "self-contained page with charts; with --rows, its table lists those rows.",
)
@click.option("-o", "--output", default=None, help="Write to FILE instead of standard output.")
def report(
    results: str,
    statuses: str | None,
    fmt: Literal["table", "json", "markdown", "csv", "html"],
    output: str | None,
) -> None:
    """Summarise a results file (statuses, error codes, locations, top failures, throughput),
    or list some of its rows: `pipeline report out/results.parquet --rows failed,invalid
    --format csv -o problems.csv`, fix the IDs there, and run that file. `--format html`
    writes the summary as one self-contained page with charts."""
    from pipeline.observe.report import build_report, read_results, render, render_rows, select_rows

    frame, run = read_results(results)
    if fmt == "html":
        from pipeline.observe.htmlreport import render_html

        listed = None if statuses is None else select_rows(frame, statuses)
        text = render_html(frame, run, title=str(results), listed=listed, listed_label=statuses)
    elif statuses is None and fmt != "csv":
        text = render(build_report(frame, run), fmt, title=str(results))
    else:
        text = render_rows(select_rows(frame, statuses or "all"), fmt)
    if output is None:
        click.echo(text.rstrip("\n"))
        return
    try:
        Path(output).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"-o {output}: cannot be written ({exc.strerror or exc})") from exc


@cli.command(
    no_args_is_help=True,
    cls=SectionedCommand,
    sections=(("Options", ("output", "overwrite", "help")),),
    examples=(
        ("the eight parts of a split run, once every task has finished",
         "pipeline merge 'out/results.part-*-of-00008.parquet' -o out/results.parquet"),
    ),
    short_help="Merge the results parts of a split run (--shard) into one results file.",
)  # fmt: skip
@click.argument("parts", type=str)
@click.option("-o", "--output", required=True, help="The one results file (Parquet).")
@click.option("--overwrite", is_flag=True, help="Replace an existing results file.")
def merge(parts: str, output: str, overwrite: bool) -> None:
    """Check that PARTS (a glob, a folder, or a URI) are every part of one split run, each
    once, holding every input row once, and write them as one results file in input order."""
    import polars as pl

    from pipeline.app.merging import merge as merge_parts
    from pipeline.inputs.earlier import results_exist
    from pipeline.observe.report import build_report, render

    require_parquet_name(output)
    state_dir = Path(".pipeline-state")
    if not overwrite and results_exist(OutputFiles.of(output, state_dir)):
        raise UsageError(f"{output}: the output exists; add --overwrite to replace it")
    run = merge_parts(parts, output, state_dir=state_dir)
    # The summary streams from the file just written: a merge of millions of rows holds
    # one range of them at a time, and so does this.
    click.echo(render(build_report(pl.scan_parquet(output), run), "table", title=output))


SANDBOX_PORT = 8099  # fixed, so the README's commands and a person's notes stay valid


@cli.command(
    cls=SectionedCommand,
    sections=(
        ("Serving", ("host", "port")),
        ("Tokens", ("tokens",)),
        ("Behaviour", ("rate", "daily_limit", "search_lag_s", "config_json", "help")),
        ("Latency", ("latency_ms", "latency_spread", "latency_sigma", "seed")),
    ),
    examples=(
        ("serve in the background, then paste the export line it prints",
         "pipeline sandbox &"),
        ("a free port and a real network's latency: median 80 ms, 1% over 400 ms",
         "pipeline sandbox --port 0 --latency-ms 80 --latency-sigma 0.7"),
        ("answers in 40 to 120 ms, evenly spread",
         "pipeline sandbox --latency-ms 80 --latency-spread 50%"),
        ("another token, allowed to create but not to search",
         "pipeline sandbox --token my-token --config-json "
         "'{\"token_scopes\": {\"my-token\": [\"conversations.write\"]}}'"),
    ),
    short_help="Serve a local imitation of HighLevel's API, to try runs without a token.",
)  # fmt: skip
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=SANDBOX_PORT,
    metavar="PORT",
    show_default=True,
    envvar="GHL_SANDBOX_PORT",
    show_envvar=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    metavar="ADDRESS",
    show_default=True,
    help="Address to listen on. Keep it loopback: the sandbox accepts well-known tokens.",
)
@click.option(
    "--token",
    "tokens",
    multiple=True,
    metavar="TOKEN",
    help="Accept this token too (repeatable). sandbox-token is always accepted.",
)
@click.option(
    "--rate",
    metavar="N/Ts",
    help="Per-location limit it announces and enforces [default: 100/10s]; 0: none.",
)
@click.option(
    "--daily-limit",
    type=click.IntRange(0),
    help="Requests per location per day [default: 200000]; 0: none.",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(0),
    metavar="MS",
    help="Each request's latency, half on its way in and half on the way back "
    "[default: 0]: the same every time, or the mean or median of the two below.",
)
@click.option(
    "--latency-spread",
    metavar="PCT",
    help="Vary it uniformly within +-PCT of --latency-ms: 50% (or 0.5) is 40-120 ms around 80.",
)
@click.option(
    "--latency-sigma",
    type=click.FloatRange(0),
    metavar="SIGMA",
    help="Vary it log-normally, median --latency-ms: a long tail as real networks have. "
    "0.5: 1% of answers over 3.2 x the median; 0.7: over 5 x.",
)
@click.option(
    "--search-lag-s",
    type=click.FloatRange(0),
    metavar="S",
    help="Seconds before a new conversation shows in search, as HighLevel's index lags "
    "behind creates [default: 5]; 0: at once.",
)
@click.option(
    "--seed",
    type=int,
    help="Seed of the latencies and injected faults, for a run to replay [default: 0].",
)
@click.option(
    "--config-json",
    metavar="JSON",
    help="Any other setting, as a JSON object: token_scopes, location_tokens, faults "
    "(fault_500, fault_drop, ...), latency_inbound_share. The flags win over it.",
)
def sandbox(
    port: int,
    host: str,
    tokens: tuple[str, ...],
    rate: str | None,
    daily_limit: int | None,
    latency_ms: float | None,
    latency_spread: str | None,
    latency_sigma: float | None,
    search_lag_s: float | None,
    seed: int | None,
    config_json: str | None,
) -> None:
    """Serve a local imitation of HighLevel's API on loopback, until Ctrl-C.

    It answers as the live API answers: the Version header, token scopes, the 422 body
    rules, "already exists" in the live wording, search, per-location and daily limits
    with their X-RateLimit-* headers and 429s, and a traceId on every answer. It accepts
    the token sandbox-token and every --token; a token listed in --config-json's
    token_scopes has only those scopes. When it is ready, it prints the line to paste
    into the shell that runs pipeline: export GHL_BASE_URL=... GHL_TOKEN=sandbox-token.
    """
    import errno

    from pipeline.sandbox.config import DEFAULT_TOKEN, config_from_options
    from pipeline.sandbox.server import serve

    try:
        config = config_from_options(
            config_json=config_json,
            rate=rate,
            latency_ms=latency_ms,
            latency_spread=latency_spread,
            latency_sigma=latency_sigma,
            search_lag_s=search_lag_s,
            seed=seed,
            daily_limit=daily_limit,
            extra_tokens=[DEFAULT_TOKEN, *tokens] if tokens else None,
        )
    except ValueError as exc:
        raise UsageError(f"sandbox: {exc}") from exc
    try:
        serve(config, host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"sandbox: port {port} on {host} is in use (another sandbox?); "
                "pick another with --port, or --port 0 for a free one"
            ) from exc
        raise


def _read_token(token_file: Path | None, token_env: str) -> str | None:
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
        token = (os.environ.get(token_env) or "").strip() or None
    if token is not None:
        if any(ch.isspace() for ch in token):
            logs.register_secret(token)
            raise UsageError("the token holds whitespace inside it; check its source")
        logs.register_secret(token)
    return token


def _temp_dir_for_polars(environ: MutableMapping[str, str]) -> None:
    """Polars finds its temporary folder through $HOME or $USER, and panics with neither
    (a container whose user has no passwd entry, a bare cron or systemd environment): name
    it, so such a run reads and writes its files like any other."""
    if not environ.get("HOME") and not environ.get("USER"):
        environ.setdefault("POLARS_TEMP_DIR", tempfile.gettempdir())


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every failure is one line on stderr, never a traceback
    (unless ``--debug``), and every message passes the same secret scrubbing as the logs."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    _temp_dir_for_polars(os.environ)
    try:
        cli.main(args=args, prog_name="pipeline", standalone_mode=False, obj={"argv": args})
    except UsageError as exc:
        _fail(str(exc), exc.exit_code, debug)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `pipeline`, `pipeline run`
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message(), EXIT_USAGE, debug)
    except (click.exceptions.Abort, KeyboardInterrupt):
        sys.exit(EXIT_SIGINT)
    except OSError as exc:  # disk full, permissions: say what and where, not how
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", EXIT_INTERNAL, debug)
    except Exception as exc:
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            EXIT_INTERNAL,
            debug,
        )


def _fail(message: str, code: int, debug: bool) -> None:
    if debug:
        click.echo(logs.scrub(traceback.format_exc()), err=True)
    click.echo(f"pipeline: error: {logs.scrub(one_line(message))}", err=True)
    sys.exit(code)

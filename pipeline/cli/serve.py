"""``pipeline sandbox``: the stand-in API, served until Ctrl-C (its code is ``sandbox/``;
only the options live here, with every other command's)."""

from __future__ import annotations

import click

from pipeline.cli.group import cli
from pipeline.cli.helpformat import SectionedCommand
from pipeline.core.errors import (
    UsageError,
)

SANDBOX_PORT = 8099  # fixed, so the README's commands and a person's notes stay valid


@cli.command(
    cls=SectionedCommand,
    sections=(
        ("Serving", ("host", "port")),
        ("Tokens", ("tokens",)),
        ("OAuth (a Marketplace app)", ("oauth_clients", "refresh_tokens", "installed",
                                       "access_token_ttl_s")),
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
        ("a Marketplace app: its client, a sub-account's and an agency's refresh tokens, and "
         "where the app is installed (then: pipeline run ... --oauth-file FILE)",
         "pipeline sandbox --oauth-client my-client:my-secret "
         "--refresh-token rt-acme=Location:tDtDnQdgm2LXpyiqYvZ6 "
         "--refresh-token rt-agency=Company:5DP4iH6HLkQsiKESj6rh "
         "--installed 5DP4iH6HLkQsiKESj6rh:ve9EPM428kjkvShlRW1K,AnJG67dOYPmbxTOG4cU1"),
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
    "--oauth-client",
    "oauth_clients",
    multiple=True,
    metavar="ID:SECRET",
    help="An OAuth client (the app's client_id and client_secret) that POST /oauth/token "
    "accepts (repeatable). None by default: no refresh is accepted.",
)
@click.option(
    "--refresh-token",
    "refresh_tokens",
    multiple=True,
    metavar="TOKEN=Location:ID|TOKEN=Company:ID",
    help="A refresh token it accepts once (each refresh answers a new one), for a "
    "sub-account's installation (Location:LOCATION_ID) or an agency's "
    "(Company:COMPANY_ID) (repeatable). The refresh_token of an --oauth-file.",
)
@click.option(
    "--installed",
    multiple=True,
    metavar="COMPANY:LOC,LOC",
    help="The sub-accounts of an agency where the app is installed, where its token mints "
    "location tokens (repeatable); elsewhere a mint is refused (400).",
)
@click.option(
    "--access-token-ttl-s",
    type=click.FloatRange(0, min_open=True),
    metavar="S",
    help="Lifetime of the access tokens it issues [default: 86399, a day].",
)
@click.option(
    "--config-json",
    metavar="JSON",
    help="Any other setting, as a JSON object: token_scopes, location_tokens, faults "
    "(fault_500, fault_drop, ...), latency_inbound_share, oauth_* (README, The sandbox). "
    "The flags win over it.",
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
    oauth_clients: tuple[str, ...],
    refresh_tokens: tuple[str, ...],
    installed: tuple[str, ...],
    access_token_ttl_s: float | None,
    config_json: str | None,
) -> None:
    """Serve a local imitation of HighLevel's API on loopback, until Ctrl-C.

    It answers as the live API answers: the Version header, token scopes, the 422 body
    rules, "already exists" in the live wording, search, per-location and daily limits
    with their X-RateLimit-* headers and 429s, and a traceId on every answer. It accepts
    the token sandbox-token and every --token; a token listed in --config-json's
    token_scopes has only those scopes. When it is ready, it prints the line to paste
    into the shell that runs pipeline: export GHL_BASE_URL=... GHL_TOKEN=sandbox-token.

    It plays a Marketplace app's OAuth too: give it the app's client (--oauth-client), the
    refresh tokens of its installations (--refresh-token) and an agency's installed
    sub-accounts (--installed), and write the same into an --oauth-file for pipeline run.
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
            oauth_clients=list(oauth_clients),
            refresh_tokens=list(refresh_tokens),
            installed=list(installed),
            access_token_ttl_s=access_token_ttl_s,
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

"""``pipeline oauth export-tokens``: a Marketplace app's location tokens, minted once for the
tasks of an array job (the work is ``app.exporting``'s)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

import click

from pipeline.cli.group import cli, export_options, job_and_tokens
from pipeline.cli.helpformat import RUN_SECTIONS, SectionedCommand
from pipeline.core import logs
from pipeline.core.errors import EXIT_OK, EXIT_ROWS_NOT_DONE

EXAMPLE = (
    "pipeline oauth export-tokens s3://BUCKET/imports/contacts.parquet "
    "--oauth-file /etc/pipeline/oauth.toml --min-lifetime 20h -o minted --mount-path /etc/ghl"
)


class _Examples(click.Group):
    """The group's help ends with an example to copy, as every command's does."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Examples"):
            formatter.write_text("# tokens for every location of an array job's input")
            formatter.write(" " * (formatter.current_indent + 2) + f"$ {EXAMPLE}\n")


@cli.group(
    cls=_Examples,
    short_help="A Marketplace app's tokens: export location tokens for an array job.",
)
def oauth() -> None:
    """A Marketplace app's OAuth tokens (--oauth-file), for what a run cannot do itself."""


@oauth.command(
    "export-tokens",
    no_args_is_help=True,
    cls=SectionedCommand,
    sections=(("Export", ("output", "min_lifetime", "mount_path")), *RUN_SECTIONS),
    examples=(
        ("tokens for every location of the job's input, living 20 hours at least", EXAMPLE),
    ),
    short_help="Mint a token per location of INPUT into files, with a tokens file naming them.",
)  # fmt: skip
@click.argument("input", type=str)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to write into (made 0700): one 0600 file per location token, named by "
    "the location id, and tokens.toml, the tokens file naming them.",
)
@click.option(
    "--min-lifetime",
    required=True,
    metavar="DURATION",
    help="Each token lives at least this long (20h, 90m, 3600s): a token held for less is "
    "refreshed or minted again. Longer than a new token lives is refused (exit 2).",
)
@click.option(
    "--mount-path",
    default=None,
    metavar="PATH",
    help="Where the tasks find the folder (a Secret's mount, /etc/ghl), for the paths in "
    "tokens.toml [default: the folder itself].",
)
@export_options
def export_tokens(
    input: str,
    output: Path,
    min_lifetime: str,
    mount_path: str | None,
    fmt: Literal["table", "json"],
    **options: Any,
) -> None:
    """Mint a location token for every location of INPUT (an array job's input) from the
    --oauth-file the runs use, for the job's tasks, which must not share that file.

    Reads INPUT as a run does. Each location gets a token that lives at least
    --min-lifetime: the one the file holds, refreshed, or minted from the agency's; the
    file is rewritten as a run rewrites it. Each token goes to a file of its own (0600),
    and tokens.toml names them in the format --tokens-file reads. A location that gets no
    token (not installed, refused) is listed with the reason. Exit 0 when every location
    has a token, 1 when some are left out, 2 for a usage error.
    """
    from pipeline.app.exporting import export_tokens as export
    from pipeline.app.exporting import parse_lifetime, render_export

    lifetime_s = parse_lifetime(min_lifetime)
    job, tokens = job_and_tokens(input, options, output=os.devnull)
    assert tokens is not None  # job_and_tokens refuses a missing token
    done = export(job, tokens, output, lifetime_s, mount_path)
    if fmt == "json":
        text = json.dumps(
            {
                "folder": str(done.folder),
                "tokens_file": str(done.tokens_file),
                "exported": [
                    {"location_id": e.location_id, "expires_at": e.expires_at.isoformat()}
                    for e in done.exported
                ],
                "left_out": [
                    {"location_id": o.location_id, "rows": o.rows, "reason": o.reason}
                    for o in done.left_out
                ],
            },
            indent=2,
        )
    else:
        text = render_export(done)
    click.echo(logs.scrub(text))
    sys.exit(EXIT_ROWS_NOT_DONE if done.left_out else EXIT_OK)

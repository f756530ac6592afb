"""``--help`` as a person reads it: options in named sections, the advanced ones last, then
a few examples to copy (as the GitHub CLI does), instead of one flat list of thirty-odd.

The sections name options by their parameter names. An option that no section names is
shown under "Other options", and a test keeps that section empty for every command, so a
new option cannot slip in unsorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

Sections = Sequence[tuple[str, Sequence[str]]]
Examples = Sequence[tuple[str, str]]  # (what it does, the command)

# The options of run, retry and check, in the order a person looks for them.
RUN_SECTIONS: Sections = (
    ("Input", ("contact_column", "location_column", "location_id", "override_location",
               "separator", "sheet", "keep_columns")),
    ("Output", ("output", "overwrite", "resume", "dry_run", "fail_on", "summary", "fmt")),
    ("Tokens", ("token_env", "token_file", "tokens_file", "oauth_file", "refresh_margin")),
    ("Sending", ("base_url", "api_version", "concurrency", "timeout")),
    ("Limits and retries", ("rate", "max_attempts", "max_retry_wait", "lookup_wait",
                            "daily_quota", "daily_reserve")),
    ("Logging and progress", ("log_format", "log_file", "progress", "debug")),
    ("Scheduled runs", ("known", "notify", "notify_on", "metrics_file", "pushgateway")),
    ("Array jobs", ("shard", "shard_count", "merge", "checkpoint_interval")),
    ("Advanced", ("config_file", "id_pattern", "id_max_length", "backoff_base", "workers",
                  "http_stack", "progress_interval", "state_dir", "allow_insecure_http",
                  "help")),
)  # fmt: skip


class SectionedCommand(click.Command):
    """A command whose help lists its options in ``sections`` and ends with ``examples``."""

    def __init__(
        self, *args: Any, sections: Sections = (), examples: Examples = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.sections = sections
        self.examples = examples

    def sectioned(self, ctx: click.Context) -> list[tuple[str, list[tuple[str, str]]]]:
        """(title, [(option, help)]) for every section that has options, in order."""
        records = {
            "help" if param is self.get_help_option(ctx) else param.name: record
            for param in self.get_params(ctx)
            if isinstance(param, click.Option)
            and param.name
            and (record := param.get_help_record(ctx)) is not None
        }
        shown: list[tuple[str, list[tuple[str, str]]]] = []
        for title, names in self.sections:
            rows = [records.pop(name) for name in names if name in records]
            if rows:
                shown.append((title, rows))
        if records:
            shown.append(("Other options", list(records.values())))
        return shown

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for title, rows in self.sectioned(ctx):
            with formatter.section(title):
                formatter.write_dl(rows)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if not self.examples:
            return
        with formatter.section("Examples"):
            for what, command in self.examples:
                formatter.write_text(f"# {what}")
                # Written as is, never rewrapped: a wrapped command would not paste.
                formatter.write(" " * (formatter.current_indent + 2) + f"$ {command}\n")


class FlowGroup(click.Group):
    """The top command: subcommands in the order a person uses them, not alphabetical, and
    a first example to start from."""

    # The order a person uses them in (the commands are defined over several modules).
    ORDER = ("run", "retry", "check", "report", "merge", "oauth", "sandbox")

    def list_commands(self, ctx: click.Context) -> list[str]:
        known = [name for name in self.ORDER if name in self.commands]
        return known + [name for name in self.commands if name not in self.ORDER]

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Start here"):
            for line in (
                "$ pipeline sandbox &          # a local API; paste the export line it prints",
                "$ pipeline run data/sample.csv -o out/results.parquet",
                "$ pipeline report out/results.parquet",
            ):
                formatter.write(" " * formatter.current_indent + line + "\n")
            formatter.write_text("Each command's --help lists its options and examples.")

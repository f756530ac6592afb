"""``pipeline report`` and ``pipeline merge``: what is done with results files once written."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from pipeline.cli.group import cli
from pipeline.cli.helpformat import SectionedCommand
from pipeline.core.errors import UsageError, plural
from pipeline.state.output_files import OutputFiles, require_parquet_name

if TYPE_CHECKING:
    import polars as pl


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
@click.option(
    "-o", "--output", default=None, metavar="FILE", help="Write to FILE instead of standard output."
)
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

    if output is not None:
        _check_report_output(output, results, fmt)
    frame, run = read_results(results)
    if fmt == "html":
        from pipeline.observe.htmlreport import render_html

        listed = None if statuses is None else select_rows(frame, statuses)
        text = render_html(
            frame,
            run,
            title=str(results),
            listed=listed,
            listed_label=statuses,
            advice=_advice(results, frame),
        )
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


_SUFFIX = {"table": "txt", "json": "json", "markdown": "md", "csv": "csv", "html": "html"}


def _check_report_output(output: str, results: str, fmt: str) -> None:
    """A report is text: it never replaces the results file it reads, nor any Parquet file
    (a results file named by mistake), nor takes a name that would pass for one."""
    target, name = Path(output), Path(output).name
    suggestion = f"name it {Path(name).stem}.{_SUFFIX[fmt]}"
    if target.exists() and Path(results).exists() and target.resolve() == Path(results).resolve():
        raise UsageError(f"-o {output}: is the results file being reported; {suggestion}")
    if name.lower().endswith(".parquet"):
        raise UsageError(f"-o {output}: a report is {fmt} text, not a results file; {suggestion}")
    try:
        with target.open("rb") as existing:
            parquet = existing.read(4) == b"PAR1"
    except OSError:
        parquet = False
    if parquet:
        raise UsageError(f"-o {output}: holds Parquet (a results file?); {suggestion}")


# Where the run's token came from is not in its results file: say so, and where it may be.
_UNRECORDED_SOURCE = (
    "the run's source (GHL_TOKEN, --token-file, --tokens-file or --oauth-file: the results "
    "file does not record which)"
)


def _advice(results: str, frame: pl.DataFrame) -> list[str]:
    """What to do next, as the run's summary says it, for the HTML page: the file records
    neither the run's command line nor where its tokens came from, so the lines say where
    a token may come from, and an interrupted run (whose summary gives a command) gets a line."""
    import polars as pl

    from pipeline.app.advice import advise
    from pipeline.core.outcomes import Code

    try:
        lines = advise(
            results,
            argv=None,
            token_source=lambda _: _UNRECORDED_SOURCE,
            problem_rows=0,
            interrupted=False,
            dry_run=False,
        ).lines
    except (pl.exceptions.PolarsError, OSError):  # parts of unlike schemas (a glob): none
        lines = []
    left = frame.filter(pl.col("error_code") == Code.INTERRUPTED.value).height
    if left:
        lines.append(
            f"interrupted: {plural(left, 'row', grouped=True)} not sent. Run the same "
            "command with --resume: it sends only the rows not yet sent."
        )
    return lines


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
    from pipeline.inputs.resuming import results_exist
    from pipeline.observe.report import build_report, render

    require_parquet_name(output)
    state_dir = Path(".pipeline-state")
    if not overwrite and results_exist(OutputFiles.of(output, state_dir)):
        raise UsageError(f"{output}: the output exists; add --overwrite to replace it")
    run = merge_parts(parts, output, state_dir=state_dir)
    # The summary streams from the file just written: a merge of millions of rows holds
    # one range of them at a time, and so does this.
    click.echo(render(build_report(pl.scan_parquet(output), run), "table", title=output))

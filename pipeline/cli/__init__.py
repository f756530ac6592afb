"""The command line: parse, call the application, print. ``pipeline`` (the console script)
is ``pipeline.cli:main``; ``--help`` is formatted in sections here; ``demo`` is ``make
run``'s sandbox-and-sample walk-through.

May import: ``app`` and everything below it. Imports nothing heavy at start-up: the commands
import polars and the sending stack only once their options hold (``--help`` stays under
0.3 s).
"""


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point (``pipeline.cli:main``), kept light: the commands are
    imported when called."""
    from pipeline.cli.commands import main as run_commands

    run_commands(argv)

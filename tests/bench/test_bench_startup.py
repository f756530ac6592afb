"""The start-up benchmark's pure parts: reading ``-X importtime``, the table from timings."""

from __future__ import annotations

from pathlib import Path

from bench.metrics import Table
from bench.startup import (
    HEAVY_IMPORTS,
    STARTUP_TARGET_S,
    Command,
    ImportTime,
    add_timings,
    importtime_notes,
    libraries,
    parse_importtime,
    startup_commands,
    top_cumulative,
    total_us,
)

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       130 |        130 |   _io
import time:       381 |        961 | _frozen_importlib_external
some other line on stderr
import time:       117 |        117 | pipeline
import time:     21000 |      90000 |         polars
import time:       300 |      40000 |       structlog
import time:       100 |        100 |       os
import time:        10 |         10 |         brotli
import time:        20 |      20000 |       _polars_runtime
import time:        50 |      95000 |     pipeline.core.logs
import time:      1523 |     432070 | pipeline.cli.commands
"""


def test_parse_importtime_reads_times_and_depth() -> None:
    imports = parse_importtime(IMPORTTIME)
    assert len(imports) == 10  # the header and the stray line are left out
    assert imports[0] == ImportTime("_io", 130, 130, 1)
    assert imports[1] == ImportTime("_frozen_importlib_external", 381, 961, 0)
    assert imports[3] == ImportTime("polars", 21000, 90000, 4)
    assert imports[-1] == ImportTime("pipeline.cli.commands", 1523, 432070, 0)
    assert parse_importtime("") == []


def test_top_cumulative_and_total() -> None:
    imports = parse_importtime(IMPORTTIME)
    assert [i.module for i in top_cumulative(imports, 3)] == [
        "pipeline.cli.commands",
        "pipeline.core.logs",
        "polars",
    ]
    assert total_us(imports) == 961 + 117 + 432070  # the outermost imports only


def test_libraries_are_third_party_packages_longest_first() -> None:
    names = [i.module for i in libraries(parse_importtime(IMPORTTIME))]
    assert names == ["polars", "structlog"]  # no stdlib, pipeline, _private, nor under 1 ms


def test_importtime_notes_name_the_top_imports() -> None:
    top, packages = importtime_notes(IMPORTTIME, 0.612)
    assert "pipeline.cli.commands 432 ms (self 2 ms, level 0)" in top
    assert "polars 90 ms (self 21 ms, level 4)" in top
    assert "polars 90 ms, structlog 40 ms" in packages
    assert "all imports of that run: 433 ms of its 0.612 s" in packages
    assert importtime_notes("nothing\n", 1.0) == [
        "python -X importtime -m pipeline --help printed no import times"
    ]


def test_add_timings_compares_with_python_pass_and_the_target() -> None:
    commands = [
        Command("python -c pass", ["python", "-c", "pass"]),
        Command("pipeline --help", ["pipeline", "--help"], target=True),
        Command("pipeline run --help", ["pipeline", "run", "--help"], target=True),
        Command("import polars", ["python", "-c", "import polars"], library=True),
        Command("import click", ["python", "-c", "import click"], library=True),
        Command("broken", ["false"]),
    ]
    times = {
        "python -c pass": [0.02, 0.01, 0.03],
        "pipeline --help": [0.61, 0.58, 0.70],
        "pipeline run --help": [0.2, 0.25, 0.1],
        "import polars": [0.31, 0.35, 0.30],
        "import click": [0.05, 0.04, 0.06],
        "broken": [],  # failed: no row
    }
    table = Table("5. Start-up")
    add_timings(table, commands, times)
    rows = {f.name: f for f in table.figures}
    assert list(rows) == [c.label for c in commands[:-1]]
    assert rows["python -c pass"].value == "0.020 s" and rows["python -c pass"].ok is None
    assert rows["pipeline --help"].value == "0.610 s (+0.590 s)"
    assert rows["pipeline --help"].target == f"< {STARTUP_TARGET_S:g} s"
    assert rows["pipeline --help"].verdict == "MISS"
    assert rows["pipeline run --help"].verdict == "PASS"
    assert rows["import polars"].ok is None
    assert "pipeline --help 0.580-0.700 s" in table.notes[0]
    assert (
        table.notes[1] == "a bare import alone at or over the 0.3 s target: import polars 0.310 s"
    )
    quiet = Table("5. Start-up")
    add_timings(quiet, commands, {**times, "import polars": [0.2]})
    assert quiet.notes[1] == "no library's bare import alone reaches the 0.3 s target"


def test_startup_commands(tmp_path: Path) -> None:
    commands = startup_commands(tmp_path)
    labels = [c.label for c in commands]
    assert labels[0] == "python -c pass"
    assert "python -m pipeline --help" in labels and "pipeline run --help" in labels
    usage = next(c for c in commands if "missing.csv" in c.label)
    assert usage.code == 2 and usage.target
    assert str(tmp_path / "missing.csv") in usage.argv  # nothing lands in the repository
    assert [c.label for c in commands if c.library] == [f"import {n}" for n in HEAVY_IMPORTS]
    assert all(c.code == 0 for c in commands if c is not usage)

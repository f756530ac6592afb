"""Benchmark 5: start-up. How long the CLI takes to print its help or a usage error, side by
side with ``python -c pass`` (the interpreter's own start) and with the bare import of each
library the CLI imports at start, so the figures say what the CLI adds and which library
alone stands in the way of the target; and ``python -X importtime`` of ``--help``, so the
next person sees which import costs what."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Options, failed_run, log
from bench.metrics import Table
from bench.processes import REPO, Child, child_env

# Target, from the issue: a command that only prints help or a usage error.
STARTUP_TARGET_S = 0.3
STARTUP_RUNS = 7  # counted runs of each command; one more round first warms the caches
IMPORTTIME_TOP = 10
# The libraries the CLI imports at start (``python -X importtime -m pipeline --help``).
HEAVY_IMPORTS = (
    "polars",
    "pydantic_settings",
    "click",
    "structlog",
    "aiohttp",
    "httpx",
    "rich",
    "orjson",
    "pyarrow",
)


@dataclass(frozen=True, slots=True)
class Command:
    """One command to time: what the table calls it, its argv, the exit code it must end
    with, and whether the start-up target applies to it."""

    label: str
    argv: list[str]
    code: int = 0
    target: bool = False
    library: bool = False  # the bare import of one library


@dataclass(frozen=True, slots=True)
class ImportTime:
    """One line of ``python -X importtime``: a module, the microseconds its own body took,
    those of it and every import it started, and how deep in the import chain it was."""

    module: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(stderr: str) -> list[ImportTime]:
    """The ``import time:`` lines of ``stderr``, in the order Python printed them (a module
    after the ones it imported); anything else on stderr is left out."""
    out: list[ImportTime] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header: "self [us] | cumulative | imported package"
        name = fields[2].removeprefix(" ")
        out.append(
            ImportTime(
                module=name.strip(),
                self_us=int(fields[0]),
                cumulative_us=int(fields[1]),
                depth=(len(name) - len(name.lstrip(" "))) // 2,
            )
        )
    return out


def top_cumulative(imports: Iterable[ImportTime], n: int) -> list[ImportTime]:
    """The ``n`` imports that took longest with everything they imported, longest first."""
    return sorted(imports, key=lambda i: i.cumulative_us, reverse=True)[:n]


def libraries(imports: Iterable[ImportTime], own: str = "pipeline") -> list[ImportTime]:
    """Each third-party package where it was first imported (not the stdlib, not ``own``,
    not a private module), longest first. One imported inside another counts in that one's
    time too. Those under a millisecond are left out: mostly optional imports that failed."""
    found: dict[str, ImportTime] = {}
    for i in imports:
        if "." in i.module or i.module.startswith("_") or i.module == own:
            continue
        if i.cumulative_us < 1000:
            continue
        if i.module not in sys.stdlib_module_names:
            found.setdefault(i.module, i)
    return top_cumulative(found.values(), len(found))


def total_us(imports: Iterable[ImportTime]) -> int:
    """All the import time of a run: the cumulative times of its outermost imports."""
    return sum(i.cumulative_us for i in imports if i.depth == 0)


def fmt_ms(us: float) -> str:
    return f"{us / 1000:,.0f} ms"


def startup_commands(work: Path) -> list[Command]:
    """``python -c pass``, the CLI's help and a usage error, and the bare imports."""
    python = sys.executable
    script = Path(python).parent / "pipeline"
    cli = [str(script)] if script.exists() else [python, "-m", "pipeline"]
    commands = [
        Command("python -c pass", [python, "-c", "pass"]),
        Command("python -m pipeline --help", [python, "-m", "pipeline", "--help"], target=True),
    ]
    if script.exists():
        commands.append(Command("pipeline --help (console script)", [*cli, "--help"], target=True))
    missing = [str(work / "missing.csv"), "-o", str(work / "x.parquet")]
    commands += [
        Command("pipeline run --help", [*cli, "run", "--help"], target=True),
        Command(
            "pipeline run missing.csv -o x.parquet, no token (exit 2)",
            [*cli, "run", *missing],
            code=2,
            target=True,
        ),
    ]
    # What the CLI's imports cost with no command run, and without the interpreter's
    # teardown of them at exit.
    commands += [
        Command("import pipeline.cli.commands", [python, "-c", "import pipeline.cli.commands"]),
        Command(
            "import pipeline.cli.commands, then os._exit(0) (no teardown)",
            [python, "-c", "import pipeline.cli.commands, os; os._exit(0)"],
        ),
    ]
    commands += [
        Command(f"import {name}", [python, "-c", f"import {name}"], library=True)
        for name in HEAVY_IMPORTS
    ]
    return commands


def bench_startup(options: Options, runs: int = STARTUP_RUNS) -> Table:
    """Benchmark 5: wall time of the CLI's help and a usage error, and of its libraries."""
    table = Table(
        f"5. Start-up: wall time from start to exit, median of {runs} runs, "
        "beside python -c pass and each library's bare import"
    )
    work = options.workdir / "startup"
    work.mkdir()
    commands = startup_commands(work)
    env = child_env(None)
    times: dict[str, list[float]] = {c.label: [] for c in commands}
    broken: set[str] = set()
    # Interleaved, so a noisy moment touches every command alike; round 0 is not counted.
    for round_ in range(1 + runs):
        log(f"startup: round {round_} of {runs}" + (" (warm-up)" if round_ == 0 else ""))
        for n, command in enumerate(commands):
            if command.label in broken:
                continue
            run = Child(command.argv, env, work, f"startup-{n}-{round_}", 60).wait()
            if run.timed_out or run.code != command.code:
                failed_run(table, command.label, run)
                broken.add(command.label)
            elif round_ > 0:
                times[command.label].append(run.wall_s)
    table.notes.append(
        f"each command run {runs} times, interleaved, after one round not counted (caches "
        "warm); wall time from spawn to reaped; (+x) is the time above python -c pass, the "
        f"interpreter's own start; {_shown(sys.executable)}, environment without GHL_* "
        "settings"
    )
    add_timings(table, commands, times)
    argv = [sys.executable, "-X", "importtime", "-m", "pipeline", "--help"]
    run = Child(argv, env, work, "importtime", 60).wait()
    if run.timed_out or run.code != 0:
        failed_run(table, "python -X importtime -m pipeline --help", run)
    else:
        table.notes.extend(
            importtime_notes(run.stderr_path.read_text(errors="replace"), run.wall_s)
        )
    return table


def _shown(path: str) -> str:
    """``path`` from the repository's root where it is inside it."""
    try:
        return str(Path(path).relative_to(REPO))
    except ValueError:
        return path


def add_timings(table: Table, commands: Sequence[Command], times: dict[str, list[float]]) -> None:
    """A row per command that ran: its median, and its excess over the first command's
    (``python -c pass``); the notes: the spread, and any library over the target alone."""
    medians = {label: statistics.median(ts) for label, ts in times.items() if ts}
    base = medians.get(commands[0].label)
    for command in commands:
        if command.label not in medians:
            continue
        value = medians[command.label]
        text = f"{value:.3f} s"
        if base is not None and command is not commands[0]:
            text += f" (+{value - base:.3f} s)"
        if command.target:
            table.add(command.label, text, f"< {STARTUP_TARGET_S:g} s", value < STARTUP_TARGET_S)
        else:
            table.add(command.label, text)
    table.notes.append(
        "spread (min-max): "
        + ", ".join(f"{label} {min(ts):.3f}-{max(ts):.3f} s" for label, ts in times.items() if ts)
    )
    over = [
        f"{c.label} {medians[c.label]:.3f} s"
        for c in commands
        if c.library and medians.get(c.label, 0.0) >= STARTUP_TARGET_S
    ]
    if over:
        table.notes.append(
            f"a bare import alone at or over the {STARTUP_TARGET_S:g} s target: " + ", ".join(over)
        )
    else:
        table.notes.append(
            f"no library's bare import alone reaches the {STARTUP_TARGET_S:g} s target"
        )


def importtime_notes(stderr: str, wall_s: float) -> list[str]:
    """From ``python -X importtime -m pipeline --help``: its top imports by cumulative time,
    and the third-party packages as the CLI imports them."""
    imports = parse_importtime(stderr)
    if not imports:
        return ["python -X importtime -m pipeline --help printed no import times"]
    top = "; ".join(
        f"{i.module} {fmt_ms(i.cumulative_us)} (self {fmt_ms(i.self_us)}, level {i.depth})"
        for i in top_cumulative(imports, IMPORTTIME_TOP)
    )
    packages = ", ".join(
        f"{i.module} {fmt_ms(i.cumulative_us)}" for i in libraries(imports)[:IMPORTTIME_TOP]
    )
    return [
        f"python -X importtime -m pipeline --help, top {IMPORTTIME_TOP} imports by cumulative "
        f"time (level: depth in the import chain, 0 = imported by the command itself): {top}",
        f"the same run, the top {IMPORTTIME_TOP} third-party packages where first imported, "
        f"cumulative (one imported inside another counts in both): {packages}; all imports "
        f"of that run: {fmt_ms(total_us(imports))} of its {wall_s:.3f} s (importtime's "
        "own logging adds to both)",
    ]

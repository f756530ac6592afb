"""Every shell block of README.md works when pasted in order on a fresh clone.

A shell block is a fenced block whose info string is ``sh``. The blocks run in order in one
bash process, as a person pasting them into one terminal would (``export`` and ``cd`` carry
from one block to the next), each with ``set -euo pipefail`` and a time limit, in a copy of
the repository that looks like a fresh clone after ``make``. The sandbox never runs on its
fixed port 8099: the test picks a free port, gives it to the shell as ``GHL_SANDBOX_PORT``
and rewrites ``127.0.0.1:8099`` and ``--port 8099`` in the blocks.

A block that cannot run here (object storage, systemd, a real token) is marked by a line
``<!-- not run: REASON -->`` right above it (blank lines between are allowed), and is only
checked for syntax with ``bash -n``. An unmarked block that fails fails the test.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
FIXED_PORT = 8099
BLOCK_TIMEOUT = 120.0  # seconds a block may take
PORT_WAIT = 10.0  # seconds a block's background server has to start listening
MARK_HINT = "<!-- not run: REASON -->"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*not run:(?P<reason>.*?)-->\s*$")
_MARKER_LIKE = re.compile(r"^\s*<!--\s*not[\s-]*run", re.IGNORECASE)
# Shell languages a block must not be labelled with: the test would not see such a block.
_OTHER_SHELLS = {"bash", "shell", "zsh", "console", "shell-session", "shellsession"}
_FIXED_PORT_FORMS = re.compile(rf"(127\.0\.0\.1:|--port[ =]){FIXED_PORT}\b")
# A `&` that sends a command to the background: not `&&`, `>&`, `&>`, `|&`.
_BACKGROUND = re.compile(r"(?<![&>|<])&(?![&>])(?=\s|$)")


@dataclass(frozen=True)
class Block:
    """One shell block of a Markdown file."""

    line: int  # 1-based line of the opening fence
    text: str  # the lines inside the fences, with the fence's indentation removed
    skip: str | None  # the reason of its `<!-- not run: REASON -->` marker; None: it runs


class ReadmeError(ValueError):
    """The Markdown breaks the conventions (a stray or empty marker, an unclosed fence)."""


def shell_blocks(markdown: str) -> list[Block]:
    """The ``sh`` blocks of ``markdown`` in order, each with its marker's reason, if any.

    Raises ReadmeError naming every line that breaks the conventions: a marker that is not
    followed by a shell block, a marker without a reason, a fence never closed, or a shell
    block labelled ``bash``/``shell``/... instead of ``sh`` (which this test would not see).
    """
    blocks: list[Block] = []
    problems: list[str] = []
    pending: tuple[int, str] | None = None  # a marker's line and reason, awaiting its block
    lines = markdown.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        fence = _FENCE.match(line)
        if fence is None:
            if not line.strip():
                continue
            if pending is not None:
                problems.append(f"line {pending[0]}: the marker is not followed by a ```sh block")
                pending = None
            marker = _MARKER.match(line)
            if marker is not None:
                reason = marker.group("reason").strip()
                if not reason:
                    problems.append(f"line {number}: the marker gives no reason: {MARK_HINT}")
                pending = (number, reason)
            elif _MARKER_LIKE.match(line):
                problems.append(f"line {number}: a malformed marker; write {MARK_HINT}")
            continue
        opened = number
        indent = len(fence.group("indent").expandtabs())
        char, width = fence.group("fence")[0], len(fence.group("fence"))
        words = fence.group("info").split()
        info = words[0].lower() if words else ""
        closing = re.compile(rf"^[ \t]*{re.escape(char)}{{{width},}}[ \t]*$")
        body: list[str] = []
        while number < len(lines) and not closing.match(lines[number]):
            body.append(_dedent(lines[number], indent))
            number += 1
        if number >= len(lines):
            problems.append(f"line {opened}: the fence is never closed")
            break
        number += 1  # the closing fence
        reason = pending[1] if pending is not None else None
        if info == "sh":
            blocks.append(Block(opened, "".join(f"{text}\n" for text in body), reason))
        else:
            if pending is not None:
                problems.append(
                    f"line {pending[0]}: the marker is followed by a ```{info} block, "
                    "not a ```sh block"
                )
            if info in _OTHER_SHELLS:
                problems.append(
                    f"line {opened}: a ```{info} block; label shell commands ```sh "
                    "(and transcripts ```text) so this test runs them"
                )
        pending = None
    if pending is not None:
        problems.append(f"line {pending[0]}: the marker is not followed by a ```sh block")
    if problems:
        raise ReadmeError("; ".join(problems))
    return blocks


def _dedent(line: str, indent: int) -> str:
    """Remove up to ``indent`` columns of leading whitespace, as Markdown does in a fence."""
    removed = 0
    while removed < indent and line[:1] in (" ", "\t"):
        removed += 4 - removed % 4 if line[0] == "\t" else 1
        line = line[1:]
    return line


def for_port(text: str, port: int) -> str:
    """``text`` with the sandbox's fixed port rewritten to ``port``."""
    return _FIXED_PORT_FORMS.sub(lambda match: f"{match.group(1)}{port}", text)


def starts_background(text: str) -> bool:
    """Whether a line of ``text`` sends a command to the background with ``&``."""
    for line in text.splitlines():
        code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        if _BACKGROUND.search(code):
            return True
    return False


def free_port() -> int:
    """A loopback port nobody listens on now (never the fixed one)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != FIXED_PORT:
            return port


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


class BlockFailed(AssertionError):
    """A block failed; ``output`` is what it printed (stdout and stderr, interleaved)."""

    def __init__(self, reason: str, output: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.output = output


class Shell:
    """One bash process that runs blocks the way a person pastes them into one terminal.

    Blocks run in the shell itself (sourced, stdin from /dev/null), so ``cd`` and
    ``export`` carry over. Before each block the shell sets ``set -euo pipefail``; a failing
    command therefore ends the shell, which is how a failure is seen. After each block the
    shell prints a marker line, so the output of each block is known. The shell leads a new
    process group, and ``close`` ends the whole group: whatever a block started in the
    background goes too.
    """

    def __init__(self, cwd: Path, env: dict[str, str], scripts: Path) -> None:
        self._scripts = scripts
        self._mark = f"@@readme-block-done-{uuid.uuid4().hex}@@"
        self._count = 0
        scripts.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace"))
        self._lines.put(None)

    def run(self, name: str, text: str, timeout: float = BLOCK_TIMEOUT) -> str:
        """Run ``text`` in the shell and return its output; BlockFailed if it fails."""
        self._count += 1
        script = self._scripts / f"{name}.sh"
        script.write_text(text, encoding="utf-8")
        done = f"{self._mark} {self._count}"
        command = (
            "set -euo pipefail\n"
            f". {shlex.quote(str(script))} </dev/null\n"
            f"printf '%s\\n' {shlex.quote(done)}\n"
        )
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(command.encode())
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise BlockFailed("the shell had already exited", "") from None
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BlockFailed(f"it did not finish within {timeout:g} s", "".join(output))
            try:
                line = self._lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self._proc.poll() is None:
                    continue
                # The shell is gone, but a background process may hold the pipe open.
                output.extend(self.drain(0.5))
                raise BlockFailed(self._exit_reason(), "".join(output)) from None
            if line is None:
                self._proc.wait(timeout=10)
                raise BlockFailed(self._exit_reason(), "".join(output))
            if done in line:
                output.append(line[: line.index(done)])
                return "".join(output)
            output.append(line)

    def _exit_reason(self) -> str:
        code = self._proc.returncode
        if code == 0:
            return "the shell exited (status 0) in this block: a pasted `exit` closes the terminal"
        return f"a command failed (exit status {code})"

    def drain(self, seconds: float) -> list[str]:
        lines: list[str] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            lines.append(line)
        return lines

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        """End the shell and everything in its process group (a background sandbox too)."""
        group = self._proc.pid
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
            deadline = time.monotonic() + grace
            while group_alive(group) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not group_alive(group):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self._reader.join(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def group_alive(group: int) -> bool:
    """Whether a process of ``group`` still runs (zombies waiting to be reaped do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == group:
            return True
    return False


@contextlib.contextmanager
def shell(cwd: Path, env: dict[str, str], scripts: Path) -> Iterator[Shell]:
    session = Shell(cwd, env, scripts)
    try:
        yield session
    finally:
        session.close()


def clean_env(home: Path, port: int) -> dict[str, str]:
    """A minimal environment: no GHL_* variable of the developer's, no activated venv."""
    path = [
        entry
        for entry in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if entry and not Path(entry).resolve().is_relative_to(REPO)
    ]
    return {
        "PATH": os.pathsep.join(path),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "GHL_SANDBOX_PORT": str(port),
    }


def describe(block: Block, text: str, reason: str, output: str) -> str:
    shown = "".join(f"    {line}\n" for line in text.splitlines()) or "    (empty)\n"
    said = "".join(f"    {line}\n" for line in output.splitlines()) or "    (nothing)\n"
    return (
        f"README.md line {block.line}: the ```sh block failed: {reason}\n"
        f"the block, as run:\n{shown}"
        f"its output:\n{said}"
        "Fix the README so that the block works when pasted in order on a fresh clone, or, if "
        f"it truly cannot run here, put a line {MARK_HINT} right above it."
    )


def run_blocks(
    blocks: list[Block],
    cwd: Path,
    scratch: Path,
    port: int,
    timeout: float = BLOCK_TIMEOUT,
    port_wait: float = PORT_WAIT,
) -> list[str]:
    """Run the unmarked blocks in order in one shell; return one log line per block.

    Raises BlockFailed whose message names the failing block, its text and its output.
    """
    home = scratch / "home"
    home.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    with shell(cwd, clean_env(home, port), scratch / "blocks") as session:
        for block in blocks:
            first = block.text.strip().splitlines()[0] if block.text.strip() else ""
            if block.skip is not None:
                log.append(f"line {block.line}: not run ({block.skip}): {first}")
                continue
            text = for_port(block.text, port)
            if re.search(rf"\b{FIXED_PORT}\b", text):
                reason = f"it names the fixed port {FIXED_PORT} in a form the test cannot redirect"
                raise BlockFailed(describe(block, text, reason, ""), "")
            try:
                output = session.run(f"README.md-line-{block.line}", text, timeout)
            except BlockFailed as failed:
                raise BlockFailed(
                    describe(block, text, failed.reason, failed.output), failed.output
                ) from None
            if starts_background(text):
                deadline = time.monotonic() + port_wait
                while not listening(port) and time.monotonic() < deadline and session.alive():
                    time.sleep(0.1)
                if not listening(port):
                    output += "".join(session.drain(0.2))
                    reason = (
                        f"it starts something in the background, but nothing listens on "
                        f"127.0.0.1:{port} (GHL_SANDBOX_PORT) after {port_wait:g} s"
                    )
                    raise BlockFailed(describe(block, text, reason, output), output)
            log.append(f"line {block.line}: ran: {first}")
    return log


def fresh_clone(dest: Path) -> Path:
    """A copy of the work tree as a fresh clone after ``make`` sees it.

    The files git tracks (and new files not yet added, so a commit in the making is
    tested whole) are copied with their times, and ``.venv`` and ``.tools`` are links to
    the repository's. The copies are made no newer than the install, so ``make install``
    in the copy is a no-op, as it is after ``make``: make must never run ``uv sync`` through
    the link into the repository's ``.venv``.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:
        pytest.skip(f"not a git work tree: {listed.stderr.decode(errors='replace').strip()}")
    installed = REPO / ".venv" / "bin" / "pipeline"
    if not installed.exists():
        pytest.skip("needs the repository's .venv: run `make install` first")
    install_time = installed.stat().st_mtime_ns
    dest.mkdir(parents=True)
    for name in sorted({name for name in listed.stdout.decode().split("\0") if name}):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree, not yet in a commit
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        if not target.is_symlink():
            stat = target.stat()
            if stat.st_mtime_ns > install_time:
                os.utime(target, ns=(stat.st_atime_ns, install_time))
    for name in (".venv", ".tools"):
        if (REPO / name).exists():
            (dest / name).symlink_to(REPO / name, target_is_directory=True)
    if shutil.which("make") is not None:
        question = subprocess.run(
            ["make", "-q", "install"], cwd=dest, capture_output=True, text=True, check=False
        )
        assert question.returncode == 0, (
            "`make install` would not be a no-op in the copy (is .tools/bin/uv newer than "
            ".venv/bin/pipeline, or .tools missing?): run `make install` in the repository; "
            "this test never installs into the repository's .venv\n"
            + question.stdout
            + question.stderr
        )
    return dest


# -- README.md itself ------------------------------------------------------------------------


def test_readme_blocks_syntax() -> None:
    """Every shell block, marked or not, is valid bash."""
    blocks = shell_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```sh block"
    problems = []
    for block in blocks:
        checked = subprocess.run(
            ["bash", "-n"], input=block.text, capture_output=True, text=True, check=False
        )
        if checked.returncode != 0:
            problems.append(f"README.md line {block.line}:\n{block.text}{checked.stderr}")
    assert not problems, "shell blocks bash -n refuses:\n" + "\n".join(problems)


def test_readme_blocks_run_in_order(tmp_path: Path) -> None:
    """The unmarked shell blocks, pasted in order into one terminal on a fresh clone, work."""
    blocks = shell_blocks(README.read_text(encoding="utf-8"))
    assert any(block.skip is None for block in blocks), (
        "every ```sh block of README.md is marked not run: the test would pass vacuously"
    )
    clone = fresh_clone(tmp_path / "pipeline")
    port = free_port()
    try:
        log = run_blocks(blocks, clone, tmp_path, port)
    except BlockFailed as failed:
        pytest.fail(str(failed), pytrace=False)
    print("\n".join(log))
    assert not listening(port), f"something still listens on 127.0.0.1:{port}"


# -- the parser ------------------------------------------------------------------------------

SNIPPET = """\
# Title

```sh
make run
```

<!-- not run: needs a real token -->

```sh
export GHL_TOKEN='pit-...'
.venv/bin/pipeline run contacts.csv -o results/contacts.parquet
```

```text
$ pipeline run data/sample.csv -o out/plan.parquet --dry-run
```

- a list item:

  ```sh
  .venv/bin/pipeline report out/results.parquet \\
      --format json
  ```

```toml
[tokens]
```
"""


def test_parser_finds_sh_blocks_their_lines_and_markers() -> None:
    assert shell_blocks(SNIPPET) == [
        Block(3, "make run\n", None),
        Block(
            9,
            "export GHL_TOKEN='pit-...'\n"
            ".venv/bin/pipeline run contacts.csv -o results/contacts.parquet\n",
            "needs a real token",
        ),
        Block(20, ".venv/bin/pipeline report out/results.parquet \\\n    --format json\n", None),
    ]


def test_parser_marker_directly_above_without_blank_line() -> None:
    text = "<!-- not run: systemd -->\n```sh\nsystemctl start x\n```\n"
    assert shell_blocks(text) == [Block(2, "systemctl start x\n", "systemd")]


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("<!-- not run: s3 -->\nSome prose.\n\n```sh\nls\n```\n", "line 1: the marker is not"),
        ("<!-- not run: s3 -->\n```text\nls\n```\n", "followed by a ```text block"),
        ("```sh\nls\n```\n\n<!-- not run: s3 -->\n", "line 5: the marker is not followed"),
        ("<!-- not run:   -->\n```sh\nls\n```\n", "line 1: the marker gives no reason"),
        ("<!-- not run -->\n```sh\nls\n```\n", "line 1: a malformed marker"),
        ("<!-- NOT RUN s3 -->\n```sh\nls\n```\n", "line 1: a malformed marker"),
        ("```sh\nls\n", "line 1: the fence is never closed"),
        ("```bash\nls\n```\n", "line 1: a ```bash block"),
    ],
)
def test_parser_refuses_what_breaks_the_conventions(markdown: str, message: str) -> None:
    with pytest.raises(ReadmeError, match=re.escape(message)):
        shell_blocks(markdown)


def test_parser_ignores_other_blocks_and_markers_inside_fences() -> None:
    text = (
        "```text\n<!-- not run: inside -->\n```\n"
        "````md\n```sh\nnot a block\n```\n````\n"
        "```python\nprint(1)\n```\n"
    )
    assert shell_blocks(text) == []


def test_port_substitution() -> None:
    text = (
        ".venv/bin/pipeline sandbox --port 8099 &\n"
        "pipeline run x.csv --base-url http://127.0.0.1:8099\n"
        "pipeline sandbox --port=8099\n"
        "echo 127.0.0.1:80990 18099\n"
    )
    assert for_port(text, 40123) == (
        ".venv/bin/pipeline sandbox --port 40123 &\n"
        "pipeline run x.csv --base-url http://127.0.0.1:40123\n"
        "pipeline sandbox --port=40123\n"
        "echo 127.0.0.1:80990 18099\n"
    )


@pytest.mark.parametrize(
    ("text", "background"),
    [
        (".venv/bin/pipeline sandbox &\n", True),
        ("sleep 1 & echo started\n", True),
        ("make run && make test\n", False),
        ("pipeline run x 2>&1 | tee log\n", False),
        ("pipeline run x &>/dev/null\n", False),
        ("pipeline run x  # not & here\n", False),
        ("# pipeline sandbox &\n", False),
    ],
)
def test_background_detection(text: str, background: bool) -> None:
    assert starts_background(text) is background


# -- the runner ------------------------------------------------------------------------------


def test_runner_carries_cd_and_export_and_names_the_failing_block(tmp_path: Path) -> None:
    markdown = (
        "```sh\nexport GREETING=hello\nmkdir -p sub && cd sub\n```\n\n"
        '```sh\ntest "$GREETING" = hello\ntest "$(basename "$PWD")" = sub\n'
        'test -z "${GHL_TOKEN:-}"\necho seen\n```\n\n'
        "<!-- not run: would fail -->\n```sh\nfalse\n```\n\n"
        "```sh\necho before\nfalse\necho after\n```\n"
    )
    blocks = shell_blocks(markdown)
    (tmp_path / "work").mkdir()
    with pytest.raises(BlockFailed) as failed:
        run_blocks(blocks, tmp_path / "work", tmp_path, free_port(), timeout=30)
    message = str(failed.value)
    assert message.startswith("README.md line 18: the ```sh block failed: a command failed")
    assert "    echo before\n    false\n" in message
    assert "its output:\n    before\n" in message
    assert "after" not in failed.value.output
    assert MARK_HINT in message


def test_runner_pipefail_and_unset_variables(tmp_path: Path) -> None:
    for text in ("false | cat\n", "echo $NOT_SET_ANYWHERE\n"):
        with pytest.raises(BlockFailed):
            run_blocks([Block(1, text, None)], tmp_path, tmp_path, free_port(), timeout=30)


def test_runner_times_out_and_leaves_nothing_running(tmp_path: Path) -> None:
    block = Block(7, f"echo $$ > {tmp_path}/shell.pid\nsleep 60\n", None)
    started = time.monotonic()
    with pytest.raises(BlockFailed, match="did not finish within 1 s"):
        run_blocks([block], tmp_path, tmp_path, free_port(), timeout=1)
    assert time.monotonic() - started < 20  # the block's sleep is 60 s: it was cut short
    assert not group_alive(int((tmp_path / "shell.pid").read_text()))


def test_runner_waits_for_a_background_server_on_the_free_port_then_stops_it(
    tmp_path: Path,
) -> None:
    python = shlex.quote(sys.executable)
    markdown = (
        f'```sh\n{python} -m http.server --bind 127.0.0.1 "$GHL_SANDBOX_PORT" &\n'
        f"echo $$ > {tmp_path}/shell.pid\n```\n\n"
        f"```sh\n{python} -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1])' "
        "http://127.0.0.1:8099/\n```\n"
    )
    port = free_port()
    log = run_blocks(shell_blocks(markdown), tmp_path, tmp_path, port, timeout=30)
    assert [entry.split(":")[0] for entry in log] == ["line 1", "line 6"]
    assert not group_alive(int((tmp_path / "shell.pid").read_text()))
    assert not listening(port)


def test_runner_refuses_a_background_block_whose_server_never_listens(tmp_path: Path) -> None:
    with pytest.raises(BlockFailed, match="nothing listens on"):
        run_blocks([Block(3, "sleep 30 &\n", None)], tmp_path, tmp_path, free_port(), 30, 1)


def test_runner_refuses_the_fixed_port_in_other_forms(tmp_path: Path) -> None:
    block = Block(3, "curl http://localhost:8099/\n", None)
    with pytest.raises(BlockFailed, match="names the fixed port 8099"):
        run_blocks([block], tmp_path, tmp_path, free_port(), 30)

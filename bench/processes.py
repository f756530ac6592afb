"""The processes the harness runs and watches: the sandbox, the pipeline, a child whose
peak RSS and CPU ``wait4`` collects, and a sampler of CPU time.

``python -m bench.processes REPORT -- PROGRAM [ARGS...]`` is the small launcher that
measures one program's own peak RSS and CPU (see ``run_child``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.metrics import Request, cpu_share, parse_requests
from bench.network import Network

REPO = Path(__file__).resolve().parent.parent
TOKEN = "sandbox-token"  # noqa: S105 - the sandbox's public demo token
LOOPBACK = "127.0.0.1"
_LISTENING = re.compile(r"listening on (http://\S+)")
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def child_env(token: str | None) -> dict[str, str]:
    """The environment for a child: no GHL_* settings, no proxies, the token if wanted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHL_") and k not in _PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = f"{LOOPBACK},localhost"
    env["PYTHONUNBUFFERED"] = "1"
    if token is not None:
        env["GHL_TOKEN"] = token
    return env


def require_loopback(url: str) -> str:
    """Refuse any URL that is not plain http on 127.0.0.1: benchmarks never leave the box."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != LOOPBACK:
        raise ValueError(f"benchmark traffic must stay on http://{LOOPBACK}, got {url!r}")
    return url.rstrip("/")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int, *, tree: bool = False) -> float | None:
    """User + system CPU seconds of a process (plus its reaped children, and with ``tree``
    its live descendants); None once it is gone."""
    fields = _proc_stat(pid)
    if fields is None:
        return None
    total = sum(int(x) for x in fields[11:15])
    if tree:
        parents = {pid}
        stats: dict[int, list[str]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != pid:
                child = _proc_stat(int(entry.name))
                if child is not None:
                    stats[int(entry.name)] = child
        grew = True
        while grew:
            grew = False
            for other, st in stats.items():
                if other not in parents and int(st[1]) in parents:
                    parents.add(other)
                    total += sum(int(x) for x in st[11:13])
                    grew = True
    return total / _TICK


def machine_busy_s() -> float | None:
    """CPU seconds all cores together spent busy (not idle, not waiting) since boot."""
    try:
        with Path("/proc/stat").open() as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7)) / _TICK


MACHINE = "machine"


class CpuSampler:
    """Samples the CPU time of named processes every ``interval_s`` on a daemon thread.

    Sample times are ``time.monotonic()``, the clock the sandbox stamps requests with, so
    a process's CPU share can be read over exactly the window the request log shows.
    ``MACHINE`` is sampled too: the busy time of all cores together.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self._interval = interval_s
        self._watched: dict[str, tuple[int, bool]] = {}
        self._ended: set[str] = set()
        self.samples: dict[str, list[tuple[float, float]]] = {MACHINE: []}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def watch(self, name: str, pid: int, *, tree: bool = False) -> None:
        with self._lock:
            self._watched[name] = (pid, tree)
            self.samples[name] = []
        self._sample_once()

    def finish(self, name: str, ended: float, cpu_s: float) -> None:
        """The last point of a process that ended: its total CPU (from ``wait4``) at exit."""
        with self._lock:
            self._watched.pop(name, None)
            self._ended.add(name)
            self.samples.setdefault(name, []).append((ended, cpu_s))

    def _sample_once(self) -> None:
        with self._lock:
            watched = dict(self._watched)
        busy = machine_busy_s()
        if busy is not None:
            now = time.monotonic()
            with self._lock:
                self.samples[MACHINE].append((now, busy))
        for name, (pid, tree) in watched.items():
            cpu = process_cpu_s(pid, tree=tree)
            now = time.monotonic()
            if cpu is not None:
                with self._lock:
                    if name in self._watched:
                        self.samples[name].append((now, cpu))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample_once()

    def share(self, name: str, start: float, end: float) -> float | None:
        with self._lock:
            samples = sorted(self.samples.get(name, []))  # two threads append
            ended = name in self._ended
        return cpu_share(samples, start, end, ended=ended)

    def __enter__(self) -> CpuSampler:
        self._sample_once()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True, slots=True)
class Finished:
    """A child process that ran to its end (or was killed at its deadline)."""

    argv: list[str]
    code: int
    ended: float  # time.monotonic() when reaped
    wall_s: float
    max_rss_bytes: int
    cpu_s: float
    timed_out: bool
    stdout_path: Path
    stderr_path: Path

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_tail(self, lines: int = 5) -> str:
        text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])


class Child:
    """A child process whose resource usage is collected by ``wait4`` when it ends.

    ``wait4`` gives this very child's peak RSS and CPU time (and those of the children it
    reaped), which is what the scale benchmark reports. The child leads its own process
    group, so a deadline kill takes its helpers with it.
    """

    def __init__(
        self, argv: list[str], env: Mapping[str, str], workdir: Path, name: str, deadline_s: float
    ) -> None:
        self.argv = argv
        self.deadline_s = deadline_s
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, env=dict(env), cwd=REPO, start_new_session=True
            )
        self._status: tuple[int, Any] | None = None
        self.ended = math.nan
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _reap(self) -> None:
        _pid, status, usage = os.wait4(self.proc.pid, 0)
        self.ended = time.monotonic()
        self._status = (status, usage)

    def kill(self) -> None:
        """SIGKILL the child's process group (it and any helpers it started), if still there.

        Asks ``_status`` rather than ``Thread.is_alive()``: after a join interrupted by a
        signal, Python 3.11 may report the reaper thread as stopped while it still waits."""
        if self._status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self) -> Finished:
        remaining = self.deadline_s - (time.monotonic() - self.started)
        try:
            self._reaper.join(max(0.0, remaining))
        except BaseException:  # Ctrl-C: a child in its own session would outlive us
            self.kill()
            raise
        timed_out = self._status is None
        if timed_out:
            self.kill()
            self._reaper.join(30)
        assert self._status is not None
        status, usage = self._status
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code  # reaped here; Popen must not wait for it again
        return Finished(
            argv=self.argv,
            code=code,
            ended=self.ended,
            wall_s=self.ended - self.started,
            max_rss_bytes=int(usage.ru_maxrss) * 1024,  # kilobytes on Linux
            cpu_s=float(usage.ru_utime + usage.ru_stime),
            timed_out=timed_out,
            stdout_path=self.stdout_path,
            stderr_path=self.stderr_path,
        )


def run_child(
    argv: list[str], env: Mapping[str, str], workdir: Path, name: str, deadline_s: float
) -> Finished:
    """Run ``argv`` to the end; its peak RSS and CPU are measured by a small launcher.

    Linux carries a process's RSS high-water mark across ``exec`` into the new program's
    ``ru_maxrss``: a child forked from this harness would report at least the harness's own
    peak (it generates the inputs). The launcher (``python -m bench.processes``) is small, and
    forks the program itself, so the figure is the program's alone."""
    report = workdir / f"{name}.rusage.json"
    launcher = [sys.executable, "-m", "bench.processes", str(report), "--"]
    finished = Child([*launcher, *argv], env, workdir, name, deadline_s).wait()
    with contextlib.suppress(OSError, ValueError, KeyError):
        measured = json.loads(report.read_text())
        finished = replace(
            finished,
            argv=argv,
            max_rss_bytes=int(measured["max_rss_bytes"]),
            cpu_s=float(measured["cpu_s"]),
        )
    return finished


def rusage_main(argv: Sequence[str]) -> int:
    """``python -m bench.processes REPORT -- PROGRAM ARGS...``: run the program, write its
    peak RSS and CPU (from ``wait4``) to REPORT as JSON, and exit as it did."""
    report, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: python -m bench.processes REPORT -- PROGRAM [ARGS...]")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child becomes the program
        try:
            os.execvp(command[0], command)  # noqa: S606 - argv from this harness
        finally:
            os._exit(127)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda received, _frame: os.kill(pid, received))
    _pid, status, usage = os.wait4(pid, 0)
    Path(report).write_text(
        json.dumps(
            {
                "max_rss_bytes": usage.ru_maxrss * 1024,  # kilobytes on Linux
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        )
    )
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    return os.waitstatus_to_exitcode(status)


class SandboxProcess:
    """``python -m pipeline.sandbox`` in its own process, and its admin endpoints.

    ``latency_ms`` alone is constant; with ``spread`` it is uniform within +-spread of it, with
    ``sigma`` log-normal around it (see ``bench.network.Network``)."""

    def __init__(
        self,
        workdir: Path,
        *,
        rate: str,
        latency_ms: float,
        config: Mapping[str, Any],
        spread: float | None = None,
        sigma: float | None = None,
    ) -> None:
        self._argv = [
            sys.executable,
            "-m",
            "pipeline.sandbox",
            "--host",
            LOOPBACK,
            "--port",
            "0",
            "--rate",
            rate,
            *Network(latency_ms, spread, sigma).sandbox_flags(),
            "--config-json",
            json.dumps(dict(config)),
        ]
        self._stderr_path = workdir / f"sandbox-{os.getpid()}-{time.monotonic_ns()}.stderr"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    @classmethod
    def playing(
        cls, workdir: Path, network: Network, *, rate: str, config: Mapping[str, Any]
    ) -> SandboxProcess:
        """A sandbox whose latency is ``network``'s."""
        n = network
        return cls(
            workdir, rate=rate, latency_ms=n.ms, spread=n.spread, sigma=n.sigma, config=config
        )

    def __enter__(self) -> SandboxProcess:
        with self._stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                self._argv,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=child_env(None),
                cwd=REPO,
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30.0)
        line = self.proc.stdout.readline() if ready else ""
        match = _LISTENING.search(line)
        if match is None:
            self.__exit__()
            raise RuntimeError(
                f"the sandbox did not start: {line.strip()!r} "
                f"{self._stderr_path.read_text(errors='replace')[-500:]!r}"
            )
        self.base_url = require_loopback(match.group(1))
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        stop_process(proc, 15)
        if proc.stdout is not None:
            proc.stdout.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def admin(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - base_url checked: http://127.0.0.1
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with self._opener.open(request, timeout=timeout) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self.admin("POST", "/_sandbox/reset")

    def requests(self) -> list[Request]:
        return parse_requests(self.admin("GET", "/_sandbox/state?since=0")["requests"])


def pipeline_argv(input_path: Path, output: Path, base_url: str | None, *options: str) -> list[str]:
    argv = [sys.executable, "-m", "pipeline", "run", str(input_path), "-o", str(output)]
    if base_url is not None:
        argv += ["--base-url", require_loopback(base_url)]
    return [*argv, *options, "--log-format", "json"]


def pipeline_has_option(option: str) -> bool:
    """Whether ``pipeline run --help`` lists ``option`` (the CLI is still growing)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--help"],
        capture_output=True,
        text=True,
        env=child_env(None),
        cwd=REPO,
        timeout=60,
        check=False,
    ).stdout
    return re.search(rf"(^|\s){re.escape(option)}([\s=,]|$)", help_text) is not None


if __name__ == "__main__":
    sys.exit(rusage_main(sys.argv[1:]))


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)

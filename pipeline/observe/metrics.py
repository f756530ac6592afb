"""A finished run's figures for the Prometheus its users already run: a file for the node
exporter's textfile collector (``--metrics-file``), a push to a Pushgateway (``--pushgateway``).

Both carry the same gauges, built from the run's ``RunSummary`` (``observe.summary``), so
a dashboard reads them the same way whichever way they arrive. Every series has one label
that says which job it is, ``input``: the run's INPUT as given (a URI without credentials
or query). A nightly job reads the same export path every night and may write a dated
output (``--known`` then reads the earlier nights), so the input, not the output, is what
stays the same from night to night: one set of series per job, and two jobs on one machine
or one gateway apart. Nothing is labelled by row or
contact; only the daily quota is labelled by location, one series per location reached.

``pipeline_last_success_timestamp_seconds`` is the one a "the nightly job has not succeeded
for a day" alert needs, so a failed run never erases it. On the Pushgateway a successful run
replaces its whole group (PUT, so a location or an error code gone since drops out) and a
failed one replaces only the metrics it pushes (POST), which never include that one; in the
file, a failed run carries the earlier value over from the file it replaces. (A metric a
failed run has no series of, say no location answered, is not pushed at all, so the gateway
keeps the earlier run's series of it until the next success replaces the group.)

Publishing must never change the run's outcome, which is already decided and written: any
failure is a warning in the log, and ``publish`` never raises. prometheus_client is imported
inside the functions that need it (about 100 ms); the CLI imports this module only when one
of the two options is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

import structlog

from pipeline.core import logs
from pipeline.core.outcomes import Status

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from pipeline.observe.summary import RunSummary

log = structlog.get_logger("pipeline.observe.metrics")

JOB = "pipeline"  # the Pushgateway's job label
PUSH_TIMEOUT_S = 10.0  # per connect and per read: a gateway that hangs costs seconds, not minutes
LAST_SUCCESS = "pipeline_last_success_timestamp_seconds"


@dataclass(frozen=True, slots=True)
class Gauge:
    """One metric family: its name, HELP text, label names, and (label values, value) pairs."""

    name: str
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)


def publish(summary: RunSummary, *, path: Path | None, pushgateway: str | None) -> None:
    """Write ``summary``'s metrics to ``path`` and/or push them to ``pushgateway``.

    Never raises: a metrics file
    that cannot be written or a gateway that cannot be reached is a warning, and the run's
    exit code stays what the rows decided.
    """
    now = time.time()
    if path is not None:
        _write_file(summary, path, now)
    if pushgateway:
        _push(summary, pushgateway, now)


def gauges(summary: RunSummary, *, now: float, last_success: float | None) -> list[Gauge]:
    """The metrics of one run. ``last_success`` is when the last successful run ended: now
    for a run that succeeded, an earlier time (or None: left out) for one that did not."""
    job = input_label(summary)

    def one(name: str, help: str, value: float) -> Gauge:
        return Gauge(name, help, ("input",), [((job,), float(value))])

    # Every status, even at zero: ratios and "failed > 0" then work without absent() on a
    # night nothing failed.
    by_status = {status.value: 0 for status in Status} | summary.report.by_status
    found = [
        Gauge(
            "pipeline_rows",
            "Rows of the run's results file by status (every input row has exactly one).",
            ("input", "status"),
            [((job, status), float(n)) for status, n in by_status.items()],
        ),
        Gauge(
            "pipeline_rows_by_code",
            "Rows of the run's results file by error code (only codes that occur; created "
            "rows have none). README, Results, lists the codes.",
            ("input", "code"),
            [((job, code), float(n)) for code, n in summary.report.by_error_code.items()],
        ),
    ]
    run = summary.report.run
    if run is not None:
        found += [
            one(
                "pipeline_requests",
                "Requests the run sent to HighLevel, retries and look-ups included.",
                run.requests,
            ),
            one(
                "pipeline_throttled_answers",
                "429 (rate limited) answers the run received.",
                run.throttled,
            ),
            one(
                "pipeline_run_duration_seconds",
                "How long the run took, from start to its results written.",
                run.elapsed_s,
            ),
        ]
        remaining = run.daily_remaining
        found.append(
            Gauge(
                "pipeline_daily_quota_remaining",
                "Requests left in a location's daily quota, as its last answer in the run "
                "said (X-RateLimit-Daily-Remaining); locations that announced none are left "
                "out.",
                ("input", "location_id"),
                [
                    ((job, location), float(left))
                    for location, left in sorted(remaining.items())
                    if left is not None
                ],
            )
        )
    found += [
        one(
            "pipeline_exit_code",
            "The run's exit code: 0 all rows done, 1 rows match --fail-on, 130/143 "
            "interrupted (README, Exit codes).",
            summary.exit_code,
        ),
        one(
            "pipeline_last_run_timestamp_seconds",
            "When the last run ended (Unix time), whatever its outcome.",
            now,
        ),
    ]
    if last_success is not None:
        found.append(
            one(
                LAST_SUCCESS,
                "When the last run that exited 0 ended (Unix time); a failed run leaves it.",
                last_success,
            )
        )
    return found


def input_label(summary: RunSummary) -> str:
    """The ``input`` label: the run's input as given, a URI without user, password or query
    (a presigned or credentialed URI must not become a label anyone can read)."""
    given = summary.input or summary.results
    if "://" not in given:
        return given
    parts = urlsplit(given)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment=""))


def succeeded(summary: RunSummary) -> bool:
    """Exit 0 is what the alert means by success: --fail-on has decided it already."""
    return summary.succeeded


class _RunCollector:
    """Serves fixed gauges to a registry: no Gauge objects, so nothing global is touched
    (not even PROMETHEUS_MULTIPROC_DIR's files, should the environment set it)."""

    def __init__(self, found: list[Gauge]) -> None:
        self._found = found

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        for gauge in self._found:
            family = GaugeMetricFamily(gauge.name, gauge.help, labels=list(gauge.labels))
            for values, value in gauge.samples:
                family.add_metric(list(values), value)
            yield family


def registry(found: list[Gauge]) -> CollectorRegistry:
    """A fresh registry holding only ``found``: never the global one, which would add this
    process's own metrics (and keep them between calls)."""
    from prometheus_client import CollectorRegistry

    fresh = CollectorRegistry()
    fresh.register(_RunCollector(found))
    return fresh


# ---------------------------------------------------------------------------- the file


def _write_file(summary: RunSummary, path: Path, now: float) -> None:
    """Write the metrics file the textfile collector's way: a temporary file in the same
    folder, renamed over the old one, so a scrape never reads half a file."""
    try:
        from prometheus_client import write_to_textfile

        last = now if succeeded(summary) else _earlier_success(path, input_label(summary))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), registry(gauges(summary, now=now, last_success=last)))
    except Exception as exc:  # publishing never changes the run's outcome
        log.warning("metrics file not written", path=str(path), error=_describe(exc))


def _earlier_success(path: Path, job: str) -> float | None:
    """The last success the file being replaced records for the same job, if it does."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None  # no earlier file: no success to keep
    from prometheus_client.parser import text_string_to_metric_families

    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.labels.get("input") == job:
                    return float(sample.value)
    except Exception:  # a file someone else garbled: start afresh rather than not write
        return None
    return None


# ---------------------------------------------------------------------- the Pushgateway


@dataclass(frozen=True, slots=True)
class Gateway:
    """A Pushgateway URL split into where to send and how to log in: urllib does not take
    credentials in the URL, and the log names only ``host``."""

    url: str  # without credentials
    host: str  # host[:port], for the log
    username: str | None = None
    password: str | None = None


def parse_gateway(url: str) -> Gateway:
    """``http://user:pass@host:9091/prefix`` → where, who; a bare ``host:9091`` is http."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    userinfo, at, host = parts.netloc.rpartition("@")
    where = urlunsplit(parts._replace(netloc=host))
    if not at:
        return Gateway(where, host)
    user, _, password = userinfo.partition(":")
    return Gateway(where, host, unquote(user), unquote(password))


def _push(summary: RunSummary, url: str, now: float) -> None:
    """Push under job ``pipeline``, grouped by ``input``: PUT after a success (the group
    becomes exactly this run), POST after a failure (the earlier success time stays)."""
    try:
        from prometheus_client import push_to_gateway, pushadd_to_gateway

        gateway = parse_gateway(url)
        if gateway.password:  # the whole URL is registered already; its parts too
            logs.register_secret(gateway.password)
            logs.register_secret(f"{gateway.username}:{gateway.password}")
        ok = succeeded(summary)
        send = push_to_gateway if ok else pushadd_to_gateway
        send(
            gateway.url,
            job=JOB,
            registry=registry(gauges(summary, now=now, last_success=now if ok else None)),
            grouping_key={"input": input_label(summary)},
            timeout=PUSH_TIMEOUT_S,
            handler=_handler(gateway),
        )
    except Exception as exc:  # publishing never changes the run's outcome
        host = _host_of(url)
        log.warning("metrics not pushed", pushgateway=host, error=_describe(exc))


def _handler(gateway: Gateway) -> Callable[..., Callable[[], None]]:
    """prometheus_client's request maker, with basic auth when the URL carried a user."""
    from prometheus_client.exposition import basic_auth_handler, default_handler

    if gateway.username is None:
        return default_handler
    username, password = gateway.username, gateway.password or ""

    def with_auth(
        url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, username, password)

    return with_auth


def _host_of(url: str) -> str:
    """host[:port] of ``url``, never its credentials (also for a URL that does not parse)."""
    try:
        return parse_gateway(url).host
    except ValueError:
        return "(unparsable URL)"


def _describe(exc: BaseException) -> str:
    """What went wrong, in words an operator can act on; never a URL (urllib's errors carry
    none, but the log's redaction stands behind this in case)."""
    from urllib.error import HTTPError, URLError

    if isinstance(exc, HTTPError):
        try:
            body = exc.read(200).decode("utf-8", "replace").strip()
        except Exception:
            body = ""
        return f"HTTP {exc.code} {exc.reason}" + (f": {body}" if body else "")
    if isinstance(exc, URLError):
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"

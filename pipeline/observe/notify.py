"""Notifications: the run's summary, sent through apprise once the results are written.

apprise turns one URL into a message on Slack, Teams, email, a JSON webhook and about 150
other services, so ``--notify`` is one setting whatever the team reads. A notification is
a courtesy on top of a finished run: it never raises, never changes the exit code or the
results, and never holds the run for long. One that cannot be delivered is a warning in the
log that names the URL's scheme only, since a webhook's URL is its key.

Three things apprise does by default are undone here:

- its log records (and urllib3's, under it) propagate to the root logger, where a handler
  set up by anyone would print them, and some quote the URL whole ("Unparseable URL ...");
- with a deadline it sends from a process-wide pool of non-daemon threads, which the
  interpreter joins at exit, so a receiver that never finishes answering would hold the
  process after the run is over;
- its read timeout applies to each read, so a receiver that trickles bytes is never cut off.

So each URL is sent from its own daemon thread, with apprise's own deadline off (it then
sends in that thread), and the run waits for all of them up to one deadline; a send still
going then is abandoned, and ends with the process.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog

from pipeline.core import logs
from pipeline.core.errors import plural

if TYPE_CHECKING:
    import apprise

    from pipeline.observe.run_figures import RunInfo
    from pipeline.observe.summary import RunSummary

DEADLINE_S = 10.0  # all receivers together; apprise's own socket timeouts are 4 s each
_TOP_ERROR_CODES = 6  # a message read in a chat stays short: the rest is "+N more"
_DETAIL_CHARS = 300
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,30})://")
_URL_PARTS = re.compile(r"[/?&=#:@,;]")
_QUIETED_LOGGERS = ("apprise", "urllib3")
_SECRET_LOOKING = 6  # URL parts this long are hidden from a detail; shorter ones are words

log = structlog.get_logger("pipeline.observe.notify")


@dataclass(frozen=True, slots=True)
class Message:
    """What is sent: a one-line title, a short markdown body, and whether the run failed
    (the notification's type: failure or success, which receivers show as a colour)."""

    title: str
    body: str
    failed: bool


@dataclass(frozen=True, slots=True)
class _Outcome:
    delivered: bool
    detail: str = ""


def notify(
    urls: list[str],
    summary: RunSummary,
    *,
    when: Literal["failure", "always"],
    deadline_s: float = DEADLINE_S,
) -> None:
    """Send the run's ``summary`` to every URL in ``urls``,
    if ``when`` says so: ``failure`` sends only when the exit code is not 0.

    Waits at most ``deadline_s`` for all receivers together. Never raises: a receiver that
    fails, hangs or cannot be parsed is a warning in the log, and even Ctrl-C here only
    stops the waiting, since the run it reports on is already over.
    """
    try:
        if not urls or (when == "failure" and summary.succeeded):
            return
        _send(urls, build_message(summary), deadline_s)
    except KeyboardInterrupt:
        log.warning("notifications abandoned: interrupted", receivers=len(urls))
    except Exception as exc:  # a courtesy must never cost the run its exit code
        log.warning(
            "notifications not delivered",
            schemes=[scheme_of(url) for url in urls],
            error=type(exc).__name__,  # its message may quote a URL
        )


def build_message(summary: RunSummary) -> Message:
    """The title and body for ``summary``, scrubbed of every registered secret: the next
    command repeats the run's options, and with them any ``--notify`` URL, which must not
    reach another receiver."""
    report, run = summary.report, summary.report.run
    code, reason = summary.exit_code, summary.exit_reason
    dry = " (dry run)" if run is not None and run.dry_run else ""
    rows = plural(report.rows, "row", grouped=True)
    title = f"pipeline: {rows} -> {summary.results}{dry}: exit {code}" + (
        f" ({reason})" if reason else ""
    )
    lines = [f"**exit {code}**" + (f": {reason}" if reason else "")]
    by_status = report.by_status
    lines.append(f"rows: {report.rows:,}" + (f" ({_counts(by_status)})" if by_status else ""))
    if report.by_error_code:
        lines.append(f"errors: {_counts(report.by_error_code, top=_TOP_ERROR_CODES)}")
    if run is not None:
        lines.append(_run_line(run, report.locations))
    lines.append(f"results: `{summary.results}`")
    if summary.advice:
        lines.extend(["", *summary.advice])
    if summary.next_command:
        lines.append(f"next: `{summary.next_command}`")
    return Message(
        title=logs.scrub(title),
        body=logs.scrub("\n".join(lines)),
        failed=not summary.succeeded,
    )


def scheme_of(url: str) -> str:
    """The part of ``url`` that may be logged: ``slack``, ``json``, ``mailtos``... (or
    ``?`` when it has none), so a warning says which receiver without giving its key."""
    match = _SCHEME.match(url.strip())
    return match.group(1).lower() if match else "?"


def _counts(counts: dict[str, int], top: int | None = None) -> str:
    items = list(counts.items())
    shown = items if top is None else items[:top]
    text = ", ".join(f"{name} {int(n):,}" for name, n in shown)
    if len(shown) < len(items):
        text += f", +{len(items) - len(shown)} more"
    return text


def _run_line(run: RunInfo, locations: int) -> str:
    parts = [f"took {_duration(run.elapsed_s)}"]
    throttled = f" ({run.throttled:,} throttled)" if run.throttled else ""
    parts.append(f"{plural(run.requests, 'request', grouped=True)}{throttled}")
    if locations:
        parts.append(plural(locations, "location", grouped=True))
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    """``4.2s``, ``2m 05s``, ``1h 02m``: as a person says it, not as a float."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _send(urls: list[str], message: Message, deadline_s: float) -> None:
    """Send to every URL at once, each from its own daemon thread, and wait for all of them
    up to ``deadline_s`` in total; then log each outcome."""
    # Here, not at the top: apprise costs about a second to import and load its plugins,
    # which neither `pipeline --help` nor a run without --notify should pay.
    import apprise

    _keep_apprise_quiet()
    asset = apprise.AppriseAsset(
        app_id="pipeline",
        app_desc="pipeline run summary",
        async_mode=False,  # sends in the calling thread (ours), not apprise's shared pool
        service_timeout=0,  # no apprise deadline: ours applies, see the module docstring
        storage_mode="memory",  # nothing written under the user's home
    )
    started = time.monotonic()
    deliveries = [_Delivery(url, message, asset) for url in urls]
    for delivery in deliveries:
        delivery.start()
    for delivery in deliveries:
        delivery.join(max(0.0, started + deadline_s - time.monotonic()))
    for delivery in deliveries:
        outcome = delivery.outcome
        scheme = scheme_of(delivery.url)
        if outcome is None:
            log.warning(
                "notification not delivered",
                scheme=scheme,
                detail=f"no answer within {deadline_s:g}s; abandoned",
            )
        elif outcome.delivered:
            log.info("notification sent", scheme=scheme, failed=message.failed)
        else:
            log.warning("notification not delivered", scheme=scheme, detail=outcome.detail)


def _keep_apprise_quiet() -> None:
    """apprise's records stay inside apprise: it captures them per send (which is where the
    details of a failure are read from), and a handler on the root logger would otherwise
    print them, URLs and all. So do those of urllib3, under apprise's HTTP plugins, which
    log each request's path at DEBUG (a Slack webhook's path is its key). Left so for the
    process: a send abandoned at the deadline may still log, and the run is over."""
    for name in _QUIETED_LOGGERS:
        logging.getLogger(name).propagate = False


class _Delivery(threading.Thread):
    """One URL's send. A daemon thread: one still waiting on a receiver when the run
    exits is simply dropped, rather than holding the process open."""

    def __init__(self, url: str, message: Message, asset: apprise.AppriseAsset) -> None:
        super().__init__(name=f"notify-{scheme_of(url)}", daemon=True)
        self.url = url
        self.message = message
        self.asset = asset
        self.outcome: _Outcome | None = None  # None: still going

    def run(self) -> None:
        try:
            self.outcome = self._deliver()
        except Exception as exc:  # a plugin's bug is one receiver's problem
            self.outcome = _Outcome(False, f"apprise failed: {type(exc).__name__}")

    def _deliver(self) -> _Outcome:
        import apprise

        sender = apprise.Apprise(asset=self.asset)
        if not sender.add(self.url):
            return _Outcome(False, "apprise does not understand this URL")
        result = sender.notify(
            body=self.message.body,
            title=self.message.title,
            notify_type=(
                apprise.NotifyType.FAILURE if self.message.failed else apprise.NotifyType.SUCCESS
            ),
            body_format=apprise.NotifyFormat.MARKDOWN,
        )
        if result:
            return _Outcome(True)
        said = "; ".join(dict.fromkeys(entry.message for entry in result.logs()))
        return _Outcome(False, _without_url(said, self.url) or "failed")


def _without_url(text: str, url: str) -> str:
    """``text`` (what apprise logged about a send) without any part of ``url`` that could be
    a key: its host, its path's segments, its query's values. Short parts (``POST``,
    ``hook``) are left, since they are words in apprise's sentences too."""
    parts = {url, *_URL_PARTS.split(url.partition("://")[2])}
    for part in sorted(parts, key=len, reverse=True):
        if len(part) >= _SECRET_LOOKING and part in text:
            text = text.replace(part, logs.REDACTED)
    text = logs.scrub(text)
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."

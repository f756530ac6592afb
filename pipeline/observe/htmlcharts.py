"""How the HTML report draws: the colours, numbers in words, the charts as inline SVG, and the
style sheet of the page.

Drawing only: every figure drawn here comes computed from ``htmlfigures``; ``htmlreport``
puts the pieces on the page. The SVG is built as text here in Python, so the page needs no
script and fetches nothing. Every string from the data goes through ``esc`` first: IDs,
messages and trace ids came from a spreadsheet or an API answer, and are untrusted.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

from pipeline.core.outcomes import Code, Status
from pipeline.observe.htmlfigures import NICE_SECONDS, LimitLine, Timeline

# Rows that need a person (or a rerun), whatever their status says: ``exists`` rows whose
# conversation id the search index has not shown yet are drawn in it, apart from ``exists``.
ATTENTION_COLOUR = "#e8590c"
STATUS_COLOURS = {
    Status.CREATED.value: "#2f9e44",
    Status.EXISTS.value: "#74b816",
    Code.ID_NOT_FOUND_YET.value: ATTENTION_COLOUR,
    Status.DUPLICATE.value: "#94a3b8",
    Status.INVALID.value: "#f59f00",
    Status.FAILED.value: "#e03131",
    Status.SKIPPED.value: "#7950f2",
}
OTHER_COLOUR = "#868e96"
# Tableau 10's first eight: distinct for the common forms of colour blindness, and in print.
SERIES_COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
)
OTHERS_COLOUR = "#6c757d"
LIMIT_COLOUR = "#212529"


def esc(value: object) -> str:
    """Text from the data, made inert: IDs and messages are untrusted."""
    return html.escape("" if value is None else str(value), quote=True)


def status_pill(status: object, attention: bool = False) -> str:
    """A status, in its colour; in the colour of rows that need attention when ``attention``
    (an ``exists`` row whose id was not found yet is not done)."""
    colour = ATTENTION_COLOUR if attention else STATUS_COLOURS.get(str(status), OTHER_COLOUR)
    extra = ' attention" title="needs attention: id not found yet' if attention else ""
    return f'<span class="pill{extra}" style="--c:{colour}">{esc(status)}</span>'


# -- numbers in words --------------------------------------------------------------------


def _clock(seconds: float, span_s: float) -> str:
    """An axis label: seconds for a short run, m:ss for a longer one, h:mm past two hours."""
    if span_s < 120:
        return f"{seconds:g} s"
    if span_s < 7200:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes}:{rest:02d}"
    hours, rest = divmod(round(seconds) // 60, 60)
    return f"{hours}:{rest:02d} h"


def _nice_step(span: float, ticks: int) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about ``ticks`` ticks over ``span``."""
    raw = max(span, 1e-9) / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw)


def _time_step(span_s: float, ticks: int = 8) -> float:
    wanted = max(span_s, 1e-3) / ticks
    return next((float(s) for s in NICE_SECONDS if s >= wanted), _nice_step(span_s, ticks))


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:,.1f}"


def percent(part: int, whole: int) -> str:
    if whole == 0:
        return "0%"
    share = 100 * part / whole
    return f"{share:.0f}%" if share >= 10 or share == 0 else f"{share:.1f}%"


# -- charts (inline SVG) ------------------------------------------------------------------

_W, _H = 960, 300
HEADROOM = 1.08  # the y axis goes this far above the highest value
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 64, 24, 16, 36


def status_bar(by_status: dict[str, int], rows: int) -> str:
    """One bar of the rows by status, each segment its share, with a tooltip."""
    if rows == 0:
        return '<p class="muted">The file has no rows.</p>'
    parts, x = [], 0.0
    for status, count in by_status.items():
        width = 1000 * count / rows
        colour = STATUS_COLOURS.get(status, OTHER_COLOUR)
        parts.append(
            f'<rect x="{x:.2f}" y="0" width="{width:.2f}" height="36" fill="{colour}">'
            f"<title>{esc(status)}: {count:,} rows ({percent(count, rows)})</title></rect>"
        )
        x += width
    return (
        '<svg class="chart status-bar" viewBox="0 0 1000 36" preserveAspectRatio="none" '
        f'role="img" aria-label="rows by status">{"".join(parts)}</svg>'
    )


def _axes(
    x_max: float, y_max: float, span_s: float, y_label: str
) -> tuple[list[str], float, float]:
    """Grid lines, tick labels and the scales of a time chart."""
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    sx, sy = plot_w / x_max, plot_h / y_max
    out = []
    step = _nice_step(y_max, 6)
    value = 0.0
    while value <= y_max + 1e-9:
        y = _H - _PAD_B - value * sy
        out.append(
            f'<line class="grid" x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        out.append(f'<text class="tick" x="{_PAD_L - 8}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{number(value)}</text>")  # fmt: skip
        value += step
    step = _time_step(x_max)
    value = 0.0
    while value <= x_max + 1e-9:
        x = _PAD_L + value * sx
        out.append(f'<line class="tick-mark" x1="{x:.1f}" x2="{x:.1f}" '
                   f'y1="{_H - _PAD_B}" y2="{_H - _PAD_B + 5}"/>')  # fmt: skip
        out.append(f'<text class="tick" x="{x:.1f}" y="{_H - _PAD_B + 20}" text-anchor="middle">'
                   f"{_clock(value, span_s)}</text>")  # fmt: skip
        value += step
    out.append(f'<line class="axis" x1="{_PAD_L}" x2="{_W - _PAD_R}" '
               f'y1="{_H - _PAD_B}" y2="{_H - _PAD_B}"/>')  # fmt: skip
    out.append(f'<text class="axis-label" x="{_PAD_L}" y="{_PAD_T - 4}">{esc(y_label)}</text>')
    return out, sx, sy


def _svg(body: Iterable[str], label: str, css: str) -> str:
    return (
        f'<svg class="chart {css}" viewBox="0 0 {_W} {_H}" role="img" aria-label="{esc(label)}">'
        + "".join(body)
        + "</svg>"
    )


def _points(xs: Sequence[float], ys: Sequence[float], sx: float, sy: float) -> str:
    return " ".join(
        f"{_PAD_L + x * sx:.1f},{_H - _PAD_B - y * sy:.1f}" for x, y in zip(xs, ys, strict=True)
    )


def _limit_path(
    limit: LimitLine, x_max: float, y_max: float
) -> tuple[list[float], list[float]] | None:
    """The most one location may have settled by each moment: its full burst at once, then
    one burst more each window (a staircase), cut at the top of the chart; a straight line
    at that slope once the stairs would be too many to see. None when even the first burst
    is above the chart: no location had enough rows to meet the limit."""
    n, t = limit.max_requests, limit.interval_s
    if n >= y_max:
        return None
    if x_max / t > 200:
        x_end = min(x_max, (y_max / n - 1) * t)
        return [0.0, x_end], [float(n), n * (x_end / t + 1)]
    xs, ys, k = [0.0], [float(n)], 1
    while k * t <= x_max:
        xs += [k * t, k * t]
        ys += [float(k * n), float(min((k + 1) * n, y_max))]
        if (k + 1) * n >= y_max:
            return xs, ys
        k += 1
    return [*xs, x_max], [*ys, ys[-1]]


def timeline_chart(line: Timeline, limit: LimitLine) -> str:
    """Rows settled per location, cumulative, against the limit's staircase."""
    x_max = line.buckets * line.bucket_s
    top = max(s.cumulative[-1] for s in line.series)
    y_max = top * HEADROOM if top > 0 else 1.0
    body, sx, sy = _axes(x_max, y_max, line.span_s, "rows settled, per location")
    stairs = _limit_path(limit, x_max, y_max)
    if stairs is not None:
        body.append(
            f'<polyline class="limit" points="{_points(*stairs, sx, sy)}" '
            f'stroke="{LIMIT_COLOUR}"><title>the limit: {esc(limit.label)}, per location'
            "</title></polyline>"
        )
    ends = [line.bucket_s * (b + 1) for b in range(line.buckets)]
    for index, series in enumerate(line.series):
        others = series.others
        colour = OTHERS_COLOUR if others else SERIES_COLOURS[index % len(SERIES_COLOURS)]
        what = f"{series.rows:,} rows" + (", per location on average" if others else "")
        body.append(
            f'<polyline class="series{" others" if others else ""}" '
            f'points="{_points([0.0, *ends], [0.0, *series.cumulative], sx, sy)}" '
            f'stroke="{colour}"><title>{esc(series.name)}: {what}</title></polyline>'
        )
    return _svg(body, "rows settled over time per location, against the limit", "timeline")


def throughput_chart(line: Timeline) -> str:
    """Rows settled per second in each bucket, all locations together: stalls show as gaps."""
    rates = [count / line.bucket_s for count in line.per_bucket]
    x_max = line.buckets * line.bucket_s
    y_max = max(rates) * 1.08 if max(rates) > 0 else 1.0
    body, sx, sy = _axes(x_max, y_max, line.span_s, "rows settled per second, all locations")
    width = max(line.bucket_s * sx - 1, 0.6)
    for bucket, rate in enumerate(rates):
        if rate == 0:
            continue
        x, height = _PAD_L + bucket * line.bucket_s * sx, rate * sy
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{_H - _PAD_B - height:.1f}" width="{width:.1f}" '
            f'height="{height:.1f}"><title>{_clock(bucket * line.bucket_s, line.span_s)}: '
            f"{line.per_bucket[bucket]:,} rows</title></rect>"
        )
    return _svg(body, "rows settled per second over time", "throughput")


CSS = """
:root{--ink:#1f2328;--muted:#656d76;--line:#d8dee4;--bg:#f6f8fa;--panel:#fff;
--good:#2f9e44;--bad:#e03131;--warn:#f59f00;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans","DejaVu Sans",sans-serif}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font-size:14px;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:28px 24px 40px}
header{display:flex;justify-content:space-between;align-items:flex-end;gap:16px;flex-wrap:wrap;
margin-bottom:18px}
h1{font-size:24px;margin:0 0 4px;font-weight:650;letter-spacing:-.01em}
h2{font-size:17px;margin:0 0 12px;font-weight:650}
h3{font-size:14px;margin:20px 0 8px;color:var(--muted);font-weight:600;text-transform:uppercase;
letter-spacing:.04em}
code,.id,.code,.path{font-family:ui-monospace,"SFMono-Regular",Menlo,"DejaVu Sans Mono",monospace;
font-size:12.5px}
.path{font-size:14px;word-break:break-all;margin-bottom:2px}
.muted{color:var(--muted)}
.badge{display:inline-block;vertical-align:middle;font-size:12px;font-weight:600;padding:2px 8px;
border-radius:10px;background:#e5dbff;color:#5f3dc4;margin-left:6px}
.verdict{margin:0;padding:8px 14px;border-radius:8px;font-weight:600}
.verdict.good{background:#ebfbee;color:#2b8a3e}
.verdict.bad{background:#fff5f5;color:#c92a2a}
.verdict.neutral{background:#f1f3f5;color:#495057}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:12px;
margin-bottom:18px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:12px 14px;
border-top:4px solid var(--line)}
.card.good{border-top-color:var(--good)}.card.bad{border-top-color:var(--bad)}
.card.warn{border-top-color:var(--warn)}.card.attention{border-top-color:#e8590c}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.card .value{font-size:26px;font-weight:650;font-variant-numeric:tabular-nums;margin-top:2px}
.card .sub{color:var(--muted);font-size:12px}
.panel{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:18px 20px;
margin-bottom:18px}
.chart{display:block;width:100%;height:auto}
.status-bar{height:36px;border-radius:6px;overflow:hidden}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:6px 20px;padding:0;margin:10px 0 0}
.swatch{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:6px;
vertical-align:-1px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;border-bottom:1px solid var(--line);
white-space:nowrap}
tbody tr:hover{background:#f6f8fa}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.msg{color:#424a53;max-width:420px;overflow-wrap:anywhere}
td.id,td.code{white-space:nowrap}
td.msg .trace{font-family:ui-monospace,"SFMono-Regular",Menlo,"DejaVu Sans Mono",monospace;
font-size:11px;color:#8c959f;margin-top:2px;white-space:nowrap}
.barcell{width:22%;min-width:120px;vertical-align:middle}
.hbar{display:block;height:10px;border-radius:5px;min-width:2px}
.stack{display:flex;height:10px;border-radius:5px;overflow:hidden;background:#eaeef2}
.stack span{display:block;height:100%}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
color:var(--c);background:color-mix(in srgb,var(--c) 14%,white);white-space:nowrap}
.figure{margin:6px 0 4px}
.grid{stroke:#eaeef2;stroke-width:1}
.axis{stroke:#8c959f;stroke-width:1}.tick-mark{stroke:#8c959f}
.tick{font-size:11px;fill:#656d76;font-variant-numeric:tabular-nums}
.axis-label{font-size:11px;fill:#656d76}
.series{fill:none;stroke-width:2.2;stroke-linejoin:round}
.series.others{stroke-dasharray:6 4}
.limit{fill:none;stroke-width:1.5;stroke-dasharray:3 3;opacity:.85}
.bar{fill:#4e79a7}
.series-legend{margin-top:8px;width:auto;min-width:60%}
.line-swatch{display:inline-block;width:26px;border-top:3px solid var(--c);vertical-align:middle}
.line-swatch.dashed{border-top-style:dashed}
.line-swatch.limit{border-top:2px dotted var(--c)}
.scroll{overflow-x:auto}
.panel.next{border-left:4px solid var(--warn)}
.next ul{margin:0;padding-left:20px}.next li{margin:4px 0}
.rows{table-layout:fixed}
.rows td{font-size:13px;overflow-wrap:anywhere}
.rows td.id,.rows td.code,.rows td.msg .trace{white-space:normal}
.locations td.id{white-space:normal;overflow-wrap:anywhere;min-width:12ch;max-width:32ch}
.rows .col-row_index{width:56px}.rows .col-status{width:88px}.rows .col-http_status{width:52px}
.rows .col-attempts{width:48px}.rows .col-contact_id,.rows .col-location_id{width:16%}
.rows .col-error_code{width:17%}
.rows tr.attention{background:#fff4e6}
.count{font-size:13px;font-weight:600;color:#c92a2a;background:#fff5f5;border-radius:10px;
padding:1px 8px;margin-left:6px;vertical-align:2px}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:24px}
@media print{body{background:#fff}.panel,.card{break-inside:avoid}}
"""

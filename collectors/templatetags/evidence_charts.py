"""Metric charts as inline SVG, drawn on the server: no chart script, nothing for the CSP to allow.

An engineer needs the shape (did it step up, and was that before the alert?), so the chart marks
the first alert with a vertical line and labels only the extremes and the time span.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()
WIDTH, HEIGHT, PAD_X, PAD_Y = 560, 150, 44, 18
COLOURS = ("#2f5bd3", "#d9730d", "#2e7d32", "#8e24aa", "#00838f", "#6d4c41")
MAX_SERIES = 6


def _points(series: dict) -> list[tuple[float, float]]:
    points = []
    for ts, value in series.get("points") or []:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if number == number and abs(number) != float("inf"):  # drop NaN and infinities
            points.append((float(ts), number))
    return points


def _timestamp(value: object) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _label(series: dict) -> str:
    labels = series.get("labels") or series.get("metric") or {}
    keep = [
        f"{k}={v}"
        for k, v in labels.items()
        if k not in ("__name__", "job", "instance", "namespace")
    ]
    return ", ".join(keep[:3]) or labels.get("__name__", "series")


def _fmt(value: float) -> str:
    if abs(value) >= 1e9:
        return f"{value / 1e9:.3g}G"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


@register.simple_tag
def metric_chart(data: dict) -> SafeString:
    """An SVG line chart of `data["series"]` with the first alert (`data["first_alert_at"]`) marked."""
    series = [(s, _points(s)) for s in (data.get("series") or [])[:MAX_SERIES]]
    series = [(s, p) for s, p in series if p]
    if not series:
        return mark_safe('<p class="muted">No samples in the window.</p>')  # noqa: S308 (constant)
    xs = [x for _, p in series for x, _ in p]
    ys = [y for _, p in series for _, y in p]
    x0, x1 = min(xs), max(xs)
    alert_at = _timestamp(data.get("first_alert_at"))
    if alert_at is not None:
        x0, x1 = min(x0, alert_at), max(x1, alert_at)
    y0, y1 = min(ys), max(ys)
    if y0 == y1:
        y0, y1 = y0 - 1, y1 + 1
    span_x = (x1 - x0) or 1.0

    def sx(x: float) -> float:
        return PAD_X + (x - x0) / span_x * (WIDTH - PAD_X - 8)

    def sy(y: float) -> float:
        return HEIGHT - PAD_Y - (y - y0) / (y1 - y0) * (HEIGHT - 2 * PAD_Y)

    parts = [
        format_html(
            '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}">',
            WIDTH,
            HEIGHT,
            data.get("query") or data.get("title") or "metric chart",
        ),
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#dde1e8"/>',
            PAD_X,
            HEIGHT - PAD_Y,
            WIDTH - 8,
            HEIGHT - PAD_Y,
        ),
        format_html('<text x="2" y="{}" font-size="10" fill="#6b7385">{}</text>', PAD_Y, _fmt(y1)),
        format_html(
            '<text x="2" y="{}" font-size="10" fill="#6b7385">{}</text>', HEIGHT - PAD_Y, _fmt(y0)
        ),
        format_html(
            '<text x="{}" y="{}" font-size="10" fill="#6b7385">{}</text>',
            PAD_X,
            HEIGHT - 4,
            _clock(x0),
        ),
        format_html(
            '<text x="{}" y="{}" font-size="10" fill="#6b7385" text-anchor="end">{}</text>',
            WIDTH - 8,
            HEIGHT - 4,
            _clock(x1),
        ),
    ]
    if alert_at is not None:
        ax = round(sx(alert_at), 1)
        parts.append(
            format_html(
                '<line class="alert-start" x1="{}" y1="4" x2="{}" y2="{}" stroke="#c62828" stroke-dasharray="4 3"/>',
                ax,
                ax,
                HEIGHT - PAD_Y,
            )
        )
        parts.append(
            format_html('<text x="{}" y="12" font-size="10" fill="#c62828">alert</text>', ax + 3)
        )
    for index, (s, points) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        parts.append(
            format_html(
                '<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"><title>{}</title></polyline>',
                colour,
                coords,
                _label(s),
            )
        )
    parts.append(mark_safe("</svg>"))  # noqa: S308 (constant)
    legend = "".join(
        format_html(
            '<li><span class="swatch swatch-{}"></span>{}</li>', i % len(COLOURS), _label(s)
        )
        for i, (s, _) in enumerate(series)
    )
    return mark_safe("".join(str(p) for p in parts) + f'<ul class="legend">{legend}</ul>')  # noqa: S308 (parts are escaped)


def _clock(ts: float) -> str:
    return escape(datetime.fromtimestamp(ts, UTC).strftime("%H:%M"))

"""Range queries and what an engineer wants to know about each series they return.

Shared by the Prometheus and GPU collectors. A chart needs the shape of a series, not every
sample, and the analysis needs a few numbers it can compare across series and incidents: the
level before the first alert (baseline), the level now (recent), their ratio, the extremes and,
if the series stepped, when. Those numbers are computed here once, the same way for every source.

Conventions of the evidence data built here: points are `[unix seconds, value]` (compact, what a
chart wants); every other time is an RFC 3339 UTC string (what a person reads). Values that are
not finite numbers (Prometheus answers "NaN" for 0/0, "+Inf" for a quantile with no buckets) are
kept as `None`: JSON has no NaN, and PostgreSQL's jsonb rejects it.
"""

from __future__ import annotations

import ast
import json
import math
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
import urllib3

from .base import CollectorError
from .sources import http_error

MAX_POINTS = 120
"""Points per series kept in evidence: enough for the shape of an hour, small enough to store."""

MIN_STEP_SECONDS = 15
"""No finer than a typical scrape interval: a finer step only repeats the same samples."""

NICE_STEPS = (15, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600)
"""Steps a person reads at a glance; past the last one, whole hours."""

RECENT_POINTS = 5
"""'Now' is the median of this many last points, so one odd sample does not define it."""

MIN_SEGMENT = 3
"""A step needs this many points on each side, so a single spike is never called a step."""

MIN_RELATIVE_CHANGE = 0.2
"""A step must move the median by at least 20% of the level before it."""

NOISE_FACTOR = 3.0
"""…and by at least this many robust standard deviations of the noise around each level."""

# Query errors that concern one query, not the server: Prometheus answered, and said why.
QUERY_ERROR_TYPES = frozenset({"bad_data", "execution", "timeout", "canceled"})

Point = tuple[float, float | None]


@dataclass
class Series:
    """One series of a range query: its labels and its points in ascending time."""

    labels: dict[str, str]
    points: list[Point]


class QueryRejected(Exception):
    """Prometheus answered but refused or could not evaluate this one query.

    Not a source failure: the other queries may be fine, so the collector records the error as
    evidence ("metric_error") and goes on.
    """

    def __init__(self, query: str, error_type: str, message: str, status: int) -> None:
        super().__init__(f"{error_type}: {message}")
        self.query = query
        self.error_type = error_type
        self.message = message
        self.status = status


# -- asking Prometheus ------------------------------------------------------------------------


def choose_step(start: datetime, end: datetime, max_points: int = MAX_POINTS) -> int:
    """The smallest readable step (seconds) that keeps a range query within `max_points`.

    Prometheus returns (end - start) / step + 1 points per series, so the step is chosen for
    that, then rounded UP to a "nice" value (15s, 30s, 1m, 5m…) so the points land on round
    times and successive collections of one incident line up.
    """
    span = max((end - start).total_seconds(), 0.0)
    needed = max(span / max(max_points - 1, 1), MIN_STEP_SECONDS)
    for step in NICE_STEPS:
        if step >= needed:
            return step
    return int(math.ceil(needed / 3600.0)) * 3600


def rate_window(step: int) -> str:
    """The range for rate() at this step: 5m, or two steps when they are longer.

    A rate window shorter than the step skips samples between points; at least 5m keeps the
    usual 4 scrapes per window at a 1m scrape interval.
    """
    seconds = max(300, 2 * step)
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def server_timeout(timeout: float) -> str:
    """The `timeout` parameter for Prometheus: a little under the client's own.

    Prometheus then gives up first and says so (errorType "timeout") instead of the client
    cutting the connection with no explanation. Plain float seconds are accepted by the API.
    """
    return f"{max(timeout * 0.9, 0.1):.3f}"


def range_query(
    client: Any, query: str, *, start: datetime, end: datetime, step: int, timeout: float
) -> list[Series]:
    """Run one range query with `client` (sources.prometheus_client) and parse the matrix.

    Raises QueryRejected when Prometheus refuses this query (bad_data, execution, its own
    timeout), CollectorError when the source itself fails: unreachable, too slow, an HTTP error
    that is not a query error (401, 403, 500, a proxy's page), or an answer that is not the API.
    """
    from prometheus_api_client import PrometheusApiClientException

    try:
        result = client.custom_query_range(
            query,
            start_time=_aware(start),
            end_time=_aware(end),
            step=str(step),
            params={"timeout": server_timeout(timeout)},
            timeout=timeout,
        )
    except PrometheusApiClientException as exc:
        raise _answer_error(exc, query) from exc
    except requests.exceptions.InvalidJSONError as exc:
        raise _not_the_api(client, exc) from exc
    except requests.RequestException as exc:
        raise _request_error(exc, timeout) from exc
    except (KeyError, TypeError, ValueError) as exc:  # JSON, but not the API's envelope
        raise _not_the_api(client, exc) from exc
    if not isinstance(result, list):
        raise _not_the_api(client, TypeError(f"result is {type(result).__name__}"))
    return parse_matrix(result)


def parse_matrix(result: list[dict]) -> list[Series]:
    """A `matrix` result as Series; values become floats, non-finite ones None."""
    parsed = []
    for item in result:
        points = [(float(ts), _finite(value)) for ts, value in item.get("values") or []]
        if "value" in item and not points:  # an instant vector slipped in: keep its one sample
            ts, value = item["value"]
            points = [(float(ts), _finite(value))]
        parsed.append(Series(labels=dict(item.get("metric") or {}), points=points))
    return parsed


def _answer_error(exc: Exception, query: str) -> Exception:
    """prometheus-api-client puts the status and raw body in its message: read them back."""
    status, body = _status_and_body(str(exc))
    error_type, message = _api_error(body)
    if error_type in QUERY_ERROR_TYPES:
        return QueryRejected(query, error_type, message, status or 0)
    detail = message or body.strip()[:300] or "no details"
    where = f"HTTP {status}" if status else "an error"
    hint = {401: " (check the credentials)", 403: " (forbidden: check access rights)"}.get(
        status or 0, ""
    )
    return CollectorError(
        f"Prometheus answered {where}{hint}: {detail}", retryable=bool(status and status >= 500)
    )


def _status_and_body(text: str) -> tuple[int | None, str]:
    # "HTTP Status Code 400 (b'{\"status\":\"error\",...}')"
    match = re.match(r"HTTP Status Code (\d+) \((.*)\)\s*$", text, re.DOTALL)
    if not match:
        return None, text
    raw = match.group(2)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return int(match.group(1)), raw
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return int(match.group(1)), str(value)


def _api_error(body: str) -> tuple[str, str]:
    """(errorType, error) of Prometheus' error envelope; ("", "") for anything else."""
    try:
        envelope = json.loads(body)
    except ValueError:
        return "", ""
    if not isinstance(envelope, dict):
        return "", ""
    return str(envelope.get("errorType") or ""), str(envelope.get("error") or "")


def _request_error(exc: requests.RequestException, timeout: float) -> CollectorError:
    """Like sources.http_error, but a read timeout is called a timeout.

    With `Retry(total=0)` urllib3 wraps a read timeout in MaxRetryError, which requests turns
    into a ConnectionError; http_error would then call a slow server "unreachable".
    """
    if _caused_by_timeout(exc):
        exc = requests.Timeout(str(exc))
    return http_error(exc, "Prometheus", timeout)


def _caused_by_timeout(exc: BaseException) -> bool:
    """Whether a timeout is behind `exc` (urllib3's NewConnectionError, a refused connection,
    subclasses its ConnectTimeoutError for old callers' sake, so it is ruled out first)."""
    seen: BaseException | None = exc
    while seen is not None:
        for candidate in (seen, getattr(seen, "reason", None), *getattr(seen, "args", ())):
            if isinstance(candidate, urllib3.exceptions.NewConnectionError):
                return False
            if isinstance(
                candidate, urllib3.exceptions.TimeoutError | socket.timeout | TimeoutError
            ):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def _not_the_api(client: Any, exc: Exception) -> CollectorError:
    url = getattr(client, "url", "the Prometheus URL")
    return CollectorError(
        f"{url} did not answer like the Prometheus query API (is the URL right?): "
        f"{type(exc).__name__}: {str(exc)[:200]}"
    )


# -- shaping and summarising ------------------------------------------------------------------


def downsample(points: Sequence[Point], max_points: int = MAX_POINTS) -> list[Point]:
    """At most `max_points` points that keep the series' visual shape (LTTB).

    Largest-Triangle-Three-Buckets keeps, from each bucket, the point that makes the largest
    triangle with its neighbours, so spikes and steps survive where averaging would flatten them
    and taking every n-th point could miss them. First and last points are always kept. Points
    without a value are dropped only when thinning is needed (a chart shows them as gaps anyway).
    """
    if len(points) <= max_points:
        return list(points)
    valued = [(t, v) for t, v in points if v is not None]
    if len(valued) <= max_points or max_points < 3:
        return valued[:max_points] if max_points < 3 else valued
    every = (len(valued) - 2) / (max_points - 2)
    kept = [valued[0]]
    chosen = 0
    for bucket in range(max_points - 2):
        lo = int(bucket * every) + 1
        hi = int((bucket + 1) * every) + 1
        nxt_lo, nxt_hi = hi, min(int((bucket + 2) * every) + 1, len(valued))
        following = valued[nxt_lo:nxt_hi] or [valued[-1]]
        avg_t = sum(t for t, _ in following) / len(following)
        avg_v = sum(v for _, v in following) / len(following)
        at_t, at_v = valued[chosen]
        best, best_area = lo, -1.0
        for index in range(lo, min(hi, len(valued) - 1)):
            t, v = valued[index]
            area = abs((at_t - avg_t) * (v - at_v) - (at_t - t) * (avg_v - at_v))
            if area > best_area:
                best, best_area = index, area
        kept.append(valued[best])
        chosen = best
    kept.append(valued[-1])
    return kept


def median(values: Sequence[float]) -> float:
    """The median; robust to the odd outlier where a mean is not. ValueError when empty."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of nothing")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True)
class StepChange:
    """Where a series moved from one level to another, and by how much."""

    at: float  # unix seconds of the first point at the new level
    before: float  # median level before
    after: float  # median level from `at` on
    relative: float | None  # |after - before| / |before|; None when before is 0

    @property
    def direction(self) -> str:
        return "up" if self.after > self.before else "down"


def detect_step(
    points: Sequence[Point],
    *,
    min_relative: float = MIN_RELATIVE_CHANGE,
    min_segment: int = MIN_SEGMENT,
    noise_factor: float = NOISE_FACTOR,
) -> StepChange | None:
    """The most pronounced level shift in the series, or None if there is none.

    Every split point is tried, scoring the difference of the medians before and after it
    (medians, so a spike is not a step) weighted by sqrt(n1 * n2 / n), the usual CUSUM weight
    that stops the score from favouring splits next to either end. The shift counts only if it
    is large relative to the level before (`min_relative`: a tiny move in a flat series is not a
    step) and to the noise (`noise_factor` times the median absolute deviation around the two
    levels, scaled to a standard deviation: a noisy series is not stepped by chance).

    The reported time is when the series began to move: from the best split, walk back while
    earlier points are already clearly off the old level (a ramp), or forward past points still
    on it. "Clearly" is the larger of the noise band and 10% of the shift. Quadratic in the
    number of points, which is capped at MAX_POINTS.
    """
    valued = [(t, v) for t, v in points if v is not None]
    n = len(valued)
    if n < 2 * min_segment:
        return None
    values = [v for _, v in valued]
    best_index, best_score = -1, 0.0
    for index in range(min_segment, n - min_segment + 1):
        shift = abs(median(values[index:]) - median(values[:index]))
        score = shift * math.sqrt(index * (n - index) / n)
        if score > best_score * (1 + 1e-9) + 1e-12:  # strictly better: the earliest of equals
            best_index, best_score = index, score
    if best_index < 0:
        return None
    before, after = median(values[:best_index]), median(values[best_index:])
    shift = abs(after - before)
    residuals = [abs(v - before) for v in values[:best_index]]
    residuals += [abs(v - after) for v in values[best_index:]]
    noise = 1.4826 * median(residuals)
    if shift <= noise_factor * noise:
        return None
    relative = shift / abs(before) if before else None
    if relative is not None and relative < min_relative:
        return None
    start = _onset(values, best_index, before, after, max(noise_factor * noise, 0.1 * shift))
    return StepChange(valued[start][0], before, after, relative)


def _onset(values: list[float], split: int, before: float, after: float, band: float) -> int:
    """Index of the first point of the run, around `split`, that is off `before` by > band."""
    sign = 1.0 if after > before else -1.0

    def moved(index: int) -> bool:
        return (values[index] - before) * sign > band

    index = split
    if moved(index):
        while index > 1 and moved(index - 1):
            index -= 1
        return index
    while index < len(values) - 1 and not moved(index):
        index += 1
    return index


def summarize(points: Sequence[Point], first_alert_at: datetime | float | None) -> dict[str, Any]:
    """Baseline vs recent level, extremes and step of one series, as JSON-ready numbers.

    baseline: median of the points before the first alert (None when the series starts later);
    recent: median of the last RECENT_POINTS points; ratio: recent / baseline (None when the
    baseline is missing or 0); step_at: RFC 3339 time of the step, if detect_step found one.
    """
    valued = [(t, v) for t, v in points if v is not None]
    summary: dict[str, Any] = dict.fromkeys(
        ("baseline", "recent", "ratio", "min", "max", "last", "last_at", "step_at"), None
    )
    summary.update(step_from=None, step_to=None, step_change=None, step_direction=None)
    summary["points"] = len(valued)
    if not valued:
        return summary
    alert_ts = _timestamp(first_alert_at)
    values = [v for _, v in valued]
    before = [v for t, v in valued if alert_ts is not None and t < alert_ts]
    baseline = median(before) if before else None
    recent = median(values[-RECENT_POINTS:])
    summary.update(
        baseline=number(baseline),
        recent=number(recent),
        ratio=number(recent / baseline) if baseline else None,
        min=number(min(values)),
        max=number(max(values)),
        last=number(values[-1]),
        last_at=iso(valued[-1][0]),
    )
    step = detect_step(valued)
    if step is not None:
        summary.update(
            step_at=iso(step.at),
            step_from=number(step.before),
            step_to=number(step.after),
            step_change=number(step.relative),
            step_direction=step.direction,
        )
    return summary


def series_json(
    series: Series,
    first_alert_at: datetime | float | None,
    *,
    settle_after: float | None = None,
    max_points: int = MAX_POINTS,
) -> dict[str, Any]:
    """{labels, points, summary} of one series: the summary from all (settled) points, then the
    points thinned for the chart. See `settled` for `settle_after`."""
    return {
        "labels": dict(series.labels),
        "points": [[_ts(t), number(v)] for t, v in downsample(series.points, max_points)],
        "summary": summarize(settled(series.points, settle_after), first_alert_at),
    }


def settled(points: Sequence[Point], settle_after: float | None) -> list[Point]:
    """The points from `settle_after` on, or all of them if that would leave too few.

    rate() and other range functions read low for a series' first range: they extrapolate from
    the few samples there are. A series that starts inside the window (a new pod, a restarted
    exporter, replayed data) would otherwise show a "step up" where its samples begin; callers
    pass the series' first time plus the query's longest range (see `settle_time`).
    """
    if settle_after is None:
        return list(points)
    kept = [(t, v) for t, v in points if t >= settle_after]
    return kept if len(kept) >= 2 * MIN_SEGMENT else list(points)


def settle_time(query: str, series: Series, window_start: datetime, step: int) -> float | None:
    """When the series' range-function values become trustworthy, or None if from the start.

    None unless the query uses a range (`[5m]`) and the series begins after the window's first
    step, i.e. its samples begin inside the window.
    """
    longest = longest_range(query)
    if not longest or not series.points:
        return None
    first = series.points[0][0]
    if first <= _aware(window_start).timestamp() + step:
        return None
    return first + longest


_RANGE = re.compile(r"\[\s*((?:\d+(?:ms|[smhdwy]))+)\s*(?::[^\]]*)?\]")
_DURATION_PART = re.compile(r"(\d+)(ms|[smhdwy])")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def longest_range(query: str) -> float:
    """The longest range selector or subquery range in a PromQL query, in seconds (0: none)."""
    longest = 0.0
    for match in _RANGE.finditer(query):
        seconds = sum(
            int(amount) * _UNIT_SECONDS[unit]
            for amount, unit in _DURATION_PART.findall(match.group(1))
        )
        longest = max(longest, seconds)
    return longest


def interest(summary: dict[str, Any]) -> float:
    """How much a series changed, for putting the telling ones first when space is short."""
    if summary.get("step_at"):
        change = summary.get("step_change")
        return 10.0 + (min(change, 10.0) if change is not None else 10.0)
    ratio = summary.get("ratio")
    if ratio and ratio > 0:
        return min(abs(math.log(ratio)), 10.0)
    return 0.0


# -- small conversions -------------------------------------------------------------------------


def number(value: float | None) -> float | None:
    """A finite float rounded to 6 significant digits (shorter JSON, no false precision)."""
    if value is None or not math.isfinite(value):
        return None
    rounded = float(f"{value:.6g}")
    return int(rounded) if rounded.is_integer() and abs(rounded) < 2**53 else rounded


def iso(ts: float | datetime | None) -> str | None:
    """RFC 3339 UTC with a Z, to the second."""
    if ts is None:
        return None
    moment = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return _aware(moment).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _finite(value: Any) -> float | None:
    try:
        number_ = float(value)
    except (TypeError, ValueError):
        return None
    return number_ if math.isfinite(number_) else None


def _ts(ts: float) -> float | int:
    return int(ts) if float(ts).is_integer() else round(ts, 3)


def _timestamp(value: datetime | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _aware(value).timestamp()
    return float(value)


def _aware(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC (Django stores UTC); the client sends unix seconds."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

"""Range-query helpers: step choice, downsampling, summaries and step detection, on synthetic data."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from collectors.series import (
    MAX_POINTS,
    Series,
    choose_step,
    detect_step,
    downsample,
    iso,
    longest_range,
    median,
    number,
    parse_matrix,
    rate_window,
    series_json,
    settle_time,
    settled,
    summarize,
)

T0 = 1_800_000_000.0  # a whole minute, far from any DST or epoch edge


def series(values, *, start=T0, every=60.0):
    return [(start + i * every, v) for i, v in enumerate(values)]


# -- step and range choice ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "step"),
    [
        (timedelta(minutes=10), 15),
        (timedelta(minutes=30), 20),
        (timedelta(hours=1), 60),
        (timedelta(hours=1, minutes=30), 60),
        (timedelta(hours=6), 300),
        (timedelta(days=2), 1800),
        (timedelta(days=30), 7 * 3600),
    ],
)
def test_the_step_keeps_a_range_query_within_120_points_and_is_a_round_number(span, step):
    end = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    chosen = choose_step(end - span, end)
    assert chosen == step
    assert span.total_seconds() / chosen + 1 <= MAX_POINTS


def test_the_step_is_never_finer_than_a_scrape_interval():
    end = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert choose_step(end - timedelta(seconds=30), end) == 15
    assert choose_step(end, end) == 15


def test_the_rate_window_is_five_minutes_or_two_steps():
    assert rate_window(60) == "5m"
    assert rate_window(300) == "10m"
    assert rate_window(7 * 3600) == "840m"


def test_the_longest_range_of_a_query_is_found():
    assert longest_range("rate(x[5m]) / rate(y[1h30m])") == 5400
    assert longest_range("max_over_time(rate(x[2m])[30m:1m])") == 1800
    assert longest_range("up == 0") == 0


# -- downsampling -------------------------------------------------------------------------------


def test_a_short_series_is_kept_as_it_is():
    points = series([1.0, None, 3.0])
    assert downsample(points, 10) == points


def test_downsampling_keeps_the_ends_and_the_limit():
    points = series([float(i % 7) for i in range(1000)], every=15)
    thinned = downsample(points, 120)
    assert len(thinned) == 120
    assert thinned[0] == points[0] and thinned[-1] == points[-1]
    assert [t for t, _ in thinned] == sorted(t for t, _ in thinned)


def test_downsampling_keeps_a_single_spike_that_averaging_would_flatten():
    values = [10.0] * 1000
    values[537] = 500.0
    thinned = downsample(series(values, every=15), 120)
    assert max(v for _, v in thinned) == 500.0


def test_downsampling_keeps_a_step():
    values = [1.0] * 600 + [9.0] * 600
    thinned = downsample(series(values, every=15), 100)
    assert {v for _, v in thinned} == {1.0, 9.0}


def test_points_without_a_value_are_dropped_only_when_thinning():
    values = [None if i % 10 == 0 else float(i) for i in range(500)]
    thinned = downsample(series(values), 50)
    assert len(thinned) == 50 and all(v is not None for _, v in thinned)


# -- step detection -----------------------------------------------------------------------------


def test_a_clean_step_up_is_found_where_it_happens():
    points = series([5.0] * 40 + [9.0] * 20)
    step = detect_step(points)
    assert step is not None
    assert step.at == points[40][0]
    assert (step.before, step.after, step.direction) == (5.0, 9.0, "up")
    assert step.relative == pytest.approx(0.8)


def test_a_step_down_is_found():
    step = detect_step(series([100.0] * 20 + [20.0] * 40))
    assert step is not None and step.direction == "down" and step.at == T0 + 20 * 60


def test_a_flat_series_has_no_step():
    assert detect_step(series([7.0] * 60)) is None


def test_pure_noise_has_no_step():
    rng = random.Random(42)
    for _ in range(20):
        values = [50.0 + rng.gauss(0, 3) for _ in range(90)]
        assert detect_step(series(values)) is None


def test_a_step_is_found_through_noise():
    rng = random.Random(7)
    values = [50 + rng.gauss(0, 2) for _ in range(50)] + [80 + rng.gauss(0, 2) for _ in range(40)]
    step = detect_step(series(values))
    assert step is not None and step.direction == "up"
    assert abs(step.at - (T0 + 50 * 60)) <= 2 * 60
    assert step.before == pytest.approx(50, abs=2) and step.after == pytest.approx(80, abs=2)


def test_a_small_relative_change_is_not_a_step():
    # 64 °C -> 66 °C: clean, but 3% is not worth an engineer's attention.
    assert detect_step(series([64.0] * 36 + [66.0] * 24)) is None


def test_a_single_spike_is_not_a_step():
    values = [10.0] * 60
    values[30] = 1000.0
    assert detect_step(series(values)) is None


def test_a_ramp_reports_when_it_began():
    # Flat, then a climb over ten points to a plateau: the answer is the start of the climb.
    values = [0.5] * 34 + [0.5 + 0.05 * i for i in range(1, 10)] + [0.99] * 17
    step = detect_step(series(values))
    assert step is not None
    assert T0 + 34 * 60 <= step.at <= T0 + 36 * 60


def test_a_step_from_zero_has_no_relative_size():
    step = detect_step(series([0.0] * 30 + [79.0] * 30))
    assert step is not None and step.relative is None and step.before == 0


def test_too_few_points_have_no_step():
    assert detect_step(series([1.0, 1.0, 9.0, 9.0])) is None


def test_missing_values_are_ignored():
    values = [1.0, None] * 20 + [5.0, None] * 20
    step = detect_step(series(values))
    assert step is not None and step.after == 5.0


# -- summaries ----------------------------------------------------------------------------------


def test_the_summary_compares_the_baseline_before_the_alert_with_the_last_points():
    points = series([2.0] * 40 + [8.0] * 20)
    alert_at = datetime.fromtimestamp(T0 + 45 * 60, UTC)
    summary = summarize(points, alert_at)
    assert summary["baseline"] == 2  # median of the 45 points before the alert
    assert summary["recent"] == 8
    assert summary["ratio"] == 4
    assert (summary["min"], summary["max"], summary["last"]) == (2, 8, 8)
    assert summary["last_at"] == iso(T0 + 59 * 60)
    assert summary["step_at"] == iso(T0 + 40 * 60)
    assert (summary["step_from"], summary["step_to"], summary["step_direction"]) == (2, 8, "up")
    assert summary["step_change"] == 3
    assert summary["points"] == 60


def test_a_series_that_starts_after_the_alert_has_no_baseline():
    summary = summarize(series([3.0] * 10), T0 - 600)
    assert summary["baseline"] is None and summary["ratio"] is None and summary["recent"] == 3


def test_a_zero_baseline_has_no_ratio():
    summary = summarize(series([0.0] * 20 + [4.0] * 5), T0 + 30 * 60)
    assert summary["baseline"] == 0 and summary["ratio"] is None


def test_an_empty_series_has_an_empty_summary():
    summary = summarize([], T0)
    assert summary["points"] == 0 and summary["last"] is None and summary["step_at"] is None


def test_series_json_thins_the_points_but_summarises_them_all():
    values = [1.0] * 300 + [3.0] * 200
    data = series_json(Series({"pod": "a"}, series(values, every=15)), T0 + 3000 * 15)
    assert data["labels"] == {"pod": "a"}
    assert len(data["points"]) <= MAX_POINTS
    assert data["summary"]["points"] == 500
    assert data["summary"]["step_at"] == iso(T0 + 300 * 15)


def test_a_rate_that_is_still_filling_its_window_is_not_called_a_step():
    # rate() over 5m reads low for the first 5 minutes of a series that starts in the window.
    values = [775.0, 1000.0, 1240.0, 1400.0, 1550.0] + [1550.0] * 55
    s = Series({}, series(values))
    window_start = datetime.fromtimestamp(T0 - 1800, UTC)
    after = settle_time("rate(x[5m])", s, window_start, 60)
    assert after == T0 + 300
    assert summarize(settled(s.points, after), None)["step_at"] is None
    assert summarize(s.points, None)["step_at"] is not None  # what the settling avoids
    # A series there from the window's start, or a query without a range, needs no settling.
    assert settle_time("rate(x[5m])", s, datetime.fromtimestamp(T0, UTC), 60) is None
    assert settle_time("x", s, window_start, 60) is None


# -- parsing and numbers ------------------------------------------------------------------------


def test_a_matrix_is_parsed_and_non_finite_values_become_none():
    parsed = parse_matrix(
        [
            {"metric": {"pod": "a"}, "values": [[T0, "1.5"], [T0 + 60, "NaN"], [T0 + 120, "+Inf"]]},
            {"metric": {}, "values": [[T0, "2"]]},
        ]
    )
    assert parsed[0].labels == {"pod": "a"}
    assert parsed[0].points == [(T0, 1.5), (T0 + 60, None), (T0 + 120, None)]
    assert parsed[1].points == [(T0, 2.0)]


def test_numbers_are_short_and_json_safe():
    assert number(0.123456789) == 0.123457
    assert number(5.0) == 5 and isinstance(number(5.0), int)
    assert number(float("nan")) is None and number(None) is None
    assert median([3, 1, 2]) == 2 and median([4, 1, 2, 3]) == 2.5
    assert iso(T0) == "2027-01-15T08:00:00Z"

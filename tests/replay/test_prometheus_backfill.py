"""Backfilling scenario metrics into a real Prometheus 2.42 and querying them back over HTTP."""

from __future__ import annotations

import math
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from replay import prometheus as replay_prometheus
from replay.notation import STALE, NotationError, expand_values, parse_duration
from replay.prometheus import (
    BackfillError,
    PrometheusReplayError,
    ReplayPrometheus,
    backfill,
    prometheus_available,
    sample_points,
    write_openmetrics,
)
from tests.support import require_binary

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
NOW = 1_800_000_000.0  # a fixed "now" keeps the OpenMetrics text exact


def _binaries() -> None:
    require_binary("prometheus")
    require_binary("promtool")


def _query(prom: ReplayPrometheus, expr: str, at: float) -> list[dict]:
    answer = requests.get(f"{prom.url}/api/v1/query", params={"query": expr, "time": at}, timeout=5)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", body
    return body["data"]["result"]


def _selector(name: str, labels: dict[str, str]) -> str:
    def quote(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    pairs = ",".join(f'{key}="{quote(value)}"' for key, value in labels.items())
    return f"{name}{{{pairs}}}"


# -- sample_points ---------------------------------------------------------------------------


def test_the_last_value_lands_at_now_and_earlier_ones_an_interval_apart():
    assert sample_points([1.0, 2.0, 3.0], interval=60, now=NOW) == [
        (NOW - 120, 1.0),
        (NOW - 60, 2.0),
        (NOW, 3.0),
    ]


def test_a_missing_value_leaves_its_slot_empty():
    values = expand_values("1 _ 3 _x2 6")
    assert sample_points(values, interval=15, now=NOW) == [
        (NOW - 75, 1.0),
        (NOW - 45, 3.0),
        (NOW, 6.0),
    ]


def test_stale_ends_the_series_and_nothing_is_written_at_or_after_it():
    values = expand_values("1 2 stale 4 _ 6")
    assert values[2] is STALE
    assert sample_points(values, interval=60, now=NOW) == [(NOW - 300, 1.0), (NOW - 240, 2.0)]
    assert sample_points([STALE, 1.0], interval=60, now=NOW) == []


def test_leading_gaps_keep_the_layout_anchored_at_now():
    assert sample_points([None, None, 7.0], interval=30, now=NOW) == [(NOW, 7.0)]
    assert sample_points([], interval=30, now=NOW) == []


@pytest.mark.parametrize("interval", [0, -60, math.nan])
def test_a_non_positive_interval_is_refused(interval):
    with pytest.raises(ValueError, match="interval"):
        sample_points([1.0], interval=interval, now=NOW)


# -- write_openmetrics -----------------------------------------------------------------------


def test_it_writes_exact_openmetrics(tmp_path):
    series = [
        ("zeta", {}, [(NOW, 1.0)]),
        (
            "vllm:gpu_cache_usage_perc",
            {"pod": "p-1", "path": 'C:\\tmp "x"\nnext'},
            [(NOW - 60.5, 0.61), (NOW, 1520344.0)],
        ),
        ("empty", {"a": "b"}, []),
        ("vllm:gpu_cache_usage_perc", {"pod": "p-2"}, [(NOW - 1.0, math.nan), (NOW, math.inf)]),
        ("alpha_bucket", {"le": "+Inf"}, [(NOW + 0.1234, -math.inf), (NOW + 1, 1e20)]),
    ]
    path = write_openmetrics(series, tmp_path / "m.om")
    assert path == tmp_path / "m.om"
    assert path.read_text() == (
        'alpha_bucket{le="+Inf"} -Inf 1800000000.123\n'
        'alpha_bucket{le="+Inf"} 1e+20 1800000001\n'
        'vllm:gpu_cache_usage_perc{pod="p-1",path="C:\\\\tmp \\"x\\"\\nnext"} 0.61 1799999939.5\n'
        'vllm:gpu_cache_usage_perc{pod="p-1",path="C:\\\\tmp \\"x\\"\\nnext"} 1520344 1800000000\n'
        'vllm:gpu_cache_usage_perc{pod="p-2"} NaN 1799999999\n'
        'vllm:gpu_cache_usage_perc{pod="p-2"} +Inf 1800000000\n'
        "zeta 1 1800000000\n"
        "# EOF\n"
    )


def test_an_empty_series_list_is_just_eof(tmp_path):
    assert write_openmetrics([], tmp_path / "m.om").read_text() == "# EOF\n"


@pytest.mark.parametrize(
    ("series", "message"),
    [
        ([("up", {}, [(NOW, 1.0), (NOW, 2.0)])], "strictly ascending"),
        ([("up", {}, [(NOW, 1.0), (NOW - 1, 2.0)])], "strictly ascending"),
        ([("up", {"a": "1"}, [(NOW, 1.0)]), ("up", {"a": "1"}, [(NOW, 2.0)])], "given twice"),
        ([("1up", {}, [(NOW, 1.0)])], "invalid metric name"),
        ([("up", {"a-b": "1"}, [(NOW, 1.0)])], "invalid label name"),
        ([("up", {"__name__": "x"}, [(NOW, 1.0)])], "invalid label name"),
    ],
)
def test_it_refuses_what_promtool_would_refuse(tmp_path, series, message):
    with pytest.raises(ValueError, match=message):
        write_openmetrics(series, tmp_path / "m.om")


# -- backfill --------------------------------------------------------------------------------


def test_backfill_writes_blocks_promtool_can_list(tmp_path):
    _binaries()
    om = write_openmetrics([("up", {"job": "x"}, [(NOW - 60, 1.0), (NOW, 0.0)])], tmp_path / "m.om")
    backfill(om, tmp_path / "data")
    listing = subprocess.run(
        ["promtool", "tsdb", "list", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "1800000000001" in listing  # a block's max time is exclusive: the last ms + 1


def test_a_failed_backfill_carries_promtools_output(tmp_path):
    _binaries()
    bad = tmp_path / "bad.om"
    bad.write_text("up 1 1800000000\n")  # no "# EOF"
    with pytest.raises(BackfillError) as caught:
        backfill(bad, tmp_path / "data")
    assert "does not end with # EOF" in str(caught.value)
    assert "exit 1" in str(caught.value)


def test_prometheus_available_needs_both_binaries(monkeypatch):
    _binaries()
    assert prometheus_available()
    monkeypatch.setenv("PATH", "/nonexistent")
    assert not prometheus_available()


# -- from_scenario_metrics -------------------------------------------------------------------


def test_a_series_interval_overrides_the_scenario_default():
    prom = ReplayPrometheus.from_scenario_metrics(
        [
            {"series": 'a{x="1"}', "values": "1 2"},
            {"series": "b", "values": "1 2", "interval": "15s"},
        ],
        duration="10m",
        interval="2m",
        now=NOW,
    )
    assert prom.series == [
        ("a", {"x": "1"}, [(NOW - 120, 1.0), (NOW, 2.0)]),
        ("b", {}, [(NOW - 15, 1.0), (NOW, 2.0)]),
    ]
    assert prom.now == NOW


def test_defaults_are_sixty_minutes_of_one_minute_samples():
    prom = ReplayPrometheus.from_scenario_metrics(
        [{"series": "a", "values": "0+1x59"}], duration=None, interval=None, now=NOW
    )
    ((_, _, points),) = prom.series
    assert points[0] == (NOW - 59 * 60, 0.0) and points[-1] == (NOW, 59.0)


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ([{"series": "a", "values": "0+1x60"}], r"metrics\[0\] a: 61 samples x 60s reach further"),
        ([{"series": "a", "values": "1 oops"}], r"metrics\[0\] a: bad value 'oops'"),
        ([{"series": 'a{b!="c"}', "values": "1"}], r"metrics\[0\]: bad series selector"),
        ([{"series": "a", "values": "1", "interval": "1x"}], r"metrics\[0\] a: bad duration"),
        ([{"series": "a", "values": "1", "interval": "0s"}], "interval must be positive"),
        ([{"series": "a"}], r"metrics\[0\]: each item needs `series` and `values`"),
        (
            [{"series": 'a{x="1"}', "values": "1"}, {"series": 'a{ x = "1" }', "values": "2"}],
            r"metrics\[1\] a: same series as metrics\[0\]",
        ),
    ],
)
def test_a_malformed_metrics_item_is_named(metrics, message):
    with pytest.raises(NotationError, match=message):
        ReplayPrometheus.from_scenario_metrics(metrics, duration="60m", interval="1m", now=NOW)


# -- every example scenario, backfilled into a real Prometheus -------------------------------


def _hour_query(scenario: dict) -> tuple[str, float]:
    """A PromQL expression with a value at every minute of the last hour, and its value at now.

    Preferably one series that has a number in every slot. A scenario may have none: when a
    deploy replaces pods, old series end and new ones begin; their metric name's `sum` still
    spans the hour.
    """
    default = parse_duration(scenario.get("interval") or "1m")
    by_name: dict[str, list[list[tuple[float, float]]]] = {}
    for item in scenario.get("metrics") or []:
        values = expand_values(str(item["values"]))
        step = parse_duration(item["interval"]) if "interval" in item else default
        name, labels = replay_prometheus.parse_series_selector(item["series"])
        points = sample_points(values, interval=step, now=0)
        if len(points) == len(values) and points[0][0] <= -3600 + step:
            return _selector(name, labels), points[-1][1]
        by_name.setdefault(name, []).append(points)
    for name, series in by_name.items():
        times = {t for points in series for t, _ in points}
        if all(-minute * 60 in times for minute in range(60)):
            # Each series contributes its newest sample of the last 5 minutes (the lookback).
            at_now = [[v for t, v in points if t > -300] for points in series]
            return f"sum({name})", sum(values[-1] for values in at_now if values)
    raise AssertionError(f"{scenario['name']}: no metric has values over the whole last hour")


def _last_value_series(scenario: dict) -> tuple[str, dict[str, str], float]:
    """A series whose LAST slot holds a number (not `_` or `stale`), and that number."""
    for item in scenario.get("metrics") or []:
        last = expand_values(str(item["values"]))[-1]
        if isinstance(last, float) and not math.isnan(last):
            name, labels = replay_prometheus.parse_series_selector(item["series"])
            return name, labels, last
    raise AssertionError(f"{scenario['name']}: no series has a value at now")


@pytest.fixture(scope="module", params=SCENARIOS, ids=lambda path: path.stem)
def replayed(request, tmp_path_factory):
    """One Prometheus per scenario, shared by the tests below: (scenario, server, start secs)."""
    _binaries()
    scenario = yaml.safe_load(request.param.read_text())
    began = time.monotonic()
    prom = ReplayPrometheus.from_scenario_metrics(
        scenario.get("metrics") or [],
        duration=scenario.get("duration"),
        interval=scenario.get("interval"),
        rules=scenario.get("rules"),
        now=float(math.floor(time.time())),
        workdir=tmp_path_factory.mktemp(request.param.stem),
    )
    with prom:
        yield scenario, prom, time.monotonic() - began
    assert prom._process is None  # stopped


def test_the_scenario_starts_within_seconds(replayed):
    _, _, seconds = replayed
    assert seconds < 10


def test_an_instant_query_at_now_returns_the_last_value(replayed):
    scenario, prom, _ = replayed
    name, labels, last = _last_value_series(scenario)
    result = _query(prom, _selector(name, labels), prom.now)
    assert len(result) == 1
    assert result[0]["metric"] == {"__name__": name, **labels}
    assert result[0]["value"][0] == prom.now
    assert float(result[0]["value"][1]) == last


def test_a_range_query_over_the_last_hour_returns_a_point_a_minute(replayed):
    scenario, prom, _ = replayed
    expr, last = _hour_query(scenario)
    answer = requests.get(
        f"{prom.url}/api/v1/query_range",
        params={
            "query": expr,
            "start": prom.now - 3600,
            "end": prom.now,
            "step": "60s",
        },
        timeout=5,
    ).json()
    assert answer["status"] == "success", answer
    ((series,),) = [answer["data"]["result"]]
    assert 55 <= len(series["values"]) <= 61
    assert series["values"][-1][0] == prom.now
    assert float(series["values"][-1][1]) == last


def test_the_scenario_rules_are_loaded(replayed):
    scenario, prom, _ = replayed
    groups = requests.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    expected = [group["name"] for group in (scenario.get("rules") or {}).get("groups") or []]
    assert [group["name"] for group in groups] == expected


def test_every_sample_reads_back_exactly(replayed):
    """The raw samples of the scenario's window are what the notation says: each slot's value
    at its time, nothing for `_`, nothing at or after `stale` (blocks hold no markers)."""
    scenario, prom, _ = replayed
    window = parse_duration(scenario.get("duration") or "60m")
    default = parse_duration(scenario.get("interval") or "1m")
    expected = {}
    for item in scenario.get("metrics") or []:
        name, labels = replay_prometheus.parse_series_selector(item["series"])
        step = parse_duration(item["interval"]) if "interval" in item else default
        values = expand_values(str(item["values"]))
        points = sample_points(values, interval=step, now=prom.now)
        if points:
            expected[(name, *sorted(labels.items()))] = [(t, v) for t, v in points]
    names = "|".join(sorted({key[0] for key in expected}))
    result = _query(prom, f'{{__name__=~"{names}"}}[{window:g}s]', prom.now)
    actual = {
        (series["metric"].pop("__name__"), *sorted(series["metric"].items())): [
            (t, float(v)) for t, v in series["values"]
        ]
        for series in result
    }
    assert actual == expected


# -- rules, readiness and failures -----------------------------------------------------------

RULES = {
    "groups": [
        {
            "name": "replay-test",
            "interval": "15s",
            "rules": [
                {"record": "job:up:sum", "expr": "sum by (job) (up)"},
                {
                    "alert": "Down",
                    "expr": "up == 0",
                    "for": "1m",
                    "labels": {"severity": "page"},
                    "annotations": {"summary": 'Target {{ $labels.job }} is "down" ✓'},
                },
            ],
        },
        {"name": "second", "rules": [{"record": "x:y", "expr": "vector(1)"}]},
    ]
}


def test_rules_are_loaded_and_their_expressions_query_the_backfill(tmp_path):
    _binaries()
    now = time.time()  # fractional, as datetime.timestamp() gives
    series = [("up", {"job": "api"}, sample_points([1.0, 1.0, 0.0], interval=60, now=now))]
    with ReplayPrometheus(series, RULES, now=now, workdir=tmp_path) as prom:
        groups = requests.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert [g["name"] for g in groups] == ["replay-test", "second"]
        assert [r["name"] for r in groups[0]["rules"]] == ["job:up:sum", "Down"]
        assert (
            groups[0]["rules"][1]["annotations"]["summary"]
            == RULES["groups"][0]["rules"][1]["annotations"]["summary"]
        )
        assert _query(prom, "up == 0", now)[0]["metric"] == {"__name__": "up", "job": "api"}
        # The fractional now is rounded DOWN to a millisecond, so the sample is visible at now.
        assert _query(prom, "up", now)[0]["value"][1] == "0"
    assert (tmp_path / "rules.yml").exists() and (tmp_path / "prometheus.log").exists()


def test_without_series_it_starts_and_stops_cleanly():
    _binaries()
    prom = ReplayPrometheus([], None)
    prom.start()
    workdir = prom.workdir
    try:
        assert requests.get(f"{prom.url}/-/ready", timeout=5).status_code == 200
    finally:
        prom.stop()
    prom.stop()  # idempotent
    assert not workdir.exists()  # a temporary workdir is removed
    with pytest.raises(PrometheusReplayError, match="not started"):
        prom.url  # noqa: B018


def test_a_broken_rule_fails_the_start_with_prometheus_log(tmp_path):
    _binaries()
    rules = {"groups": [{"name": "bad", "rules": [{"alert": "X", "expr": "sum(("}]}]}
    prom = ReplayPrometheus([("up", {}, [(time.time(), 1.0)])], rules, workdir=tmp_path)
    with pytest.raises(PrometheusReplayError) as caught:
        prom.start()
    message = str(caught.value)
    assert "prometheus exited with status" in message
    assert "rules.yml" in message  # the tail of its log says which file
    assert prom._process is None


def test_a_taken_port_is_retried(tmp_path, monkeypatch):
    _binaries()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy])
        real = replay_prometheus._free_port
        monkeypatch.setattr(replay_prometheus, "_free_port", lambda: next(ports, None) or real())
        now = float(math.floor(time.time()))
        series = [("up", {}, [(now, 1.0)])]
        with ReplayPrometheus(series, None, now=now, workdir=tmp_path) as prom:
            assert not prom.url.endswith(f":{busy}")
            assert _query(prom, "up", prom.now)[0]["value"][1] == "1"


def test_a_workdir_gets_a_fresh_data_dir_each_start(tmp_path):
    _binaries()
    now = float(math.floor(time.time()))
    with ReplayPrometheus([("old", {}, [(now, 1.0)])], None, now=now, workdir=tmp_path):
        pass
    with ReplayPrometheus([("new", {}, [(now, 2.0)])], None, now=now, workdir=tmp_path) as prom:
        assert _query(prom, "old", now) == []
        assert _query(prom, "new", now)[0]["value"][1] == "2"

"""The scenario notations: promtool's expanding values, series selectors and durations."""

from __future__ import annotations

import math

import pytest

from replay.notation import (
    STALE,
    NotationError,
    Stale,
    expand_values,
    parse_duration,
    parse_series_selector,
)

# -- expand_values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 2.5 -3 +4", [1.0, 2.5, -3.0, 4.0]),
        ("1e3 2.5E-2 .5 7.", [1000.0, 0.025, 0.5, 7.0]),
        ("0+10x3", [0.0, 10.0, 20.0, 30.0]),
        ("1-2x4", [1.0, -1.0, -3.0, -5.0, -7.0]),
        ("-1+1x2", [-1.0, 0.0, 1.0]),
        ("1e3+1e2x2", [1000.0, 1100.0, 1200.0]),
        ("5x2", [5.0, 5.0, 5.0]),
        ("0+0x0", [0.0]),
        ("_", [None]),
        ("_x3", [None, None, None]),
        ("1 _ 2", [1.0, None, 2.0]),
        ("stale", [STALE]),
        ("stalex2", [STALE, STALE, STALE]),
        ("1 stale _x2", [1.0, STALE, None, None]),
        ("", []),
        ("  1\n\t2  ", [1.0, 2.0]),
    ],
)
def test_it_expands_each_form(text, expected):
    assert expand_values(text) == expected


def test_it_reads_infinities_and_nan_in_any_case():
    values = expand_values("+Inf -Inf Inf inf NaN nan")
    assert values[:4] == [math.inf, -math.inf, math.inf, math.inf]
    assert all(math.isnan(v) for v in values[4:])


def test_decimal_ramps_do_not_accumulate_float_noise():
    assert expand_values("0.56+0.05x8") == [0.56, 0.61, 0.66, 0.71, 0.76, 0.81, 0.86, 0.91, 0.96]


def test_stale_is_one_singleton():
    assert Stale() is STALE
    assert repr(STALE) == "STALE"


def test_it_expands_a_real_scenario_line_to_sixty_slots():
    values = expand_values("1520344+240x51 stale _x7")
    assert len(values) == 60
    assert values[51] == 1520344 + 51 * 240
    assert values[52] is STALE
    assert values[53:] == [None] * 7


@pytest.mark.parametrize(
    ("text", "token", "number", "offset"),
    [
        ("1 abc", "abc", 2, 2),
        ("1+x3", "1+x3", 1, 0),
        ("0 1+2x", "1+2x", 2, 2),
        ("x3", "x3", 1, 0),
        ("1+2x3x4", "1+2x3x4", 1, 0),
        ("stale+1x2", "stale+1x2", 1, 0),
        ("_+1x2", "_+1x2", 1, 0),
        ("1,2", "1,2", 1, 0),
        ("1 2 0x1F", "0x1F", 3, 4),
        ("1 +-2", "+-2", 2, 2),
        ("1+2x-3", "1+2x-3", 1, 0),
        ("1+2x1.5", "1+2x1.5", 1, 0),
        ("Stale", "Stale", 1, 0),
        ("1 infinity", "infinity", 2, 2),
    ],
)
def test_it_names_the_bad_token_and_its_position(text, token, number, offset):
    with pytest.raises(NotationError) as caught:
        expand_values(text)
    message = str(caught.value)
    assert repr(token) in message
    assert f"token {number}, at character {offset}" in message


def test_a_notation_error_is_a_value_error():
    with pytest.raises(ValueError):
        expand_values("oops")


# -- parse_series_selector -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "labels"),
    [
        ("up", "up", {}),
        ("vllm:num_requests_waiting", "vllm:num_requests_waiting", {}),
        ("_x{}", "_x", {}),
        ('up{job="api"}', "up", {"job": "api"}),
        ('up{job="api",pod="p-1"}', "up", {"job": "api", "pod": "p-1"}),
        ('  up { job = "api" , pod="p" , }  ', "up", {"job": "api", "pod": "p"}),
        ('m{le="+Inf"}', "m", {"le": "+Inf"}),
        ('m{a=""}', "m", {"a": ""}),
        ('m{a="say \\"hi\\""}', "m", {"a": 'say "hi"'}),
        ('m{a="C:\\\\dir"}', "m", {"a": "C:\\dir"}),
        ('m{a="two\\nlines"}', "m", {"a": "two\nlines"}),
        ('m{a="{,}=~!"}', "m", {"a": "{,}=~!"}),
        ('m{a="ünïcode ✓"}', "m", {"a": "ünïcode ✓"}),
        (
            'DCGM_FI_DEV_XID_ERRORS{Hostname="gpu-node-3",gpu="2",UUID="GPU-1"}',
            "DCGM_FI_DEV_XID_ERRORS",
            {"Hostname": "gpu-node-3", "gpu": "2", "UUID": "GPU-1"},
        ),
    ],
)
def test_it_parses_equality_selectors(text, name, labels):
    assert parse_series_selector(text) == (name, labels)


def test_it_keeps_the_label_order_as_written():
    _, labels = parse_series_selector('m{z="1",a="2",m="3"}')
    assert list(labels) == ["z", "a", "m"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('up{job!="api"}', "only '=' matchers"),
        ('up{job=~"a.*"}', "only '=' matchers"),
        ('up{job!~"a"}', "only '=' matchers"),
        ("up{job=api}", "double quotes"),
        ("up{job='api'}", "double quotes"),
        ('up{job="api}', "unterminated value"),
        ('up{job="api"', "expected ',' or '}'"),
        ('up{job="a\\tb"}', "unsupported escape"),
        ('up{job="a",job="b"}', "given twice"),
        ('up{__name__="up"}', "__name__"),
        ('{job="api"}', "expected a metric name"),
        ('1up{job="api"}', "expected a metric name"),
        ("", "expected a metric name"),
        ('up{job="api"} 1', "after the closing"),
        ('up{job="a" pod="b"}', "expected ',' or '}'"),
        ('up{1job="a"}', "expected a label name"),
        ("up{job}", "expected '='"),
        ("up[5m]", "expected '{'"),
        ('up{job="a",,}', "expected a label name"),
    ],
)
def test_it_refuses_what_does_not_name_one_series(text, reason):
    with pytest.raises(NotationError) as caught:
        parse_series_selector(text)
    assert reason in str(caught.value)
    assert repr(text) in str(caught.value)


# -- parse_duration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60m", 3600),
        ("1m", 60),
        ("30s", 30),
        ("90s", 90),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1d", 86400),
        ("1w", 604800),
        ("1y", 365 * 86400),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        ("500ms", 0.5),
        ("1m500ms", 60.5),
        ("0", 0),
        ("0s", 0),
    ],
)
def test_it_reads_prometheus_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "60", "1.5m", "m", "1x", "1m1h", "1m 30s", " 1m", "-1m", "1M", "1h1h", "1s1m", "1min"],
)
def test_it_refuses_what_prometheus_refuses(text):
    with pytest.raises(NotationError) as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("value", [60, 1.5, None])
def test_a_yaml_number_is_not_a_duration(value):
    with pytest.raises(NotationError, match="expected a string"):
        parse_duration(value)

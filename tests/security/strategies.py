"""Hypothesis strategies: Alertmanager notifications, deploy events and GPU snapshots, valid and
near-valid, plus arbitrary JSON and bytes.

"Near-valid" is a valid payload with one thing wrong — a field removed, a value replaced by any
JSON value, a time that is not quite RFC 3339 or out of range, a string with NUL or far too long
— because that is where parsers crash: arbitrary bytes are refused at the first byte.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

# Text as clusters write it, and as attackers do: any code point but lone surrogates (JSON
# encoders never emit those; the raw-bytes strategies cover invalid encodings), NUL included.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
LABEL_NAME = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True)
SHORT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20)
# The machine APIs refuse NUL (422 naming the field): their valid inputs have none.
CLEAN = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
CLEAN_TEXT = st.text(CLEAN, max_size=40)
CLEAN_SHORT = st.text(CLEAN, min_size=1, max_size=20)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=20,
)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


MOMENTS = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
)
# Times that are almost RFC 3339, or valid but at the edges of what datetime and databases hold.
ODD_TIMES = st.one_of(
    st.sampled_from(
        [
            "",
            "0001-01-01T00:00:00Z",  # Go's zero time: "unset"
            "0001-01-01T00:30:00+23:59",  # before year 1 in UTC
            "9999-12-31T23:59:59-23:59",  # after year 9999 in UTC
            "9999-12-31T23:59:59.999999999Z",
            "2026-11-23T10:00:00",  # no zone
            "2026-11-23 10:00:00Z",
            "2026-11-23T10:00:00.123456789+05:30",
            "2026-02-30T10:00:00Z",
            "2026-11-23T24:00:00Z",
            "20261123T100000Z",
            "2026-11-23T10:00:00+25:00",
            "now",
            "2026-11-23T10:00:00Z\x00",
        ]
    ),
    st.integers(),
    st.floats(),
    TEXT,
)


@st.composite
def alerts(draw, *, status: str | None = None) -> dict:
    labels = draw(st.dictionaries(LABEL_NAME, TEXT, max_size=5))
    labels["alertname"] = draw(SHORT)
    starts = draw(MOMENTS)
    state = status or draw(st.sampled_from(["firing", "resolved"]))
    ends = starts + draw(st.timedeltas(timedelta(seconds=1), timedelta(days=2)))
    return {
        "status": state,
        "labels": labels,
        "annotations": draw(st.dictionaries(LABEL_NAME, TEXT, max_size=3)),
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends) if state == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": draw(st.sampled_from(["", "http://prometheus:9090/graph?g0.expr=up"])),
        "fingerprint": draw(st.from_regex(r"[0-9a-f]{16}", fullmatch=True)),
    }


@st.composite
def notifications(draw) -> dict:
    """A valid Alertmanager v4 notification (by the contract of incidents/alertmanager.py)."""
    items = draw(st.lists(alerts(), min_size=1, max_size=4))
    common = dict(set.intersection(*(set(a["labels"].items()) for a in items)))
    group = draw(st.dictionaries(LABEL_NAME, TEXT, max_size=2))
    return {
        "version": "4",
        "groupKey": "{}:" + json.dumps(group, sort_keys=True) + draw(TEXT),
        "truncatedAlerts": draw(st.integers(0, 5)),
        "status": "firing" if any(a["status"] == "firing" for a in items) else "resolved",
        "receiver": draw(TEXT),
        "groupLabels": group,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": items,
    }


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside nested dicts and lists, as tuples of keys and indexes."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _set(data: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _delete(data: Any, path: tuple) -> None:
    for part in path[:-1]:
        data = data[part]
    del data[path[-1]]


def field_path(path: tuple) -> str:
    """`alerts[2].startsAt`, as PayloadError names a field."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@st.composite
def mutated(draw, valid: st.SearchStrategy[dict]) -> tuple[dict, tuple, str]:
    """(payload, path, how): a valid payload with the value at `path` removed or replaced."""
    payload = copy.deepcopy(draw(valid))
    path = draw(st.sampled_from(_paths(payload)))
    how = draw(st.sampled_from(["delete", "json", "time", "nul", "long", "number"]))
    if how == "delete":
        _delete(payload, path)
    elif how == "json":
        _set(payload, path, draw(JSON))
    elif how == "time":
        _set(payload, path, draw(ODD_TIMES))
    elif how == "nul":
        _set(payload, path, draw(TEXT) + "\x00" + draw(TEXT))
    elif how == "long":
        _set(payload, path, "x" * draw(st.sampled_from([254, 501, 2001, 70_000])))
    else:
        _set(
            payload,
            path,
            draw(st.sampled_from([-1, 2**64, 2**64 - 1, 10**30, 1e308, -0.0, True])),
        )
    return payload, path, how


# -- deploy events and GPU snapshots (collectors/api.py) --------------------------------------

NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?", fullmatch=True)


@st.composite
def deploys(draw) -> dict:
    body: dict[str, Any] = {"service": draw(NAMES), "version": draw(CLEAN_SHORT)}
    optional = {
        "namespace": NAMES,
        "previous_version": CLEAN_SHORT,
        "model": CLEAN_SHORT,
        "at": MOMENTS.map(rfc3339),
        "author": CLEAN_SHORT,
        "description": CLEAN_TEXT,
        "url": st.sampled_from(["https://ci.example/run/42", ""]),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


@st.composite
def gpus(draw, index: int) -> dict:
    u64 = st.integers(0, 2**64 - 1)
    gpu: dict[str, Any] = {"index": index}
    optional = {
        "uuid": st.just(f"GPU-{index:08d}-aaaa-bbbb-cccc-dddddddddddd"),
        "name": CLEAN_SHORT,
        "temperature_c": st.integers(-100, 300),
        "power_w": st.floats(0, 100_000),
        "power_limit_w": st.floats(0, 100_000),
        "utilization_pct": st.integers(0, 100),
        "memory_used_bytes": u64,
        "memory_total_bytes": u64,
        "clocks_event_reasons": st.lists(st.sampled_from(["SwPowerCap", "HwSlowdown"])),
        "ecc_volatile_double_bit": u64,
        "remapped_rows_pending": st.booleans(),
        "xid_events": st.lists(
            st.fixed_dictionaries({"code": st.integers(0, 100_000), "at": MOMENTS.map(rfc3339)}),
            max_size=3,
        ),
        "errors": st.dictionaries(LABEL_NAME, CLEAN_TEXT, max_size=2),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            gpu[key] = draw(strategy) if key != "xid_events" or draw(st.booleans()) else None
    return gpu


@st.composite
def snapshots(draw) -> dict:
    count = draw(st.integers(0, 4))
    body: dict[str, Any] = {
        "node": draw(NAMES),
        "gpus": [draw(gpus(i)) for i in range(count)],
    }
    if draw(st.booleans()):
        body["taken_at"] = rfc3339(draw(MOMENTS))
    for key in ("driver_version", "cuda_version", "agent_version"):
        if draw(st.booleans()):
            body[key] = draw(st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True))
    return body

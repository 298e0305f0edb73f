"""Property-based tests of the three machine parsers: the Alertmanager webhook, deploy events and
GPU snapshots.

For any input: never a 5xx, never an exception out of the parser but its documented one
(PayloadError for the webhook), and a refusal names the field. For valid input: stored, and a
second delivery of the same payload changes nothing.

The hook's 202 ("stored, processing deferred") is a failure here too: it is the answer for a
database that is *down*, and with a healthy database it means the payload itself broke the
insert, so the sweep would retry it forever (a poison delivery).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectors.models import DeployEvent, GpuSnapshot
from incidents.alertmanager import PayloadError, parse_notification, scrub
from incidents.models import Alert, Incident, TimelineEvent, WebhookDelivery
from tests.incidents.payloads import firing, group, post
from tests.security.conftest import HYPOTHESIS, tally
from tests.security.strategies import (
    JSON,
    deploys,
    field_path,
    mutated,
    notifications,
    snapshots,
)

# -- the parser alone (incidents/alertmanager.py) ----------------------------------------------


def _parse(body: bytes):
    """parse_notification's result, or its PayloadError; any other exception fails the test."""
    try:
        return parse_notification(body)
    except PayloadError as exc:
        assert isinstance(exc.field, str) and exc.message
        return exc


@HYPOTHESIS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_parse_or_raise_payload_error(body):
    tally("hypothesis: webhook parser, arbitrary bytes")
    _parse(body)


@HYPOTHESIS
@given(JSON)
def test_arbitrary_json_parses_or_raises_payload_error(value):
    tally("hypothesis: webhook parser, arbitrary JSON")
    _parse(json.dumps(value).encode())


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":' * 100_000,  # nesting deeper than the JSON decoder's recursion limit
        b"[" * 100_000,
        b'{"version": "4", "groupKey": "\\ud800", "status": "firing", "alerts": []}',
        b"\xef\xbb\xbf{}",  # a byte-order mark
        b"1e999999",
        b"NaN",
        b"",
    ],
    ids=["deep-object", "deep-array", "lone-surrogate", "bom", "huge-number", "nan", "empty"],
)
def test_pathological_bodies_raise_payload_error(body):
    tally("webhook parser: pathological bodies")
    assert isinstance(_parse(body), PayloadError)


@HYPOTHESIS
@given(mutated(notifications()))
def test_a_near_valid_notification_is_refused_naming_the_field(case):
    """One field removed or replaced: accepted (the change was harmless) or refused with the
    path of that field (or of what contains it)."""
    payload, path, how = case
    tally("hypothesis: webhook parser, near-valid notifications")
    result = _parse(json.dumps(payload).encode())
    if isinstance(result, PayloadError):
        named = field_path(path)
        # a removed key is reported as missing at its own path; a bad value at its path or
        # below it (a label inside replaced labels); a wrong type of a container at the
        # container's path
        assert result.field and (
            named.startswith(result.field) or result.field.startswith(named)
        ), f"{how} at {named!r}, but the error names {result.field!r}: {result.message}"


@HYPOTHESIS
@given(notifications())
def test_valid_notifications_parse_to_strings_postgresql_can_store(payload):
    """No NUL reaches a text column or a jsonb value (PostgreSQL refuses both)."""
    tally("hypothesis: webhook parser, valid notifications")
    notification = parse_notification(json.dumps(payload).encode())
    assert len(notification.alerts) == len(payload["alerts"])
    dumped = json.dumps(notification.model_dump(mode="json"), ensure_ascii=False)
    assert "\x00" not in dumped


@HYPOTHESIS
@given(
    st.one_of(
        notifications().map(lambda p: json.dumps(p).encode()),
        mutated(notifications()).map(lambda m: json.dumps(m[0]).encode()),
        st.binary(max_size=300),
    )
)
def test_the_json_scrub_read_parses_as_the_stored_body_would(body):
    """The hook hands parse_notification the JSON `scrub` already decoded: the outcome is the
    one decoding the stored body again gives (the notification, or the same refusal)."""
    stored, scrubbed, decoded = scrub(body)
    outcomes = []
    for kwargs in ({"decoded": decoded}, {}):
        try:
            outcomes.append(parse_notification(stored, scrubbed=scrubbed, **kwargs).model_dump())
        except PayloadError as exc:
            outcomes.append((exc.field, exc.message))
    assert outcomes[0] == outcomes[1]


def test_a_secret_is_gone_from_the_decoded_json_as_from_the_stored_body():
    payload = group(firing(instance="https://probe:hunter2@example.com/health"))
    stored, scrubbed, decoded = scrub(json.dumps(payload).encode())
    assert scrubbed and b"hunter2" not in stored
    assert "hunter2" not in json.dumps(decoded)
    notification = parse_notification(stored, scrubbed=True, decoded=decoded)
    assert "hunter2" not in notification.alerts[0].labels["instance"]
    assert "example.com" in notification.alerts[0].labels["instance"]


@pytest.mark.parametrize("bad", ["2026-13-01T00:00:00Z", "2026-01-01T00:00:00", "yesterday"])
def test_a_bad_time_is_refused_every_time_it_comes(bad):
    """Times are parsed once per distinct string (a storm repeats them); an error must not be
    remembered as an answer, nor a good time's answer shared with a bad one."""

    def body(starts_at: str) -> bytes:
        alert = firing()
        alert["startsAt"] = starts_at
        return json.dumps(group(alert)).encode()

    for _ in range(3):
        with pytest.raises(PayloadError) as caught:
            parse_notification(body(bad))
        assert caught.value.field == "alerts[0].startsAt"
    good = parse_notification(body("2026-01-01T00:00:00.123456789Z"))
    again = parse_notification(body("2026-01-01T00:00:00.123456789Z"))
    assert good.alerts[0].startsAt == again.alerts[0].startsAt
    assert good.alerts[0].startsAt.isoformat() == "2026-01-01T00:00:00.123456+00:00"


# -- through the hook, with the database ------------------------------------------------------

pytestmark_db = pytest.mark.django_db


def _state() -> tuple:
    return (
        Alert.objects.count(),
        Incident.objects.count(),
        TimelineEvent.objects.count(),
        sorted(Alert.objects.values_list("fingerprint", "status", "notification_count")),
    )


@pytestmark_db
@HYPOTHESIS
@given(body=st.one_of(st.binary(max_size=500), JSON.map(lambda v: json.dumps(v).encode())))
def test_the_hook_answers_arbitrary_input_with_400_never_5xx(client, am_token, body):
    tally("hypothesis: webhook endpoint, arbitrary bytes and JSON")
    response = post(client, body, am_token)
    assert response.status_code == 400, response.content
    assert "field" in response.json()


@pytestmark_db
@HYPOTHESIS
@given(case=mutated(notifications()))
def test_the_hook_answers_near_valid_input_with_200_or_400(client, am_token, case):
    payload, path, how = case
    tally("hypothesis: webhook endpoint, near-valid notifications")
    response = post(client, json.dumps(payload), am_token)
    assert response.status_code in (200, 400), f"{how} at {field_path(path)}: {response.content}"
    if response.status_code == 400:
        assert response.json()["field"] is not None


@pytestmark_db
@HYPOTHESIS
@given(payload=notifications())
def test_valid_notifications_are_ingested_once(client, am_token, payload):
    tally("hypothesis: webhook endpoint, valid notifications (each posted twice)")
    first = post(client, json.dumps(payload), am_token)
    assert first.status_code == 200, first.content
    after_first = _state()
    again = post(client, json.dumps(payload), am_token)
    assert again.status_code == 200, again.content
    assert again.json()["alerts_created"] == 0
    counts, fingerprints = after_first[:3], after_first[3]
    now = _state()
    assert now[:3] == counts
    # the repeat is counted as a notification of the same instances, nothing else changes
    assert [(f, s) for f, s, _ in now[3]] == [(f, s) for f, s, _ in fingerprints]


@pytestmark_db
def test_values_at_the_parsers_limits_are_stored(client, am_token):
    """Every string as long as the parser allows (64 KiB; fingerprints 64, groupKey 8 KiB), and
    NUL in labels: stored (PostgreSQL refused both before), shown truncated where a column is
    shorter."""
    limit = 64 * 1024
    alert = firing("A" * limit, pod="p" * limit, node="n\x00" * 1000)
    alert["annotations"] = {"summary": "s" * limit, "k\x00": "v\x00"}
    alert["fingerprint"] = "f" * 64
    payload = group(alert)
    payload["groupKey"] = "g" * 8192
    response = post(client, json.dumps(payload), am_token)
    assert response.status_code == 200, response.content
    stored = Alert.objects.get()
    assert stored.labels["node"] == "n\ufffd" * 1000
    assert stored.annotations == {"summary": "s" * limit, "k\ufffd": "v\ufffd"}
    assert len(stored.incident.title) == 500
    assert all(len(e.summary) <= 500 for e in TimelineEvent.objects.all())
    tally("webhook endpoint: payloads at the limits")


@pytestmark_db
def test_every_delivery_is_kept_whatever_its_fate(client, am_token):
    bodies = [b"\xff", b"{}", json.dumps(group(firing())).encode()]
    for body in bodies:
        post(client, body, am_token)
    assert list(WebhookDelivery.objects.order_by("pk").values_list("status", flat=True)) == [
        "rejected",
        "rejected",
        "processed",
    ]


# -- deploy events (POST /api/v1/deploys) -----------------------------------------------------


def _send(client, path: str, body, token: str):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(
        path,
        data=data,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def arbitrary_and_near_valid(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Bytes, any JSON, and valid bodies with one field broken (as JSON text)."""
    return st.one_of(
        st.binary(max_size=300),
        JSON.map(json.dumps),
        mutated(valid).map(lambda case: json.dumps(case[0])),
    )


def _names_a_field(response) -> bool:
    detail = response.json().get("detail")
    if isinstance(detail, list):
        return all(isinstance(d, dict) and d.get("loc") for d in detail)
    return isinstance(detail, str) and bool(detail)


def _assert_accepted_or_refused_naming_a_field(client, path: str, body, token: str) -> None:
    """Never a 5xx: stored (2xx), or refused with a 4xx that says which field is wrong."""
    response = _send(client, path, body, token)
    assert response.status_code in (200, 201, 400, 422), response.content
    if response.status_code in (400, 422):
        assert _names_a_field(response), response.content


@pytestmark_db
@HYPOTHESIS
@given(body=arbitrary_and_near_valid(deploys()))
def test_the_deploy_api_refuses_bad_input_with_4xx(client, deploy_token, body):
    tally("hypothesis: deploy API, arbitrary and near-valid bodies")
    _assert_accepted_or_refused_naming_a_field(client, "/api/v1/deploys", body, deploy_token)


@pytestmark_db
@HYPOTHESIS
@given(body=deploys())
def test_valid_deploys_are_recorded_once(client, deploy_token, body):
    tally("hypothesis: deploy API, valid events (each posted twice)")
    first = _send(client, "/api/v1/deploys", body, deploy_token)
    assert first.status_code in (200, 201), first.content
    count = DeployEvent.objects.count()
    again = _send(client, "/api/v1/deploys", body, deploy_token)
    assert again.status_code in (200, 201)
    if "at" in body:  # the same change, reported again (a CI retry): recorded once
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert DeployEvent.objects.count() == count


# -- GPU snapshots (POST /api/v1/gpu-snapshots) -----------------------------------------------


@pytestmark_db
@HYPOTHESIS
@given(body=arbitrary_and_near_valid(snapshots()))
def test_the_gpu_snapshot_api_refuses_bad_input_with_4xx(client, agent_token, body):
    tally("hypothesis: GPU snapshot API, arbitrary and near-valid bodies")
    _assert_accepted_or_refused_naming_a_field(client, "/api/v1/gpu-snapshots", body, agent_token)


@pytestmark_db
@HYPOTHESIS
@given(body=snapshots())
def test_valid_snapshots_are_recorded_once(client, agent_token, body):
    tally("hypothesis: GPU snapshot API, valid snapshots (each posted twice)")
    first = _send(client, "/api/v1/gpu-snapshots", body, agent_token)
    assert first.status_code in (200, 201), first.content
    count = GpuSnapshot.objects.count()
    again = _send(client, "/api/v1/gpu-snapshots", body, agent_token)
    if "taken_at" in body:  # the same reading, posted again: stored once
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert GpuSnapshot.objects.count() == count
    else:
        assert again.status_code == 201

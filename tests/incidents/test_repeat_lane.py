"""Exact repeats of firing alerts take one UPDATE (incidents/repeats.py, from the webhook through
incidents/lane.py); anything else, the general path, with the same outcome as before. PostgreSQL
only: elsewhere every delivery takes the general path, which tests/incidents/test_ingest*.py
cover."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from incidents import lane
from incidents.models import Alert, Incident, TimelineEvent, WebhookDelivery
from tests.incidents.payloads import firing, group, post, post_all_at_once, resolved

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the repeat lane is PostgreSQL's (JSON documents, row locks); CI runs the suite on it",
)


def _work(ctx) -> list[str]:
    return [
        q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))
    ]


def _state() -> list[tuple]:
    return list(
        Alert.objects.order_by("fingerprint").values_list(
            "labels__pod", "status", "notification_count", "annotations"
        )
    )


@pytest.mark.django_db
def test_an_exact_repeat_is_one_update_and_changes_nothing_else(client, am_token):
    payload = group(firing(pod="a"), firing(pod="b"))
    first = post(client, payload, am_token).json()
    incident = Incident.objects.get()
    events = TimelineEvent.objects.count()

    with CaptureQueriesContext(connection) as ctx:
        answer = post(client, payload, am_token)
    assert answer.status_code == 200
    assert answer.json()["incidents"] == first["incidents"] == [incident.pk]
    assert (answer.json()["alerts_updated"], answer.json()["alerts_created"]) == (2, 0)
    work = _work(ctx)
    assert len(work) == 1, work  # one statement stores the delivery and counts both instances
    assert work[0].lstrip().startswith("WITH incoming AS")
    assert "INSERT INTO incidents_webhookdelivery" in work[0]
    assert [row[:3] for row in _state()] == [("a", "firing", 2), ("b", "firing", 2)]
    assert TimelineEvent.objects.count() == events
    again = Incident.objects.get()
    assert (again.updated_at, again.alert_count, again.firing_count) == (
        incident.updated_at,
        2,
        2,
    )


@pytest.mark.django_db
def test_changed_annotations_take_the_general_path_and_are_stored(client, am_token):
    post(client, group(firing(pod="a")), am_token)
    changed = firing(pod="a")
    changed["annotations"] = {"summary": "now worse"}
    with CaptureQueriesContext(connection) as ctx:
        assert post(client, group(changed), am_token).status_code == 200
    assert len(_work(ctx)) > 2
    assert _state() == [("a", "firing", 2, {"summary": "now worse"})]


@pytest.mark.django_db
def test_a_known_alert_with_a_new_one_is_counted_once_and_the_new_one_stored(client, am_token):
    post(client, group(firing(pod="a")), am_token)
    assert post(client, group(firing(pod="a"), firing(pod="b")), am_token).status_code == 200
    assert [row[:3] for row in _state()] == [("a", "firing", 2), ("b", "firing", 1)]
    assert Incident.objects.get().alert_count == 2


@pytest.mark.django_db
def test_a_resolution_takes_the_general_path(client, am_token):
    post(client, group(firing(pod="a"), firing(pod="b")), am_token)
    assert post(client, group(resolved(pod="a"), firing(pod="b")), am_token).status_code == 200
    assert [row[:3] for row in _state()] == [("a", "resolved", 2), ("b", "firing", 2)]
    assert TimelineEvent.objects.filter(kind="alert_resolved").count() == 1
    assert Incident.objects.get().firing_count == 1


@pytest.mark.django_db
def test_an_instance_resolved_elsewhere_is_not_counted_as_firing_again(client, am_token):
    """This process still lists the instance as firing (another worker resolved it): the
    UPDATE matches nothing, writes nothing, and the general path keeps the resolution final."""
    post(client, group(firing(pod="a"), firing(pod="b")), am_token)
    Alert.objects.filter(labels__pod="a").update(status="resolved")
    assert post(client, group(firing(pod="a"), firing(pod="b")), am_token).status_code == 200
    assert [row[:3] for row in _state()] == [("a", "resolved", 2), ("b", "firing", 2)]
    # The lane's statement stored no delivery of its own: the general path stored the one.
    assert list(WebhookDelivery.objects.values_list("status", flat=True)) == ["processed"] * 2


@pytest.mark.django_db
def test_the_lane_stores_the_delivery_as_the_general_path_does(client, am_token):
    payload = group(firing(pod="a"), firing(pod="b"), firing(pod="a"))  # a repeated within
    post(client, payload, am_token)
    answer = post(client, payload, am_token, REMOTE_ADDR="10.1.2.3").json()
    general, lane = WebhookDelivery.objects.order_by("pk")
    assert answer["delivery"] == lane.pk
    fields = ("integration_id", "content_type", "status", "error", "attempts", "alert_count")
    assert [getattr(lane, f) for f in fields] == [getattr(general, f) for f in fields]
    assert (lane.status, lane.attempts, lane.alert_count) == ("processed", 1, 3)
    assert bytes(lane.body) == bytes(general.body) == json.dumps(payload).encode()
    assert lane.remote_addr == "10.1.2.3"
    assert lane.received_at >= general.received_at and lane.processed_at is not None
    assert [row[:3] for row in _state()] == [("a", "firing", 2), ("b", "firing", 2)]


@pytest.mark.django_db
def test_the_lane_statement_is_prepared_once_the_connection_has_run_it_often(client, am_token):
    """vigil/settings.py binds parameters on the server, so psycopg prepares a statement after
    its prepare_threshold runs: PostgreSQL stops parsing and planning every repeat again."""
    payload = group(firing(pod="a"), firing(pod="b"))
    post(client, payload, am_token)
    threshold = connection.connection.prepare_threshold
    assert threshold is not None
    for _ in range(threshold + 2):
        answer = post(client, payload, am_token)
    assert answer.json()["alerts_updated"] == 2
    counted = threshold + 3  # every post counted, the prepared ones too
    assert [row[:3] for row in _state()] == [("a", "firing", counted), ("b", "firing", counted)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0].lstrip() for row in cursor.fetchall()]
    assert any(text.startswith("WITH incoming AS") for text in prepared), prepared


@pytest.mark.django_db
def test_a_database_error_in_the_lane_leaves_the_delivery_to_the_general_path(
    client, am_token, monkeypatch
):
    post(client, group(firing(pod="a")), am_token)

    def broken(*args, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1/0")  # a real error from PostgreSQL, mid-statement

    monkeypatch.setattr(lane, "run", broken)
    answer = post(client, group(firing(pod="a")), am_token)
    assert answer.status_code == 200
    assert answer.json()["alerts_updated"] == 1
    assert [row[:3] for row in _state()] == [("a", "firing", 2)]
    assert WebhookDelivery.objects.filter(status="processed").count() == 2


@pytest.mark.django_db
def test_what_the_lane_found_spares_the_general_path_its_read(client, am_token):
    post(client, group(firing(pod="a")), am_token)
    with CaptureQueriesContext(connection) as ctx:
        answer = post(client, group(firing("Other", pod="b"), firing("Other", pod="c")), am_token)
    assert answer.json()["alerts_created"] == 2 and Incident.objects.count() == 2
    reads = [q["sql"] for q in ctx.captured_queries if "FOR UPDATE" in q["sql"]]
    # A new group: the lane looked for the instances and found none, then the general path
    # looked for the group's open incident (twice: before and after deciding to open one), but
    # not for the instances again.
    assert len(reads) == 3 and reads[0].lstrip().startswith("WITH incoming AS"), reads
    assert all("incidents_incident" in q and "incidents_alert" not in q for q in reads[1:])
    # A stored instance with a new one, which the lane leaves (the stored one's annotations
    # changed): the general path reads the instances as before.
    changed = firing(pod="a")
    changed["annotations"] = {"summary": "now worse"}
    with CaptureQueriesContext(connection) as ctx:
        answer = post(client, group(changed, firing(pod="d")), am_token).json()
    assert (answer["alerts_created"], answer["alerts_updated"]) == (1, 1)
    assert any(
        "jsonb_to_recordset" in q["sql"] and "incidents_webhookdelivery" not in q["sql"]
        for q in ctx.captured_queries
    )


@pytest.mark.django_db
def test_an_instance_stored_after_the_lane_looked_is_counted_not_duplicated(
    client, am_token, monkeypatch
):
    """A concurrent delivery stores the alert between the lane's look and the general path:
    the unique index refuses the second insert, and ingest tries again, reading it."""
    post(client, group(firing(pod="a")), am_token)
    looked = []

    def saw_nothing(*args, **kwargs):
        looked.append(1)
        return lane.Lane(None, set(), 0)  # as if it ran just before the alert was stored

    monkeypatch.setattr(lane, "run", saw_nothing)
    answer = post(client, group(firing(pod="a"), firing(pod="b")), am_token)
    assert answer.status_code == 200, answer.content
    assert looked == [1]
    assert (answer.json()["alerts_created"], answer.json()["alerts_updated"]) == (1, 1)
    assert [row[:3] for row in _state()] == [("a", "firing", 2), ("b", "firing", 1)]
    incident = Incident.objects.get()
    assert (incident.alert_count, incident.firing_count) == (2, 2)
    assert TimelineEvent.objects.filter(kind="alert_firing").count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_repeats_and_resolutions_of_overlapping_alerts_count_exactly(am_token):
    """Sixteen deliveries at once, repeats of overlapping sets and resolutions among them: every
    notification counted exactly once per instance, resolutions final, nothing refused."""
    pods = [f"p{i}" for i in range(8)]
    assert post(Client(), group(*[firing(pod=p) for p in pods]), am_token).status_code == 200
    payloads = []
    for n in range(16):
        chosen = pods[n % 4 : n % 4 + 5]
        alerts = [resolved(pod=p) if (n == 9 and p == "p5") else firing(pod=p) for p in chosen]
        payloads.append(group(*alerts))
    expected = {p: 1 for p in pods}
    for payload in payloads:
        for a in payload["alerts"]:
            expected[a["labels"]["pod"]] += 1
    assert post_all_at_once(payloads, am_token) == [200] * len(payloads)
    counts = dict(Alert.objects.values_list("labels__pod", "notification_count"))
    assert counts == expected
    assert Alert.objects.get(labels__pod="p5").status == "resolved"
    assert Incident.objects.get().firing_count == len(pods) - 1
    # One stored delivery per webhook, whichever way each went.
    assert WebhookDelivery.objects.filter(status="processed").count() == 1 + len(payloads)

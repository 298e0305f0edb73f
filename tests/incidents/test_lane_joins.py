"""New firing alerts of a group with an open incident take one statement (incidents/lane.py) and
store what the general path stores; anything it cannot take, it leaves to the general path.
PostgreSQL only: elsewhere every delivery takes the general path (tests/incidents/test_ingest*.py).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from collectors.tasks import debounced_request
from incidents import lane
from incidents.models import Alert, Incident, TimelineEvent, WebhookDelivery
from tests.incidents.payloads import T0, firing, group, post, resolved

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the lane is PostgreSQL's (JSON documents, row locks); CI runs the suite on it",
)


def _work(ctx) -> list[str]:
    return [
        q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))
    ]


def _general_path_only(monkeypatch) -> None:
    monkeypatch.setattr(lane, "run", lambda *args, **kwargs: None)


def _stored() -> dict:
    """Everything ingest wrote, without ids and the times of the request (compared apart)."""
    alerts = list(
        Alert.objects.order_by("fingerprint").values(
            "fingerprint",
            "starts_at",
            "ends_at",
            "status",
            "alertname",
            "labels",
            "annotations",
            "generator_url",
            "group_hash",
            "notification_count",
        )
    )
    lines = list(
        TimelineEvent.objects.order_by("kind", "summary", "at").values(
            "at", "kind", "actor", "summary", "payload"
        )
    )
    for line in lines:
        if line["kind"] == "incident_opened":
            del line["at"]  # the request's time
    incidents = list(
        Incident.objects.values(
            "status", "severity", "severity_rank", "alert_count", "firing_count", "title"
        )
    )
    deliveries = list(
        WebhookDelivery.objects.order_by("pk").values(
            "status", "error", "attempts", "alert_count", "content_type"
        )
    )
    return {"alerts": alerts, "lines": lines, "incidents": incidents, "deliveries": deliveries}


def _joins() -> list[dict]:
    """A group opened by one alert, then joined by new ones: one, several with a duplicate, a
    severer one (the incident's severity rises), a milder one (it stays), odd characters."""
    odd = firing(pod="ü\"'\\ {x}", node="n1")
    odd["annotations"] = {"summary": 'quote " backslash \\ newline \n', "runbook": "r"}
    odd["generatorURL"] = "http://prometheus:9090/graph?g0.expr=up%3D%3D0"
    return [
        group(firing(pod="b")),
        group(firing(pod="c"), firing(pod="d"), firing(pod="c")),
        group(firing(pod="e", severity="critical"), firing(pod="f", severity="high")),
        group(firing(pod="g", severity="info")),
        group(odd),
        group(firing(pod="h", starts=T0 + timedelta(seconds=1.5))),
    ]


@pytest.mark.django_db
def test_joining_alerts_are_one_statement_each_and_store_what_the_general_path_stores(
    client, am_token, monkeypatch
):
    answers = {}
    stored = {}
    for way in ("lane", "general"):
        if way == "general":
            Alert.objects.all().delete()
            TimelineEvent.objects.all().delete()
            Incident.objects.all().delete()
            WebhookDelivery.objects.all().delete()
            _general_path_only(monkeypatch)
        post(client, group(firing(pod="a")), am_token)
        incident = Incident.objects.get()
        answers[way] = []
        for payload in _joins():
            with CaptureQueriesContext(connection) as ctx:
                answer = post(client, payload, am_token)
            assert answer.status_code == 200, answer.content
            body = answer.json()
            assert body["incidents"] == [incident.pk]
            answers[way].append((body["alerts_created"], body["alerts_updated"]))
            if way == "lane":
                work = _work(ctx)
                assert len(work) == 1, work
                assert body["delivery"] == WebhookDelivery.objects.latest("pk").pk
        stored[way] = _stored()
        # The request's time, once for the alerts' first and last sight and the incident.
        incident = Incident.objects.get()
        for first_seen, last_seen in Alert.objects.values_list("first_seen_at", "last_seen_at"):
            assert first_seen == last_seen and first_seen <= incident.updated_at
        assert Alert.objects.latest("pk").first_seen_at == incident.updated_at
    assert answers["lane"] == answers["general"] == [(1, 0), (2, 0), (2, 0), (1, 0), (1, 0), (1, 0)]
    for table in ("alerts", "lines", "incidents", "deliveries"):
        assert stored["lane"][table] == stored["general"][table], table
    assert stored["lane"]["incidents"][0]["severity"] == "critical"
    assert stored["lane"]["incidents"][0]["alert_count"] == 9


@pytest.mark.django_db
def test_an_acknowledged_incident_is_joined_and_keeps_its_status(client, am_token):
    post(client, group(firing(pod="a")), am_token)
    Incident.objects.update(status="acknowledged")
    with CaptureQueriesContext(connection) as ctx:
        assert post(client, group(firing(pod="b")), am_token).json()["alerts_created"] == 1
    assert len(_work(ctx)) == 1
    incident = Incident.objects.get()
    assert (incident.status, incident.alert_count, incident.firing_count) == ("acknowledged", 2, 2)


@pytest.mark.django_db
def test_a_resolved_group_is_left_to_the_general_path_which_reopens_it(client, am_token):
    post(client, group(firing(pod="a")), am_token)
    post(client, group(resolved(pod="a")), am_token)
    assert Incident.objects.get().status == "resolved"
    with CaptureQueriesContext(connection) as ctx:
        answer = post(client, group(firing(pod="b")), am_token)
    assert answer.status_code == 200
    assert len(_work(ctx)) > 1  # the lane's statement wrote nothing; the general path did
    incident = Incident.objects.get()
    assert (incident.status, incident.alert_count, incident.firing_count) == ("open", 2, 1)
    assert TimelineEvent.objects.filter(kind="incident_reopened").count() == 1
    assert WebhookDelivery.objects.count() == 3


@pytest.mark.django_db
def test_another_group_is_not_joined(client, am_token):
    post(client, group(firing("A", pod="a")), am_token)
    answer = post(client, group(firing("B", pod="a")), am_token).json()
    assert answer["alerts_created"] == 1
    assert Incident.objects.count() == 2
    assert answer["incidents"] == [Incident.objects.latest("pk").pk]


# The incident's collection state when alerts join: (started, finished, requested), as minutes
# before now, None for never.
STATES = {
    "first round not started": (None, None, None),
    "first round running": (2, None, None),
    "round finished, nothing pending": (5, 4, None),
    "round finished, served request": (5, 4, 6),
    "request pending, round running": (5, None, 1),
    "request pending after a round": (5, 4, 3),
    "round running after a request": (3, None, 4),
}


@pytest.mark.django_db
@pytest.mark.parametrize("state", STATES)
def test_the_collection_request_and_round_are_what_debounced_request_decides(
    client, am_token, monkeypatch, state
):
    post(client, group(firing(pod="a")), am_token)
    now = datetime.now(UTC)
    started, finished, requested = (
        None if minutes is None else now - timedelta(minutes=minutes) for minutes in STATES[state]
    )
    Incident.objects.update(
        collection_started_at=started,
        collection_finished_at=finished,
        collection_requested_at=requested,
    )
    published = []
    monkeypatch.setattr("collectors.tasks.publish_debounced_round", published.append)
    with CaptureQueriesContext(connection) as ctx:
        answer = post(client, group(firing(pod="b")), am_token)
    assert answer.status_code == 200 and len(_work(ctx)) == 1
    incident = Incident.objects.get()
    fields, publish = debounced_request(started, finished, requested, now=incident.updated_at)
    assert incident.collection_requested_at == fields.get("collection_requested_at", requested)
    assert published == ([incident.pk] if publish else [])


@pytest.mark.django_db(transaction=True)
def test_an_instance_stored_by_a_concurrent_delivery_is_counted_not_duplicated(am_token):
    """Another transaction inserts the same instance (into another incident, so it holds no lock
    the lane waits on first) and commits while the lane's insert waits on the unique index: the
    statement fails whole, and the general path counts the instance stored by the other."""
    post(Client(), group(firing(pod="a")), am_token)
    incident = Incident.objects.get()
    other = Incident.objects.create(
        cluster=incident.cluster, title="other", grouping_key="other", group_hash="0" * 64
    )
    payload = group(firing(pod="b"))
    fingerprint = payload["alerts"][0]["fingerprint"]
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
    ) as rival:
        rival.execute(
            "INSERT INTO incidents_alert (cluster_id, incident_id, fingerprint, starts_at, status,"
            " alertname, labels, annotations, generator_url, group_hash, first_seen_at,"
            " last_seen_at, notification_count) VALUES (%s, %s, %s, %s, 'firing', 'KVCacheHigh',"
            " '{}', '{}', '', %s, now(), now(), 1)",
            [incident.cluster_id, other.pk, fingerprint, T0, "0" * 64],
        )
        answers = []
        thread = threading.Thread(
            target=lambda: (answers.append(post(Client(), payload, am_token)), connection.close())
        )
        thread.start()
        _wait_for_a_lock_wait(rival)
        rival.commit()
        thread.join(timeout=30)
    answer = answers[0]
    assert answer.status_code == 200, answer.content
    assert (answer.json()["alerts_created"], answer.json()["alerts_updated"]) == (0, 1)
    stored = Alert.objects.get(fingerprint=fingerprint)
    assert (stored.incident_id, stored.notification_count) == (other.pk, 2)
    assert Alert.objects.count() == 2
    incident.refresh_from_db()
    assert (incident.alert_count, incident.firing_count) == (1, 1)  # nothing joined it
    assert list(WebhookDelivery.objects.values_list("status", flat=True)) == ["processed"] * 2


def _wait_for_a_lock_wait(rival: psycopg.Connection) -> None:
    """Until another backend waits on a lock (the lane's insert, on the rival's row)."""
    with psycopg.connect(rival.info.dsn, autocommit=True) as watcher:
        for _ in range(200):
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            ).fetchone()[0]
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("the delivery never waited on the rival's row")


def _read_from(table: str) -> int:
    """Rows and index entries this transaction has read from `table` and its indexes so far."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(pg_stat_get_xact_tuples_returned(oid))::int FROM pg_class"
            " WHERE oid = %s::regclass"
            " OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass)",
            [table, table],
        )
        return cursor.fetchone()[0]


def _grow(incident: Incident, alerts: int, incidents: int) -> None:
    """Other alerts of the cluster (in another group) and other incidents, by SQL."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO incidents_alert (cluster_id, incident_id, fingerprint, starts_at, status,"
            " alertname, labels, annotations, generator_url, group_hash, first_seen_at,"
            " last_seen_at, notification_count) SELECT %s, %s, 'other' || n, %s, 'firing', 'X',"
            " '{}', '{}', '', %s, now(), now(), 1 FROM generate_series(1, %s) AS n",
            [incident.cluster_id, incident.pk, T0, "f" * 64, alerts],
        )
        cursor.execute(
            "INSERT INTO incidents_incident (cluster_id, title, status, severity, severity_rank,"
            " service, namespace, grouping_key, group_hash, correlation_key, labels, opened_at,"
            " updated_at, alert_count, firing_count, scope) SELECT %s, 'other', 'open', '', 0,"
            " '', '', 'g' || n, md5(n::text), '', '{}', now(), now(), 0, 0, '{}'"
            " FROM generate_series(1, %s) AS n",
            [incident.cluster_id, incidents],
        )


@pytest.mark.django_db
def test_a_plan_made_on_near_empty_tables_reads_no_more_as_they_grow(client, am_token):
    """psycopg prepares the lane's statement on a connection's sixth run, and PostgreSQL may keep
    one generic plan for it, made with the tables as they were then: on a new installation,
    nearly empty. What a join reads must not grow with the cluster's alerts and incidents (such
    a plan looked an alert up by cluster alone, and the open incident through the cluster's
    index, both of which read every one of them, until the indexes led with group_hash).

    Each measured join is the first into a group opened just before, so that both incidents
    have as many row versions behind them (each update leaves one in the indexes)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    post(client, group(firing("Warm", pod="0")), am_token)
    incident = Incident.objects.get()
    for i in range(1, 8):  # past prepare_threshold: the statement is prepared, its plan kept
        assert post(client, group(firing("Warm", pod=f"{i}")), am_token).status_code == 200
    read = {}
    for size in ("small", "grown"):
        if size == "grown":
            _grow(incident, alerts=500, incidents=200)
        post(client, group(firing(size, pod="first")), am_token)  # opens the group's incident
        before = (_read_from("incidents_alert"), _read_from("incidents_incident"))
        with CaptureQueriesContext(connection) as ctx:
            answer = post(client, group(*[firing(size, pod=f"{i}") for i in range(3)]), am_token)
        assert answer.json()["alerts_created"] == 3 and len(_work(ctx)) == 1
        read[size] = (
            _read_from("incidents_alert") - before[0],
            _read_from("incidents_incident") - before[1],
        )
    assert read["grown"] == read["small"], read


@pytest.mark.django_db
def test_a_notification_the_lane_cannot_prepare_goes_down_the_general_path(
    client, am_token, monkeypatch
):
    """An error while the lane builds its document (before it writes anything) costs nothing:
    the general path stores and ingests the notification."""
    post(client, group(firing(pod="a")), am_token)

    def broken(*args, **kwargs):
        raise ValueError("a payload shape nobody foresaw")

    monkeypatch.setattr(lane, "alert_event", broken)
    with CaptureQueriesContext(connection) as ctx:
        answer = post(client, group(firing(pod="b")), am_token)
    assert answer.status_code == 200, answer.content
    assert answer.json()["alerts_created"] == 1
    # The lane ran no statement of its own.
    assert not any(q.lstrip().startswith("WITH incoming AS") for q in _work(ctx))
    assert Incident.objects.get().alert_count == 2
    assert list(WebhookDelivery.objects.values_list("status", flat=True)) == ["processed"] * 2

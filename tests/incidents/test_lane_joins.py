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


def _again_by_the_general_path(monkeypatch) -> None:
    """Empty what ingest writes, and send what follows down the general path alone."""
    for model in (Alert, TimelineEvent, Incident, WebhookDelivery):
        model.objects.all().delete()
    _general_path_only(monkeypatch)


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
        if line["kind"].startswith("incident_"):
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


def _both_ways(client, am_token, monkeypatch, notifications: list[dict]) -> tuple[dict, dict]:
    """Post a group's first alert and then `notifications`, by the lane and again (on emptied
    tables) by the general path alone: each way's answers (created, updated) and what it
    stored. By the lane, each notification must have been one statement."""
    answers, stored = {}, {}
    for way in ("lane", "general"):
        if way == "general":
            _again_by_the_general_path(monkeypatch)
        post(client, group(firing(pod="a")), am_token)
        incident = Incident.objects.get()
        answers[way] = []
        for payload in notifications:
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
            # The request's time, once: every instance it carried was last seen then, and the
            # incident changed then.
            incident = Incident.objects.get()
            carried = {(a["fingerprint"], a["startsAt"]) for a in payload["alerts"]}
            for alert in Alert.objects.all():
                key = (alert.fingerprint, alert.starts_at.isoformat().replace("+00:00", "Z"))
                if key in carried:
                    assert alert.last_seen_at == incident.updated_at, key
        stored[way] = _stored()
    return answers, stored


@pytest.mark.django_db
def test_joining_alerts_are_one_statement_each_and_store_what_the_general_path_stores(
    client, am_token, monkeypatch
):
    answers, stored = _both_ways(client, am_token, monkeypatch, _joins())
    assert answers["lane"] == answers["general"] == [(1, 0), (2, 0), (2, 0), (1, 0), (1, 0), (1, 0)]
    for table in ("alerts", "lines", "incidents", "deliveries"):
        assert stored["lane"][table] == stored["general"][table], table
    assert stored["lane"]["incidents"][0]["severity"] == "critical"
    assert stored["lane"]["incidents"][0]["alert_count"] == 9


def _growing() -> list[dict]:
    """A group's notifications as Alertmanager sends them while it grows: every firing alert so
    far, and new ones. A new one of the stored one's severity; a duplicate; two new ones tied on
    the highest severity under different labels (the first one's is the incident's); a new milder
    one beside severer stored ones; the stored ones in another order; odd characters."""
    stored = [firing(pod="a")]
    steps = [
        [firing(pod="b")],
        [firing(pod="c"), firing(pod="d"), firing(pod="c")],
        [firing(pod="e", severity="Critical"), firing(pod="f", severity="critical")],
        [firing(pod="g", severity="info")],
    ]
    odd = firing(pod="ü\"'\\ {x}", node="n1")
    odd["annotations"] = {"summary": 'quote " backslash \\ newline \n', "runbook": "r"}
    notifications = []
    for new in steps:
        stored = stored + [a for a in new if a not in stored]
        notifications.append(group(*stored))
    notifications.append(group(*reversed(stored), odd))
    return notifications


@pytest.mark.django_db
def test_a_growing_groups_notifications_are_one_statement_and_store_what_the_general_path_does(
    client, am_token, monkeypatch
):
    answers, stored = _both_ways(client, am_token, monkeypatch, _growing())
    assert answers["lane"] == answers["general"] == [(1, 1), (2, 2), (2, 4), (1, 6), (1, 7)]
    for table in ("alerts", "lines", "incidents", "deliveries"):
        assert stored["lane"][table] == stored["general"][table], table
    incident = stored["lane"]["incidents"][0]
    assert (incident["severity"], incident["alert_count"], incident["firing_count"]) == (
        "Critical",
        8,
        8,
    )
    counts = {a["fingerprint"]: a["notification_count"] for a in stored["lane"]["alerts"]}
    assert sorted(counts.values()) == [1, 2, 3, 3, 4, 4, 5, 6]  # odd, g, e f, c d, b, a


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


def _changed(alert: dict) -> dict:
    return {**alert, "annotations": {"summary": "now worse"}}


def _resolve_b(client, am_token) -> None:
    post(client, group(firing(pod="a"), firing(pod="b")), am_token)
    post(client, group(firing(pod="a"), resolved(pod="b")), am_token)


def _move_a_to_another_incident(client, am_token) -> None:
    post(client, group(firing(pod="a")), am_token)
    incident = Incident.objects.get()
    other = Incident.objects.create(
        cluster=incident.cluster,
        title="other",
        grouping_key="other",
        group_hash="0" * 64,
        alert_count=1,
        firing_count=1,
    )
    Alert.objects.update(incident=other)
    Incident.objects.filter(pk=incident.pk).update(alert_count=0, firing_count=0)


def _close_the_groups_incident(client, am_token) -> None:
    post(client, group(firing(pod="a")), am_token)
    Incident.objects.update(status="resolved", resolved_at=T0)  # closed by hand, a still firing


# What the group holds before a notification of stored and new instances that the lane must leave
# whole to the general path, and that notification.
LEFT = {
    "a stored one resolved": (_resolve_b, [firing(pod="a"), firing(pod="b"), firing(pod="c")]),
    "a stored one's annotations changed": (
        lambda client, token: post(client, group(firing(pod="a")), token),
        [_changed(firing(pod="a")), firing(pod="b")],
    ),
    "a stored one in another incident": (
        _move_a_to_another_incident,
        [firing(pod="a"), firing(pod="b")],
    ),
    "the group's incident closed": (_close_the_groups_incident, [firing(pod="a"), firing(pod="b")]),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", LEFT)
def test_stored_and_new_instances_the_lane_cannot_take_are_left_whole_to_the_general_path(
    client, am_token, monkeypatch, case
):
    """The lane writes all of such a notification or none of it: what is stored in the end is
    what the general path alone stores."""
    before, alerts = LEFT[case]
    stored = {}
    for way in ("lane", "general"):
        if way == "general":
            _again_by_the_general_path(monkeypatch)
        before(client, am_token)
        with CaptureQueriesContext(connection) as ctx:
            answer = post(client, group(*alerts), am_token)
        assert answer.status_code == 200, answer.content
        body = answer.json()
        assert (body["alerts_created"], body["alerts_updated"]) == (1, len(alerts) - 1)
        if way == "lane":
            work = _work(ctx)
            assert work[0].lstrip().startswith("WITH incoming AS") and len(work) > 1, work
        stored[way] = _stored()
    for table in ("alerts", "lines", "incidents", "deliveries"):
        assert stored["lane"][table] == stored["general"][table], table


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
@pytest.mark.parametrize("with_stored", [False, True], ids=["new alone", "with the stored one"])
def test_the_collection_request_and_round_are_what_debounced_request_decides(
    client, am_token, monkeypatch, state, with_stored
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
        stored = [firing(pod="a")] if with_stored else []
        answer = post(client, group(*stored, firing(pod="b")), am_token)
    assert answer.status_code == 200 and len(_work(ctx)) == 1
    assert answer.json()["alerts_created"] == 1
    incident = Incident.objects.get()
    fields, publish = debounced_request(started, finished, requested, now=incident.updated_at)
    assert incident.collection_requested_at == fields.get("collection_requested_at", requested)
    assert published == ([incident.pk] if publish else [])


def _rival(settings: dict) -> psycopg.Connection:
    """A connection of its own to the test database, for a concurrent transaction."""
    return psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
    )


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
    with _rival(connection.settings_dict) as rival:
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


@pytest.mark.django_db(transaction=True)
def test_stored_and_new_instances_lock_the_incident_before_the_alerts_and_repeats_never_do(
    am_token,
):
    """The general path locks the group's incident, then its stored instances; a delivery that
    took them the other way round would deadlock with it. A rival transaction holds the
    incident's lock. An exact repeat goes through without it (and leaves the incident as it
    was); a notification of the stored alert and a new one waits for it holding no alert's
    lock: the rival can still take the alert's without waiting."""
    post(Client(), group(firing(pod="a")), am_token)
    incident = Incident.objects.get()
    alert = Alert.objects.get()
    with _rival(connection.settings_dict) as rival:
        rival.execute("SELECT FROM incidents_incident WHERE id = %s FOR UPDATE", [incident.pk])
        answers = []

        def deliver(payload):
            answers.append(post(Client(), payload, am_token))
            connection.close()

        repeat = threading.Thread(target=deliver, args=(group(firing(pod="a")),))
        repeat.start()
        repeat.join(timeout=30)
        assert answers and answers[0].json()["alerts_updated"] == 1  # did not wait
        growing = threading.Thread(target=deliver, args=(group(firing(pod="a"), firing(pod="b")),))
        growing.start()
        _wait_for_a_lock_wait(rival)
        rival.execute("SELECT FROM incidents_alert WHERE id = %s FOR UPDATE NOWAIT", [alert.pk])
        rival.commit()
        growing.join(timeout=30)
    answer = answers[1].json()
    assert (answer["alerts_created"], answer["alerts_updated"]) == (1, 1)
    counts = dict(Alert.objects.values_list("fingerprint", "notification_count"))
    assert counts == {alert.fingerprint: 3, Alert.objects.latest("pk").fingerprint: 1}
    before = incident.updated_at
    incident.refresh_from_db()
    assert (incident.alert_count, incident.firing_count) == (2, 2) and incident.updated_at > before


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


def test_psycopg_keeps_the_lane_statements_conversion():
    """psycopg converts %(name)s placeholders with a regular expression and caches the result
    only for statements up to MAX_CACHED_STATEMENT_LENGTH bytes: over it (as the indented
    statement was), every webhook paid the split again. A clause added to the statement must
    keep it under, or the limit be revisited."""
    import re

    from psycopg import _queries
    from psycopg.adapt import Transformer

    params = dict.fromkeys(re.findall(r"%\((\w+)\)s", lane.STATEMENT))
    _queries._query2pg.cache_clear()
    for _ in range(3):
        _queries.PostgresQuery(Transformer()).convert(lane.STATEMENT, params)
    assert _queries._query2pg.cache_info().hits == 2, len(lane.STATEMENT.encode())

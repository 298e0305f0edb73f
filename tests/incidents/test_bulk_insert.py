"""incidents.bulk.insert_rows: INSERT or COPY on PostgreSQL, bulk_create elsewhere, the same rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DataError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from assistant.models import ActionProposal
from incidents import bulk
from incidents.models import Alert, Cluster, Incident, TimelineEvent

STARTS = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)


@pytest.fixture
def incident(db) -> Incident:
    cluster = Cluster.objects.create(name="bulk")
    return Incident.objects.create(
        cluster=cluster, title="t", grouping_key="{}:{}", group_hash="h" * 64
    )


def _alerts(incident: Incident, n: int, prefix: str = "f") -> list[dict]:
    return [
        {
            "cluster_id": incident.cluster_id,
            "incident_id": incident.pk,
            "fingerprint": f"{prefix}{i}",
            "starts_at": STARTS + timedelta(seconds=i),
            "ends_at": None if i % 2 else STARTS + timedelta(minutes=5),
            "status": "firing" if i % 2 else "resolved",
            "alertname": "GPUHot",
            # What COPY must carry intact: quotes, backslashes, tabs, newlines, non-ASCII.
            "labels": {"alertname": "GPUHot", "pod": f'p"{i}\\x\ty\n', "note": "héllo ✓"},
            "annotations": {} if i % 3 else {"summary": "a\\b", "runbook": None},
            "generator_url": "http://prom/graph?g0.expr=up%3D%3D0" if i % 2 else "",
            "group_hash": "h" * 64,
            "first_seen_at": STARTS,
            "last_seen_at": STARTS + timedelta(minutes=i),
            "notification_count": 1 + i,
        }
        for i in range(n)
    ]


def _stored() -> list[tuple]:
    return list(
        Alert.objects.order_by("fingerprint").values_list(
            "fingerprint",
            "starts_at",
            "ends_at",
            "status",
            "labels",
            "annotations",
            "generator_url",
            "notification_count",
            "first_seen_at",
            "last_seen_at",
            "cluster_id",
            "incident_id",
            "alertname",
            "group_hash",
        )
    )


# Both ways rows go on PostgreSQL: a prepared INSERT for a few, COPY for more.
SIZES = [1, bulk.INSERT_MAX_ROWS, bulk.INSERT_MAX_ROWS + 1, 50]


@pytest.mark.django_db
@pytest.mark.parametrize("n", SIZES)
def test_rows_come_back_as_the_orm_would_have_stored_them(incident, n):
    Alert.objects.bulk_create([Alert(**row) for row in _alerts(incident, n)])
    expected = _stored()
    Alert.objects.all().delete()

    bulk.insert_rows(Alert, _alerts(incident, n))

    stored = _stored()
    assert len(stored) == n
    assert stored == expected
    assert {row[7] for row in stored} == set(range(1, n + 1))  # every column, not defaults


@pytest.mark.django_db
@pytest.mark.parametrize("n", SIZES)
def test_timeline_lines_keep_their_order_and_payloads(incident, n):
    events = [
        {
            "incident_id": incident.pk,
            "at": STARTS,
            "kind": TimelineEvent.Kind.ALERT_FIRING,
            "actor": "alertmanager",
            "summary": f"line {i}",
            "payload": {"labels": {"i": str(i)}, "quote": "'\"", "nothing": None},
        }
        for i in range(n)
    ]
    bulk.insert_rows(TimelineEvent, events)
    rows = list(TimelineEvent.objects.order_by("id").values_list("kind", "summary", "payload"))
    assert rows == [
        ("alert_firing", f"line {i}", {"labels": {"i": str(i)}, "quote": "'\"", "nothing": None})
        for i in range(n)
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("others", [2, 30])
def test_a_duplicate_instance_is_an_integrity_error_and_inserts_nothing(incident, others):
    """ingest retries a delivery whose insert collided with a concurrent one's (IntegrityError)."""
    bulk.insert_rows(Alert, _alerts(incident, 2))
    with pytest.raises(IntegrityError), transaction.atomic():
        bulk.insert_rows(Alert, _alerts(incident, others, prefix="g") + _alerts(incident, 1))
    assert Alert.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(("n", "statement"), [(3, "INSERT INTO"), (50, "COPY")])
def test_it_is_one_statement_in_the_query_log_and_the_execute_wrappers(incident, n, statement):
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as ctx, connection.execute_wrapper(wrapper):
        bulk.insert_rows(Alert, _alerts(incident, n))
    assert len(ctx.captured_queries) == 1
    assert len(seen) == 1
    if connection.vendor == "postgresql":
        assert seen[0].startswith(f'{statement} "incidents_alert"')
        if statement == "COPY":
            assert ctx.captured_queries[0]["sql"] == f"{seen[0]} -- {n} rows"
    assert Alert.objects.count() == n


@pytest.mark.django_db
def test_nothing_to_insert_sends_nothing():
    with CaptureQueriesContext(connection) as ctx:
        bulk.insert_rows(Alert, [])
    assert ctx.captured_queries == []


@pytest.mark.django_db
def test_a_row_missing_a_column_is_refused_not_defaulted(incident):
    row = _alerts(incident, 1)[0]
    del row["notification_count"]
    with pytest.raises(KeyError, match="notification_count"):
        bulk.insert_rows(Alert, [row])
    assert not Alert.objects.exists()


def test_a_model_that_needs_pre_save_is_refused():
    with pytest.raises(ValueError, match="updated_at needs pre_save"):
        bulk._columns(ActionProposal)


@pytest.mark.parametrize(
    "value",
    [
        {"alertname": "GPUHot", "pod": 'p"1\\x\ty\n', "note": "héllo ✓", "emoji": "🔥"},
        [{"fingerprint": "f", "annotations": {}, "generator_url": None}],
        {"nested": {"list": [1, 2.5, True, None]}},
    ],
)
def test_json_text_reads_back_as_the_value(value):
    assert json.loads(bulk.json_text(value)) == value


def test_json_text_writes_what_orjson_refuses_as_the_json_module_did():
    # Keys that are not strings, an integer over 64 bits, a lone surrogate (json.loads makes
    # one of "\ud800"): orjson raises on each, the json module writes them.
    for value in ({1: "a"}, {"big": 2**70}, {"s": "\ud800"}):
        assert bulk.json_text(value) == json.dumps(value)


@pytest.mark.django_db
def test_a_lone_surrogate_in_a_label_is_refused_by_the_database_as_before(incident):
    row = _alerts(incident, 1)[0]
    row["labels"] = {"alertname": "GPUHot", "pod": "\ud800"}
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's jsonb judges the escape; SQLite stores text")
    with pytest.raises(DataError), transaction.atomic():
        bulk.insert_rows(Alert, [row])
    assert not Alert.objects.exists()

"""POST /hooks/alertmanager: the contract of DESIGN.md, status code by status code."""

from __future__ import annotations

import json

import pytest

from incidents.models import Alert, Incident, TimelineEvent, WebhookDelivery
from tests.incidents.payloads import firing, group, post, resolved

pytestmark = pytest.mark.django_db


def test_it_opens_an_incident_and_stores_the_raw_body(client, am_token):
    payload = group(firing(pod="vllm-0"))
    response = post(client, payload, am_token)

    assert response.status_code == 200
    incident = Incident.objects.get()
    assert response.json()["incidents"] == [incident.pk]
    assert incident.status == "open"
    assert incident.title == "KVCacheHigh summary"
    assert incident.namespace == "llm"
    assert incident.severity == "warning"
    assert incident.grouping_key == payload["groupKey"]
    alert = incident.alerts.get()
    assert (alert.fingerprint, alert.status, alert.ends_at) == (
        payload["alerts"][0]["fingerprint"],
        "firing",
        None,
    )
    assert alert.labels["pod"] == "vllm-0"
    delivery = WebhookDelivery.objects.get()
    assert json.loads(bytes(delivery.body)) == payload
    assert delivery.status == "processed"
    assert sorted(incident.timeline.values_list("kind", flat=True)) == [
        "alert_firing",
        "incident_opened",
    ]


@pytest.mark.parametrize("path", ["/hooks/alertmanager", "/hooks/alertmanager/"])
def test_both_spellings_answer_without_redirect(client, am_token, path):
    assert post(client, group(firing()), am_token, path=path).status_code == 200


def test_https_redirect_does_not_apply_to_the_hook(client, am_token, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert post(client, group(firing()), am_token).status_code == 200
    assert client.get("/incidents/").status_code == 301


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Token x", "Bearer "])
def test_a_missing_or_wrong_token_is_401_and_stores_nothing(client, am_token, header):
    headers = {"Authorization": header} if header is not None else {}
    response = client.post(
        "/hooks/alertmanager",
        data=json.dumps(group(firing())),
        content_type="application/json",
        headers=headers,
    )
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not WebhookDelivery.objects.exists()


def test_a_deploy_integration_token_is_refused(client, integration_token):
    _, token = integration_token("ci", kind="deploy")
    assert post(client, group(firing()), token).status_code == 401


def test_an_inactive_integration_is_refused(client, integration_token):
    integration, token = integration_token()
    integration.is_active = False
    integration.save()
    assert post(client, group(firing()), token).status_code == 401


def test_an_integration_deactivated_elsewhere_is_refused_once_the_cache_expires(
    client, integration_token, monkeypatch, settings
):
    """Another process (a queryset update sends no signal here) deactivates the integration:
    this process keeps accepting its token for at most VIGIL_INTEGRATION_CACHE_SECONDS."""
    import time

    from incidents.models import Integration

    settings.VIGIL_INTEGRATION_CACHE_SECONDS = 10
    integration, token = integration_token()
    assert post(client, group(firing(pod="a")), token).status_code == 200
    Integration.objects.filter(pk=integration.pk).update(is_active=False)
    assert post(client, group(firing(pod="b")), token).status_code == 200  # within the TTL
    later = time.monotonic() + 11
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert post(client, group(firing(pod="c")), token).status_code == 401


def test_a_cached_integration_costs_no_query(client, am_token):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    post(client, group(firing(pod="a")), am_token)
    with CaptureQueriesContext(connection) as ctx:
        assert post(client, group(firing(pod="a")), am_token).status_code == 200
    assert not [q for q in ctx.captured_queries if "incidents_integration" in q["sql"]]


def test_the_hook_checks_the_host_and_sends_a_content_length(client, am_token):
    """It skips the browser middleware (vigil/fastpath.py), not what the hook needs of it."""
    response = post(client, group(firing()), am_token)
    assert response.status_code == 200
    assert response["Content-Length"] == str(len(response.content))
    assert "Set-Cookie" not in response and not client.cookies
    assert post(client, group(firing()), am_token, HTTP_HOST="evil.example").status_code == 400


def test_oversize_body_is_413(client, am_token, settings):
    settings.VIGIL_WEBHOOK_MAX_BYTES = 1000
    payload = group(*[firing(pod=f"p{i}") for i in range(20)])
    response = post(client, payload, am_token)
    assert response.status_code == 413
    assert not Incident.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", ""),
        (b"[1, 2]", ""),
        ({"version": "3"}, "version"),
        ("alerts-missing", "alerts"),
        ("bad-starts", "alerts[0].startsAt"),
        ("no-alertname", "alerts[0].labels"),
        ("label-not-string", "alerts[0].labels.pod"),
    ],
)
def test_malformed_payloads_are_400_naming_the_field_and_kept(client, am_token, body, field):
    payload = group(firing())
    if body == "alerts-missing":
        del payload["alerts"]
        body = payload
    elif body == "bad-starts":
        payload["alerts"][0]["startsAt"] = "yesterday"
        body = payload
    elif body == "no-alertname":
        del payload["alerts"][0]["labels"]["alertname"]
        body = payload
    elif body == "label-not-string":
        payload["alerts"][0]["labels"]["pod"] = 3
        body = payload
    response = post(client, body, am_token)
    assert response.status_code == 400
    assert response.json()["field"] == field
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "rejected"
    assert delivery.error
    assert not Incident.objects.exists()


def test_repeated_notifications_never_duplicate_an_alert(client, am_token):
    payload = group(firing(pod="a"), firing(pod="b"))
    for _ in range(3):
        assert post(client, payload, am_token).status_code == 200
    assert Incident.objects.count() == 1
    assert Alert.objects.count() == 2
    assert set(Alert.objects.values_list("notification_count", flat=True)) == {3}
    assert TimelineEvent.objects.filter(kind="alert_firing").count() == 2


def test_nanosecond_times_and_offsets_are_accepted(client, am_token):
    payload = group(firing())
    payload["alerts"][0]["startsAt"] = "2026-11-23T11:00:00.123456789+01:00"
    assert post(client, payload, am_token).status_code == 200
    alert = Alert.objects.get()
    assert alert.starts_at.isoformat() == "2026-11-23T10:00:00.123456+00:00"


def test_only_what_changed_is_written_back(client, am_token):
    """The general path compares each known instance as stored with what came in: a resolution
    is written, an unchanged instance only counted, changed annotations refreshed."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    post(client, group(firing(pod="a"), firing(pod="b"), firing(pod="c")), am_token)
    changed = firing(pod="c")
    changed["annotations"] = {"summary": "worse"}
    with CaptureQueriesContext(connection) as ctx:
        payload = group(resolved(pod="a"), firing(pod="b"), changed)
        assert post(client, payload, am_token).status_code == 200
    writes = [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].startswith('UPDATE "incidents_alert"') and '"annotations"' in q["sql"]
    ]
    assert len(writes) == 2, writes  # a's resolution, c's annotations; nothing for b
    rows = dict(Alert.objects.values_list("labels__pod", "annotations"))
    assert rows["c"] == {"summary": "worse"} and rows["b"] == rows["a"] != rows["c"]
    assert Alert.objects.get(labels__pod="a").status == "resolved"


def test_all_alerts_resolving_resolves_the_incident(client, am_token):
    post(client, group(firing(pod="a"), firing(pod="b")), am_token)
    post(client, group(resolved(pod="a"), firing(pod="b")), am_token)
    incident = Incident.objects.get()
    assert (incident.status, incident.firing_count) == ("open", 1)

    post(client, group(resolved(pod="a"), resolved(pod="b")), am_token)
    incident.refresh_from_db()
    assert incident.status == "resolved"
    assert incident.resolved_at is not None
    assert incident.timeline.filter(kind="incident_resolved", actor="alertmanager").count() == 1


def test_auto_resolve_can_be_turned_off(client, am_token, settings):
    settings.VIGIL_AUTO_RESOLVE = False
    post(client, group(firing()), am_token)
    post(client, group(resolved()), am_token)
    incident = Incident.objects.get()
    assert incident.status == "open"
    assert incident.firing_count == 0


def test_resolved_before_firing_is_not_undone_by_the_late_firing(client, am_token):
    post(client, group(resolved()), am_token)
    post(client, group(firing()), am_token)
    alert = Alert.objects.get()
    assert alert.status == "resolved"
    assert alert.notification_count == 2
    assert Incident.objects.get().status == "resolved"


def test_a_refire_after_resolution_is_a_new_instance_and_reopens(client, am_token):
    from datetime import timedelta

    from tests.incidents.payloads import T0

    post(client, group(firing()), am_token)
    post(client, group(resolved()), am_token)
    post(client, group(firing(starts=T0 + timedelta(hours=1))), am_token)
    incident = Incident.objects.get()
    assert incident.status == "open"
    assert Alert.objects.count() == 2
    assert incident.timeline.filter(kind="incident_reopened").count() == 1


def test_a_refire_after_the_reopen_window_opens_a_new_incident(client, am_token, settings):
    from datetime import timedelta

    from tests.incidents.payloads import T0

    settings.VIGIL_REOPEN_WINDOW = timedelta(0)
    post(client, group(firing()), am_token)
    post(client, group(resolved()), am_token)
    post(client, group(firing(starts=T0 + timedelta(hours=1))), am_token)
    assert list(Incident.objects.order_by("pk").values_list("status", flat=True)) == [
        "resolved",
        "open",
    ]


def test_one_group_storm_makes_one_incident(client, am_token):
    for batch in range(10):
        alerts = [firing(pod=f"p{batch}-{i}") for i in range(50)]
        assert post(client, group(*alerts), am_token).status_code == 200
    incident = Incident.objects.get()
    assert incident.alert_count == 500
    assert incident.firing_count == 500


def test_different_groups_make_different_incidents(client, am_token):
    post(client, group(firing("A")), am_token)
    post(client, group(firing("B")), am_token)
    assert Incident.objects.count() == 2


def test_group_by_labels_join_groups_within_the_window(client, am_token, settings):
    settings.VIGIL_GROUP_BY = ["namespace"]
    post(client, group(firing("A")), am_token)
    post(client, group(firing("B")), am_token)
    incident = Incident.objects.get()
    assert incident.alert_count == 2
    # The second group keeps joining the same incident afterwards.
    post(client, group(firing("B", pod="x")), am_token)
    assert Incident.objects.count() == 1


def test_group_by_labels_do_not_join_other_namespaces(client, am_token, settings):
    settings.VIGIL_GROUP_BY = ["namespace"]
    post(client, group(firing("A")), am_token)
    post(client, group(firing("B", namespace="other")), am_token)
    assert Incident.objects.count() == 2


def test_severity_escalates_when_a_critical_alert_joins(client, am_token):
    post(client, group(firing(pod="a")), am_token)
    post(client, group(firing(pod="a"), firing(pod="b", severity="critical")), am_token)
    assert Incident.objects.get().severity == "critical"


def test_get_is_not_allowed(client, am_token):
    assert client.get("/hooks/alertmanager").status_code == 405


def test_database_down_before_storing_is_503_so_alertmanager_retries(client, am_token, monkeypatch):
    from django.db import OperationalError

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(WebhookDelivery.objects, "create", down)
    response = post(client, group(firing()), am_token)
    assert response.status_code == 503
    assert response["Retry-After"]


def test_database_down_while_authenticating_is_503(client, am_token, monkeypatch):
    from django.db import OperationalError

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("incidents.hooks.find_by_secret", down)
    assert post(client, group(firing()), am_token).status_code == 503


def test_database_trouble_during_ingest_still_stores_the_delivery_for_the_sweep(
    client, am_token, monkeypatch
):
    from django.db import OperationalError

    from incidents.tasks import process_pending_deliveries

    def flaky(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("incidents.ingest.ingest_notification", flaky)
    response = post(client, group(firing()), am_token)
    assert response.status_code == 202
    assert not Incident.objects.exists()  # the ingest was rolled back, the body kept
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "received"

    monkeypatch.undo()
    WebhookDelivery.objects.update(received_at=delivery.received_at.replace(year=2000))
    assert process_pending_deliveries() == 1
    delivery.refresh_from_db()
    assert delivery.status == "processed"
    assert Incident.objects.get().alert_count == 1


def test_an_ingest_error_rolls_back_its_writes_and_keeps_the_body_failed(
    client, am_token, monkeypatch
):
    from incidents import ingest

    real = ingest.ingest_notification

    def half_done(**kwargs):
        real(**kwargs)  # writes the incident and its alert, then fails
        raise RuntimeError("bug after writing")

    monkeypatch.setattr("incidents.ingest.ingest_notification", half_done)
    response = post(client, group(firing()), am_token)
    assert response.status_code == 500
    assert not Incident.objects.exists()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    assert "bug after writing" in delivery.error
    assert json.loads(bytes(delivery.body))["alerts"][0]["labels"]["alertname"]


@pytest.mark.django_db
def test_a_notification_resolving_thousands_of_alerts_each_its_own_way_is_ingested(
    client, am_token
):
    """8,200 resolutions, each with its own end and annotations: one bulk_update of 65,600
    parameters, more than PostgreSQL's protocol carries with server-side binding
    (vigil.backends.postgresql binds such a statement on the client)."""
    from datetime import timedelta

    from tests.incidents.payloads import T0

    count = 8_200
    pods = [f"p{i}" for i in range(count)]
    assert post(client, group(*(firing(pod=p) for p in pods)), am_token).status_code == 200
    ends = [resolved(pod=p, ends=T0 + timedelta(seconds=60 + i)) for i, p in enumerate(pods)]
    for i, alert in enumerate(ends):
        alert["annotations"] = {"summary": f"recovered after {i}% of the rollout"}
    answer = post(client, group(*ends), am_token)
    assert answer.status_code == 200, answer.content
    assert answer.json()["alerts_updated"] == count
    assert Alert.objects.filter(status="resolved").count() == count
    last = Alert.objects.get(labels__pod=pods[-1])
    assert last.ends_at == T0 + timedelta(seconds=60 + count - 1)
    assert last.annotations == {"summary": f"recovered after {count - 1}% of the rollout"}
    assert Incident.objects.get().firing_count == 0

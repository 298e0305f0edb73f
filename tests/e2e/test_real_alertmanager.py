"""A real Alertmanager 0.25 notifies Vigil's live server: grouping, resolution, evidence collection.

Alerts go in through Alertmanager's API v2, exactly as Prometheus would push them; Alertmanager
groups them (group_by alertname+namespace, group_wait 1s, group_interval 2s) and delivers webhook
v4 notifications with a Bearer integration token to `live_server`'s `/hooks/alertmanager`.
Every wait polls the database; nothing sleeps.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from incidents.models import Alert, Incident, Integration, TimelineEvent, WebhookDelivery
from tests.e2e.alertmanager_server import AlertmanagerServer, rfc3339, running_alertmanager

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FINGERPRINT = re.compile(r"[0-9a-f]{16}")
GENERATOR_URL = "http://prometheus.example:9090/graph?g0.expr=up"
TIMEOUT = 30  # seconds; every wait normally ends within a few
WORKER_TIMEOUT = 90  # a collection round on a loaded two-core machine (a bound, not a target)


@pytest.fixture
def alertmanager(live_server, am_token, tmp_path):
    """Alertmanager whose only receiver is this test's live server, with a fresh token."""
    webhook = f"{live_server.url}/hooks/alertmanager"
    with running_alertmanager(tmp_path, webhook, am_token) as server:
        yield server


def to_ms(moment: datetime) -> datetime:
    """Alertmanager's API takes what `rfc3339` writes: UTC, millisecond precision."""
    return moment.astimezone(UTC).replace(microsecond=moment.microsecond // 1000 * 1000)


def am_alert(
    alertname: str,
    namespace: str,
    pod: str,
    *,
    starts_at: datetime,
    ends_at: datetime,
    severity: str = "warning",
) -> dict:
    """One postable alert of API v2; the summary is shared by the group, the description is not."""
    return {
        "labels": {
            "alertname": alertname,
            "namespace": namespace,
            "pod": pod,
            "severity": severity,
        },
        "annotations": {
            "summary": f"{alertname} in {namespace}",
            "description": f"{alertname} on pod {pod}",
        },
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(ends_at),
        "generatorURL": GENERATOR_URL,
    }


def group_key(alertname: str, namespace: str) -> str:
    """Alertmanager's groupKey for the root route grouped by alertname and namespace."""
    return f'{{}}:{{alertname="{alertname}", namespace="{namespace}"}}'


def vigil_state() -> str:
    """What Vigil has stored, for a failure message."""
    lines = [
        f"delivery {d.pk}: status={d.status} alerts={d.alert_count} error={d.error!r} "
        f"body={bytes(d.body)[:400]!r}"
        for d in WebhookDelivery.objects.order_by("pk")
    ]
    for incident in Incident.objects.order_by("pk"):
        alerts = list(incident.alerts.values_list("fingerprint", "status", "labels"))
        lines.append(
            f"incident {incident.pk}: status={incident.status} key={incident.grouping_key!r} "
            f"collection={incident.collection_started_at}..{incident.collection_finished_at} "
            f"alerts={alerts}"
        )
    return "\n".join(lines) or "(no deliveries and no incidents)"


def wait_for_vigil(am: AlertmanagerServer, condition, message: str, extra=None, timeout=TIMEOUT):
    def diagnostics() -> str:
        return vigil_state() + (f"\n{extra()}" if extra else "")

    return am.wait(condition, message=message, timeout=timeout, diagnostics=diagnostics)


def test_alerts_posted_to_alertmanager_become_incidents_grouped_by_its_group_key(alertmanager):
    status = alertmanager.status()
    assert status["versionInfo"]["version"].startswith("0.")
    assert status["cluster"]["status"] == "disabled"

    now = datetime.now(UTC)
    starts_at, ends_at = to_ms(now), to_ms(now + timedelta(hours=1))
    posted = [
        am_alert("KVCacheHigh", "llm", "vllm-0", starts_at=starts_at, ends_at=ends_at),
        am_alert("KVCacheHigh", "llm", "vllm-1", starts_at=starts_at, ends_at=ends_at),
        am_alert(
            "GPUXid", "gpu-ops", "dcgm-0", starts_at=starts_at, ends_at=ends_at, severity="critical"
        ),
    ]
    alertmanager.post_alerts(posted)

    # All three instances ingested (each delivery is one transaction, so its rows are complete).
    wait_for_vigil(
        alertmanager,
        lambda: Alert.objects.count() >= 3,
        "Vigil to ingest the three alerts Alertmanager notified",
    )

    kv_key, xid_key = group_key("KVCacheHigh", "llm"), group_key("GPUXid", "gpu-ops")
    incidents = {i.grouping_key: i for i in Incident.objects.all()}
    assert set(incidents) == {kv_key, xid_key}, vigil_state()
    assert Alert.objects.count() == 3, vigil_state()

    kv = incidents[kv_key]
    assert (kv.status, kv.namespace, kv.severity, kv.title) == (
        "open",
        "llm",
        "warning",
        "KVCacheHigh in llm",
    )
    assert (kv.alert_count, kv.firing_count) == (2, 2)
    kv_alerts = list(kv.alerts.order_by("labels__pod"))
    assert [a.labels for a in kv_alerts] == [posted[0]["labels"], posted[1]["labels"]]
    for alert, sent in zip(kv_alerts, posted[:2], strict=True):
        assert (alert.status, alert.alertname, alert.ends_at) == ("firing", "KVCacheHigh", None)
        assert alert.starts_at == starts_at
        assert alert.annotations == sent["annotations"]
        assert alert.generator_url == GENERATOR_URL
    opened = kv.timeline.get(kind=TimelineEvent.Kind.INCIDENT_OPENED)
    assert opened.payload == {"groupKey": kv_key, "receiver": "vigil"}
    assert kv.timeline.filter(kind=TimelineEvent.Kind.ALERT_FIRING).count() == 2

    xid = incidents[xid_key]
    assert (xid.status, xid.namespace, xid.severity) == ("open", "gpu-ops", "critical")
    assert [a.labels for a in xid.alerts.all()] == [posted[2]["labels"]]

    # Fingerprints: 16 hex digits, and the very ones Alertmanager reports for those label sets.
    am_fingerprints = {a["labels"]["pod"]: a["fingerprint"] for a in alertmanager.alerts()}
    vigil_fingerprints = {a.labels["pod"]: a.fingerprint for a in Alert.objects.all()}
    assert all(FINGERPRINT.fullmatch(f) for f in vigil_fingerprints.values()), vigil_fingerprints
    assert vigil_fingerprints == am_fingerprints

    # One processed delivery per group at least (a straggler may add a second for the group).
    deliveries = list(WebhookDelivery.objects.order_by("pk"))
    assert len(deliveries) >= 2, vigil_state()
    assert {d.status for d in deliveries} == {WebhookDelivery.Status.PROCESSED}, vigil_state()
    assert all(d.error == "" and d.processed_at for d in deliveries)
    bodies = [json.loads(bytes(d.body)) for d in deliveries]
    assert {b["groupKey"] for b in bodies} == {kv_key, xid_key}
    assert {(b["version"], b["receiver"], b["status"]) for b in bodies} == {
        ("4", "vigil", "firing")
    }
    assert [d.alert_count for d in deliveries] == [len(b["alerts"]) for b in bodies]
    integration = Integration.objects.get(kind=Integration.Kind.ALERTMANAGER)
    assert {d.integration_id for d in deliveries} == {integration.pk}
    assert integration.last_used_at is not None


def test_alerts_resolved_in_alertmanager_resolve_the_incident(alertmanager):
    now = datetime.now(UTC)
    starts_at, ends_at = to_ms(now), to_ms(now + timedelta(hours=1))
    firing = {
        pod: am_alert("VLLMDown", "serving", pod, starts_at=starts_at, ends_at=ends_at)
        for pod in ("vllm-0", "vllm-1")
    }
    alertmanager.post_alerts(list(firing.values()))

    incident = wait_for_vigil(
        alertmanager,
        lambda: Incident.objects.filter(firing_count=2).first(),
        "an incident with both alerts firing",
    )
    assert incident.grouping_key == group_key("VLLMDown", "serving")

    def resolve(pod: str) -> datetime:
        """Re-post the same alert (same labels and startsAt) with endsAt now: it resolves."""
        resolved_at = to_ms(datetime.now(UTC))
        alertmanager.post_alerts([{**firing[pod], "endsAt": rfc3339(resolved_at)}])
        return resolved_at

    # One of two resolves: the alert resolves, the incident stays open.
    first_end = resolve("vllm-0")
    wait_for_vigil(
        alertmanager,
        lambda: incident.alerts.filter(labels__pod="vllm-0", status="resolved").exists(),
        "the resolution of vllm-0 to reach Vigil",
    )
    incident.refresh_from_db()
    assert (incident.status, incident.firing_count, incident.resolved_at) == ("open", 1, None)
    assert incident.alerts.get(labels__pod="vllm-0").ends_at == first_end
    assert incident.alerts.get(labels__pod="vllm-1").status == "firing"
    assert not incident.timeline.filter(kind=TimelineEvent.Kind.INCIDENT_RESOLVED).exists()

    # The last one resolves: the incident auto-resolves.
    last_end = resolve("vllm-1")
    wait_for_vigil(
        alertmanager,
        lambda: Incident.objects.filter(pk=incident.pk, status="resolved").exists(),
        "the incident to resolve",
    )
    incident.refresh_from_db()
    assert incident.firing_count == 0
    assert incident.resolved_at is not None
    ends = {a.labels["pod"]: (a.status, a.ends_at) for a in incident.alerts.all()}
    assert ends == {"vllm-0": ("resolved", first_end), "vllm-1": ("resolved", last_end)}
    timeline = incident.timeline
    assert timeline.filter(kind=TimelineEvent.Kind.INCIDENT_RESOLVED).count() == 1
    assert timeline.filter(kind=TimelineEvent.Kind.ALERT_RESOLVED).count() == 2
    assert Incident.objects.count() == 1, vigil_state()
    assert Alert.objects.count() == 2, vigil_state()
    statuses = set(WebhookDelivery.objects.values_list("status", flat=True))
    assert statuses == {WebhookDelivery.Status.PROCESSED}, vigil_state()
    last_body = json.loads(bytes(WebhookDelivery.objects.latest("pk").body))
    assert last_body["status"] == "resolved"


def test_the_real_worker_collects_evidence_for_an_incident_alertmanager_opened(
    alertmanager, celery_worker_process
):
    _process, worker_log = celery_worker_process

    def worker_tail() -> str:
        return f"--- celery worker log (tail) ---\n{worker_log.read_text(errors='replace')[-4000:]}"

    now = datetime.now(UTC)
    alertmanager.post_alerts(
        [
            am_alert(
                "GPUMemoryHigh",
                "llm",
                "vllm-0",
                starts_at=now,
                ends_at=now + timedelta(hours=1),
            )
        ]
    )
    incident = wait_for_vigil(
        alertmanager, lambda: Incident.objects.first(), "Vigil to open the incident", worker_tail
    )
    assert incident.collection_requested_at is not None

    incident = wait_for_vigil(
        alertmanager,
        lambda: Incident.objects.filter(
            pk=incident.pk, collection_finished_at__isnull=False
        ).first(),
        "the celery worker to finish evidence collection",
        worker_tail,
        timeout=WORKER_TIMEOUT,
    )
    assert (
        incident.collection_requested_at
        <= incident.collection_started_at
        <= incident.collection_finished_at
    )
    kinds = list(
        incident.timeline.filter(actor="vigil").order_by("at", "pk").values_list("kind", flat=True)
    )
    # The finished round enqueues the analysis, which may already have been recorded too.
    assert kinds[:2] == [
        TimelineEvent.Kind.COLLECTION_STARTED,
        TimelineEvent.Kind.COLLECTION_FINISHED,
    ]
    assert set(kinds[2:]) <= {TimelineEvent.Kind.ANALYSIS_READY}

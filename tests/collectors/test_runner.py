"""The runner: every outcome of a collector becomes Evidence, redacted and capped; nothing escapes."""

from __future__ import annotations

import types

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from collectors import runner
from collectors.base import CollectorError, Entity, EvidenceDraft
from collectors.models import Evidence
from incidents.models import Incident
from tests.incidents.payloads import firing, group, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def incident(client, am_token) -> Incident:
    post(client, group(firing("A", pod="p-1")), am_token)
    return Incident.objects.get()


def fake_collector(behaviour):
    return types.SimpleNamespace(NAME="fake", collect=behaviour)


@pytest.fixture
def use_collector(monkeypatch):
    def install(behaviour):
        monkeypatch.setattr(runner, "collector_named", lambda name: fake_collector(behaviour))

    return install


def test_drafts_are_stored_with_their_entity(incident, use_collector):
    use_collector(
        lambda ctx: [
            EvidenceDraft(
                "pod_status", "pod p-1", Entity("Pod", "llm", "p-1"), {"phase": "Running"}
            )
        ]
    )
    (row,) = runner.run_collector(incident, "kubernetes")
    row.refresh_from_db()
    assert (row.collector, row.kind, row.status, row.title) == (
        "kubernetes",
        "pod_status",
        "ok",
        "pod p-1",
    )
    assert row.entity == {"kind": "Pod", "namespace": "llm", "name": "p-1"}
    assert row.data["phase"] == "Running"


def test_the_context_carries_the_alerts_and_a_lookback_window(incident, use_collector, settings):
    seen = {}

    def collect(ctx):
        seen["ctx"] = ctx
        return []

    use_collector(collect)
    runner.run_collector(incident, "prometheus")
    ctx = seen["ctx"]
    assert ctx.incident_id == incident.pk
    assert ctx.alerts[0].labels["pod"] == "p-1"
    assert ctx.window.first_alert_at == ctx.alerts[0].starts_at
    assert ctx.window.first_alert_at - ctx.window.start == settings.VIGIL_COLLECT_LOOKBACK
    assert ctx.cluster.name == "default"


def test_secrets_are_redacted_before_storing(incident, use_collector):
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD"
    use_collector(
        lambda ctx: [
            EvidenceDraft(
                "log_signatures", f"key {secret}", None, {"lines": [f"OPENAI_API_KEY={secret}"]}
            )
        ]
    )
    (row,) = runner.run_collector(incident, "logs")
    row.refresh_from_db()
    assert secret not in row.title and secret not in str(row.data)
    assert row.data["redactions"] >= 2


def test_a_collector_error_is_stored_as_a_failed_source_with_its_reason(incident, use_collector):
    def collect(ctx):
        raise CollectorError("Prometheus unreachable: connection refused")

    use_collector(collect)
    (row,) = runner.run_collector(incident, "prometheus")
    assert (row.status, row.kind, row.reason) == (
        "failed",
        "source_error",
        "Prometheus unreachable: connection refused",
    )


def test_a_crash_is_a_failed_source_not_an_exception(incident, use_collector):
    def collect(ctx):
        raise KeyError("items")

    use_collector(collect)
    (row,) = runner.run_collector(incident, "kubernetes")
    assert row.status == "failed" and row.reason.startswith("collector crashed: KeyError")


def test_the_soft_time_limit_is_a_failed_source(incident, use_collector, settings):
    settings.VIGIL_COLLECTOR_SOFT_LIMIT = 10

    def collect(ctx):
        raise SoftTimeLimitExceeded()

    use_collector(collect)
    (row,) = runner.run_collector(incident, "gpu")
    assert row.reason == "timed out: still running after 10s"


def test_nothing_found_is_said(incident, use_collector):
    use_collector(lambda ctx: [])
    (row,) = runner.run_collector(incident, "deploys")
    assert (row.status, row.kind) == ("ok", "empty")


def test_an_oversize_item_is_truncated_and_says_so(incident, use_collector, settings):
    settings.VIGIL_EVIDENCE_MAX_BYTES = 2000
    use_collector(
        lambda ctx: [EvidenceDraft("log_signatures", "big", None, {"lines": ["x" * 100] * 500})]
    )
    (row,) = runner.run_collector(incident, "logs")
    assert len(row.data["lines"]) < 500
    assert row.data["truncated"] == runner.TRUNCATION_NOTE


def test_the_per_incident_budget_drops_the_rest_and_says_how_many(
    incident, use_collector, settings
):
    settings.VIGIL_EVIDENCE_MAX_BYTES_PER_INCIDENT = 5 * 3000  # 3000 bytes for each of 5 collectors
    use_collector(
        lambda ctx: [EvidenceDraft("metric", f"m{i}", None, {"v": "y" * 1000}) for i in range(10)]
    )
    rows = runner.run_collector(incident, "prometheus")
    assert [r.kind for r in rows] == ["metric", "metric", "truncation"]
    assert rows[-1].data["dropped"] == 8
    assert Evidence.objects.filter(incident=incident).count() == 3

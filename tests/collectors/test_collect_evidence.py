"""Opening an incident enqueues its evidence collection after commit; a real worker runs it once."""

from __future__ import annotations

import pytest

from collectors.tasks import collect_now
from incidents.models import Incident, TimelineEvent
from tests.incidents.payloads import firing, group, post
from tests.support import wait_for


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_collects_evidence_for_a_new_incident(
    client, am_token, celery_worker_process
):
    _, log = celery_worker_process
    post(client, group(firing("A")), am_token)
    incident = Incident.objects.get()

    def finished():
        incident.refresh_from_db()
        return incident.collection_finished_at

    wait_for(
        finished,
        timeout=60,
        message=f"the worker to collect evidence; worker log:\n{log.read_text()[-2000:]}",
    )
    assert incident.collection_started_at <= incident.collection_finished_at
    # The default cluster has no sources configured: every collector says so, none hangs.
    from collectors.models import Evidence
    from collectors.registry import COLLECTORS

    assert {e.collector for e in Evidence.objects.filter(incident=incident)} == set(COLLECTORS)
    reasons = dict(
        Evidence.objects.filter(incident=incident, status="failed").values_list(
            "collector", "reason"
        )
    )
    assert reasons["prometheus"] == "cluster default has no Prometheus URL configured"

    # The finished round enqueued the analysis, which the same worker ran.
    from assistant.models import Analysis

    analysis = wait_for(
        lambda: Analysis.objects.filter(incident=incident, status="ready").first(),
        timeout=60,
        message=f"the worker to analyse; worker log:\n{log.read_text()[-2000:]}",
    )
    assert analysis.hypotheses[0]["category"] == "unknown"  # no sources, so nothing is supported
    kinds = list(incident.timeline.filter(actor="vigil").values_list("kind", flat=True))
    assert kinds == ["collection_started", "collection_finished", "analysis_ready"]


@pytest.mark.django_db
def test_collection_is_claimed_once_even_when_delivered_twice(client, am_token):
    post(client, group(firing("A")), am_token)
    incident = Incident.objects.get()
    assert collect_now(incident.pk) == "finished"
    assert collect_now(incident.pk) == "already claimed"
    assert TimelineEvent.objects.filter(incident=incident, kind="collection_started").count() == 1


@pytest.mark.django_db
def test_a_reopened_incident_is_collected_again(client, am_token):
    from datetime import timedelta

    from tests.incidents.payloads import T0, resolved

    post(client, group(firing("A")), am_token)
    incident = Incident.objects.get()
    collect_now(incident.pk)
    post(client, group(resolved("A")), am_token)
    post(client, group(firing("A", starts=T0 + timedelta(hours=1))), am_token)
    incident.refresh_from_db()
    assert incident.status == "open" and incident.collection_started_at is None
    assert collect_now(incident.pk) == "finished"

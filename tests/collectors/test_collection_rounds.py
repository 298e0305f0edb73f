"""Collection rounds: claimed once, re-collected (debounced) when alerts join or on refresh."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from collectors import tasks
from incidents.models import Incident
from tests.incidents.payloads import firing, group, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch):
    calls = []
    monkeypatch.setattr(
        tasks,
        "publish_on_commit",
        lambda task, *a, countdown=0: calls.append((task.name, a, countdown)),
    )
    monkeypatch.setattr(
        tasks,
        "publish",
        lambda task, *a, countdown=0: calls.append((task.name, a, countdown)) or True,
    )
    return calls


@pytest.fixture
def incident(client, am_token) -> Incident:
    post(client, group(firing("A", pod="p-1")), am_token)
    return Incident.objects.get()


def test_a_round_is_claimed_once(incident):
    assert tasks._claim(incident.pk) is True
    assert tasks._claim(incident.pk) is False


def test_a_refresh_after_a_finished_round_is_claimed(incident, published):
    tasks._claim(incident.pk)
    Incident.objects.filter(pk=incident.pk).update(collection_finished_at=timezone.now())
    assert tasks.request_collection(incident.pk, debounce=False) is True
    assert published == [("collectors.tasks.collect_evidence", (incident.pk,), 0)]
    assert tasks._claim(incident.pk) is True


def test_a_refresh_during_a_running_round_waits_for_it(incident, published):
    tasks._claim(incident.pk)
    tasks.request_collection(incident.pk, debounce=False)
    assert tasks._claim(incident.pk) is False  # still running
    Incident.objects.filter(pk=incident.pk).update(collection_finished_at=timezone.now())
    tasks._collect_again_if_requested(incident.pk)
    assert published[-1][0] == "collectors.tasks.collect_evidence"


def test_alerts_joining_request_one_debounced_round(
    client, am_token, incident, published, settings
):
    settings.VIGIL_COLLECT_DEBOUNCE = 30
    Incident.objects.filter(pk=incident.pk).update(
        collection_requested_at=timezone.now() - timedelta(minutes=5)
    )
    for i in range(5):
        post(client, group(firing("A", pod=f"joined-{i}")), am_token)
    rounds = [c for c in published if c[0] == "collectors.tasks.collect_evidence"]
    assert rounds == [("collectors.tasks.collect_evidence", (incident.pk,), 30)]


def test_alerts_joining_right_after_opening_are_collected_after_the_first_round(
    client, am_token, incident, published
):
    tasks._claim(incident.pk)
    post(client, group(firing("A", pod="late")), am_token)
    assert published == []  # within the debounce window of the opening request
    Incident.objects.filter(pk=incident.pk).update(collection_finished_at=timezone.now())
    tasks._collect_again_if_requested(incident.pk)
    assert [c[0] for c in published] == ["collectors.tasks.collect_evidence"]


def test_the_sweep_releases_a_round_whose_worker_died(incident, settings):
    from incidents.tasks import release_stuck_collections

    Incident.objects.filter(pk=incident.pk).update(
        collection_started_at=timezone.now() - timedelta(hours=1)
    )
    assert release_stuck_collections() == 1
    assert tasks._claim(incident.pk) is True


def test_refresh_button_is_for_responders(client_as, incident, published):
    assert client_as("viewer").post(f"/incidents/{incident.pk}/refresh-evidence").status_code == 403
    response = client_as("responder").post(
        f"/incidents/{incident.pk}/refresh-evidence", headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert b'id="evidence"' in response.content
    assert incident.timeline.filter(kind="collection_requested", actor="responder").exists()
    assert published[-1][0] == "collectors.tasks.collect_evidence"

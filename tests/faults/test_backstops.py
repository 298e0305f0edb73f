"""The pieces the fault tests rely on, checked in-process (fast; `make test-fast` runs them):
the broker's visibility timeout against the longest task, a redelivered or stale collection
task that stores nothing twice, and the sweep catching a re-collection whose publish was lost.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from assistant.remediation import EXECUTE_TIME_LIMIT, RETRY_DELAYS
from collectors import tasks
from collectors.models import Evidence
from collectors.registry import COLLECTORS
from incidents.models import Incident
from tests.incidents.payloads import firing, group, post
from vigil.celery import app


def test_the_visibility_timeout_outlasts_the_longest_task_and_its_longest_wait():
    """A task still running, or still waiting for its countdown (an unacknowledged ETA task is
    held by its worker), must not be delivered to a second worker."""
    app.loader.import_default_modules()
    limits = [
        task.time_limit or app.conf.task_time_limit or 0
        for name, task in app.tasks.items()
        if not name.startswith("celery.")
    ]
    longest_task = max([*limits, EXECUTE_TIME_LIMIT, settings.VIGIL_COLLECTOR_HARD_LIMIT])
    longest_wait = max(
        settings.VIGIL_SLACK_MAX_RETRY_WAIT,
        settings.VIGIL_COLLECT_MAX_WAIT,
        settings.VIGIL_LLM_MAX_RETRY_WAIT,
        max(RETRY_DELAYS),
        30,  # RETRY_ON_DATABASE_ERRORS' longest backoff
    )
    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    assert timeout > longest_task + longest_wait, (timeout, longest_task, longest_wait)


@pytest.fixture
def incident(client, am_token) -> Incident:
    post(client, group(firing("A", pod="p-1")), am_token)
    return Incident.objects.get()


@pytest.fixture
def round_id(incident) -> str:
    claimed = tasks.start_round(incident.pk)
    return claimed.collection_started_at.isoformat()


@pytest.mark.django_db
def test_a_redelivered_collector_task_stores_nothing_twice(incident, round_id):
    assert tasks.run_collector_task(incident.pk, "prometheus", round_id) == 1
    assert tasks.run_collector_task(incident.pk, "prometheus", round_id) == 0  # redelivered
    assert Evidence.objects.filter(incident=incident, collector="prometheus").count() == 1


@pytest.mark.django_db
def test_a_collector_task_of_a_replaced_round_stores_nothing(incident, round_id):
    Incident.objects.filter(pk=incident.pk).update(collection_started_at=None)  # the sweep
    newer = tasks.start_round(incident.pk).collection_started_at.isoformat()
    assert newer != round_id
    assert tasks.run_collector_task(incident.pk, "prometheus", round_id) == 0
    assert tasks.finish_collection(incident.pk, round_id) == "stale round"
    for name in COLLECTORS:
        tasks.run_collector_task(incident.pk, name, newer)
    assert tasks.finish_collection(incident.pk, newer) == "finished"
    assert tasks.finish_collection(incident.pk, newer) == "already finished"
    rows = list(Evidence.objects.filter(incident=incident).values_list("collector", flat=True))
    assert sorted(rows) == sorted(COLLECTORS)
    assert incident.timeline.filter(kind="collection_finished").count() == 1


@pytest.mark.django_db
def test_a_collector_finishing_after_its_round_was_written_off_keeps_one_answer(incident, round_id):
    """The chord's callback ran early (a killed task's redelivery counted twice): the late
    collector's rows would sit beside the "did not finish" row finish_collection wrote."""
    assert tasks.finish_collection(incident.pk, round_id) == "finished"
    late = Evidence.objects.create(incident=incident, collector="logs", kind="log_signatures")
    assert tasks._keep_first(incident.pk, "logs", round_id, [late.pk]) == 0
    (row,) = Evidence.objects.filter(incident=incident, collector="logs")
    assert "did not finish" in row.reason


@pytest.mark.django_db
def test_the_sweep_enqueues_a_recollection_whose_publish_was_lost(incident, monkeypatch):
    from incidents import tasks as incident_tasks

    published = []
    monkeypatch.setattr(
        incident_tasks, "publish", lambda task, *args, **kw: published.append(args) or True
    )
    long_ago = timezone.now() - timedelta(hours=1)
    # The first round ran; alerts joined afterwards, and their debounced publish was lost.
    Incident.objects.filter(pk=incident.pk).update(
        collection_started_at=long_ago,
        collection_finished_at=long_ago + timedelta(seconds=5),
        collection_requested_at=long_ago + timedelta(minutes=1),
    )
    assert incident_tasks.enqueue_missed_collections() == 1
    assert published == [(incident.pk,)]
    # One requested moments ago is on its way (debounced), not missed.
    published.clear()
    Incident.objects.filter(pk=incident.pk).update(collection_requested_at=timezone.now())
    assert incident_tasks.enqueue_missed_collections() == 0

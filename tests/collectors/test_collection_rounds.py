"""Collection rounds: claimed once, re-collected (debounced) when alerts join or on refresh."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from collectors import tasks
from incidents.models import Alert, Incident
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


def _finish_a_round(incident_id: int, ago: float = 0) -> None:
    """A round claimed and finished (`ago` seconds before now)."""
    assert tasks._claim(incident_id) is True
    finished = timezone.now() - timedelta(seconds=ago)
    Incident.objects.filter(pk=incident_id).update(
        collection_started_at=finished - timedelta(seconds=min(ago, 2)),
        collection_finished_at=finished,
    )


def test_alerts_joining_request_one_debounced_round(
    client, am_token, incident, published, settings
):
    settings.VIGIL_COLLECT_DEBOUNCE = 30
    _finish_a_round(incident.pk)
    for i in range(5):
        post(client, group(firing("A", pod=f"joined-{i}")), am_token)
    rounds = [c for c in published if c[0] == "collectors.tasks.collect_evidence"]
    assert rounds == [("collectors.tasks.collect_evidence", (incident.pk, True), 30)]


def test_alerts_joining_soon_after_the_last_request_still_get_a_round(
    client, am_token, incident, published, settings
):
    """The storm bug: the opening request was moments ago, so every join was "within the
    window" and none published; the last requests were never served."""
    settings.VIGIL_COLLECT_DEBOUNCE = 30
    _finish_a_round(incident.pk)  # moments after the opening request
    post(client, group(firing("A", pod="joined")), am_token)
    assert [c[1] for c in published] == [(incident.pk, True)]
    incident.refresh_from_db()
    assert incident.collection_requested_at > incident.collection_started_at  # unserved: pending


def test_the_first_unserved_request_is_kept(client, am_token, incident, published):
    _finish_a_round(incident.pk)
    post(client, group(firing("A", pod="first")), am_token)
    first = Incident.objects.get(pk=incident.pk).collection_requested_at
    post(client, group(firing("A", pod="second")), am_token)
    tasks.request_collection(incident.pk, debounce=False)  # the refresh button, too
    assert Incident.objects.get(pk=incident.pk).collection_requested_at == first


def test_alerts_joining_before_the_first_round_wait_for_it(client, am_token, incident, published):
    post(client, group(firing("A", pod="early")), am_token)
    assert published == []  # the first round, still to start, reads every alert then


def test_a_debounced_round_waits_while_alerts_keep_joining(incident, published, settings):
    settings.VIGIL_COLLECT_DEBOUNCE = 30
    settings.VIGIL_COLLECT_MAX_WAIT = 60
    _finish_a_round(incident.pk, ago=3600)
    now = timezone.now()
    Incident.objects.filter(pk=incident.pk).update(
        collection_requested_at=now - timedelta(seconds=20)
    )
    Alert.objects.filter(incident=incident).update(first_seen_at=now - timedelta(seconds=5))
    assert tasks.collect_evidence.run(incident.pk, True) == "debounced"
    ((name, args, countdown),) = published
    assert args == (incident.pk, True) and 24 < countdown <= 25  # 30 s after the last join
    assert tasks._claim(incident.pk) is True  # nothing was claimed meanwhile


def test_a_debounced_round_is_due_once_quiet_or_at_the_latest_after_the_max_wait(
    incident, settings
):
    settings.VIGIL_COLLECT_DEBOUNCE = 30
    settings.VIGIL_COLLECT_MAX_WAIT = 60
    _finish_a_round(incident.pk, ago=3600)
    now = timezone.now()
    alerts = Alert.objects.filter(incident=incident)
    requested = Incident.objects.filter(pk=incident.pk)
    requested.update(collection_requested_at=now - timedelta(seconds=40))
    alerts.update(first_seen_at=now - timedelta(seconds=31))
    assert tasks.debounce_wait(incident.pk) == 0  # quiet for the debounce
    alerts.update(first_seen_at=now)
    assert 19 < tasks.debounce_wait(incident.pk) <= 20  # still joining: 60 s after the request
    requested.update(collection_requested_at=now - timedelta(seconds=61))
    assert tasks.debounce_wait(incident.pk) == 0  # waited long enough, joining or not
    requested.update(collection_requested_at=now - timedelta(hours=1))
    Incident.objects.filter(pk=incident.pk).update(collection_started_at=now)
    assert tasks.debounce_wait(incident.pk) is None  # served by the round that started since


class _Storm:
    """Collection rounds on a simulated clock: tasks run when due, a round takes 2 s."""

    ROUND_SECONDS = 2.0

    def __init__(self, monkeypatch, incident_id: int) -> None:
        self.incident_id = incident_id
        self.now = timezone.now()
        self.queue: list[tuple] = []  # (due, seq, what, args)
        self.rounds: list = []
        self._seq = 0
        monkeypatch.setattr(timezone, "now", lambda: self.now)
        monkeypatch.setattr(tasks, "publish", self._publish)
        monkeypatch.setattr(tasks, "publish_on_commit", self._publish)
        monkeypatch.setattr(tasks, "start_round", self._start_round)

    def at(self, seconds: float, what: str, *args) -> None:
        self._seq += 1
        self.queue.append((self.now + timedelta(seconds=seconds), self._seq, what, args))

    def _publish(self, task, *args, countdown=0) -> bool:
        assert task.name == "collectors.tasks.collect_evidence"
        self.at(countdown or 0, "task", *args)
        return True

    def _start_round(self, incident_id: int):
        if tasks._claim(incident_id):
            self.rounds.append(self.now)
            self.at(self.ROUND_SECONDS, "finish")
        return None  # no chord: the round "runs" until its finish event

    def run(self, on_join) -> None:
        while self.queue:
            self.queue.sort()
            due, _, what, args = self.queue.pop(0)
            self.now = max(self.now, due)
            if what == "task":
                tasks.collect_evidence.run(*args)
            elif what == "finish":
                Incident.objects.filter(pk=self.incident_id).update(collection_finished_at=self.now)
                tasks._collect_again_if_requested(self.incident_id)
            else:
                on_join(*args)


def test_a_storm_starts_collection_twice_and_serves_its_last_join(
    client, am_token, incident, monkeypatch, settings
):
    """Alertmanager re-notifies a group every 6 s for a minute, each time with new alerts."""
    settings.VIGIL_COLLECT_DEBOUNCE = 30
    settings.VIGIL_COLLECT_MAX_WAIT = 60
    storm = _Storm(monkeypatch, incident.pk)
    start = storm.now
    storm.at(0, "task", incident.pk)  # the opening round, published when the incident opened
    for k in range(1, 10):
        storm.at(6 * k, "join", k)
    joins = []

    def join(k: int) -> None:
        assert post(client, group(firing("A", pod=f"storm-{k}")), am_token).status_code == 200
        joins.append(storm.now)

    storm.run(join)
    assert len(storm.rounds) == 2
    assert storm.rounds[1] >= joins[-1]  # the last round saw every alert
    assert storm.rounds[1] - start <= timedelta(seconds=6 + 60)  # first join + the max wait
    incident.refresh_from_db()
    assert incident.collection_requested_at <= incident.collection_started_at  # all served


def test_a_lone_join_is_collected_after_the_debounce(
    client, am_token, incident, monkeypatch, settings
):
    settings.VIGIL_COLLECT_DEBOUNCE = 30
    _finish_a_round(incident.pk)
    storm = _Storm(monkeypatch, incident.pk)
    storm.now += timedelta(hours=2)
    joined = storm.now
    assert post(client, group(firing("A", pod="lone")), am_token).status_code == 200
    storm.run(lambda *a: None)
    assert [r - joined for r in storm.rounds] == [timedelta(seconds=30)]


def test_alerts_joining_during_a_round_get_the_next_one(
    client, am_token, incident, monkeypatch, settings
):
    settings.VIGIL_COLLECT_DEBOUNCE = 30
    storm = _Storm(monkeypatch, incident.pk)
    storm.ROUND_SECONDS = 20.0  # slow collectors: the joins arrive while it runs
    storm.at(0, "task", incident.pk)
    storm.at(5, "join", 1)
    storm.at(10, "join", 2)
    storm.run(lambda k: post(client, group(firing("A", pod=f"during-{k}")), am_token))
    assert len(storm.rounds) == 2
    assert storm.rounds[1] - storm.rounds[0] == timedelta(seconds=10 + 30)  # quiet since 10 s
    incident.refresh_from_db()
    assert incident.collection_requested_at <= incident.collection_started_at


def test_the_sweep_starts_a_requested_round_whose_publish_was_lost(
    client, am_token, incident, monkeypatch, settings
):
    import incidents.tasks

    settings.VIGIL_COLLECT_DEBOUNCE = 30
    settings.VIGIL_COLLECT_MAX_WAIT = 60
    settings.VIGIL_SWEEP_GRACE = timedelta(seconds=30)
    swept = []
    monkeypatch.setattr(
        incidents.tasks, "publish", lambda task, *a, countdown=0: swept.append(a) or True
    )
    _finish_a_round(incident.pk, ago=3600)
    requested = Incident.objects.filter(pk=incident.pk)
    requested.update(collection_requested_at=timezone.now() - timedelta(seconds=60))
    assert incidents.tasks.enqueue_missed_collections() == 0  # its round may still be on its way
    requested.update(collection_requested_at=timezone.now() - timedelta(seconds=91))
    assert incidents.tasks.enqueue_missed_collections() == 1
    assert swept == [(incident.pk,)]


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

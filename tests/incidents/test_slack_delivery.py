"""How Slack messages get there: after commit, once, in order, with rate limits and failures.

The tasks run in-process (`task(...)`, or `slack.announce`, what the task runs); a monkeypatched
`retry` records the countdown a task asks Celery for instead of re-running it at once, which is
what Celery's eager mode would do.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from celery.exceptions import Retry
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from incidents import services, slack
from incidents.models import Incident, SlackMessage, SlackThread, TimelineEvent
from incidents.tasks import slack_announce, slack_sweep
from tests.incidents.slack_support import (
    announce,
    configure,
    event_of,
    open_incident,
    ready_analysis,
)
from tests.slack_standin import Answer, SlackStandin

Kind = TimelineEvent.Kind


@pytest.fixture
def standin(settings):
    with SlackStandin() as standin:
        yield configure(settings, standin)


@pytest.fixture
def retries(monkeypatch):
    """The countdowns slack_announce asks Celery for (each retry raises Retry, as Celery's does)."""
    asked: list[float] = []

    def retry(*args, countdown=None, **kwargs):
        asked.append(countdown)
        return Retry(when=countdown)

    monkeypatch.setattr(slack_announce, "retry", retry)
    return asked


@pytest.fixture
def enqueued(monkeypatch):
    """What the post_save receiver publishes on commit."""
    import incidents.signals

    calls: list[tuple[str, tuple]] = []
    monkeypatch.setattr(
        incidents.signals,
        "publish_on_commit",
        lambda task, *args, **kwargs: calls.append((task.name, args)),
    )
    return calls


def failures(incident: Incident) -> list[tuple[str, dict]]:
    return list(
        TimelineEvent.objects.filter(incident=incident, kind=Kind.SLACK_FAILED).values_list(
            "summary", "payload"
        )
    )


def elapse(event: TimelineEvent) -> None:
    """The countdown the task asked for has passed, and with it any wait Slack set."""
    SlackMessage.objects.filter(event=event).update(retry_at=timezone.now() - timedelta(seconds=1))
    cache.clear()


@pytest.mark.django_db
def test_a_rate_limit_is_retried_after_retry_after_and_then_succeeds(
    standin, client, am_token, retries
):
    incident = open_incident(client, am_token)
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    standin.rate_limit("chat.postMessage", retry_after=7)

    with pytest.raises(Retry):
        slack_announce(opened.pk)
    assert retries == [7.0]
    message = SlackMessage.objects.get(event=opened)
    assert (message.status, message.attempts, message.error) == ("pending", 1, "ratelimited")
    assert message.retry_at > timezone.now() + timedelta(seconds=5)
    # Before the countdown is over, nothing is tried again, whoever asks.
    with pytest.raises(Retry):
        slack_announce(opened.pk)
    assert len(standin.calls()) == 1

    elapse(opened)
    assert slack_announce(opened.pk) == "sent"
    assert [c.method for c in standin.calls()] == ["chat.postMessage", "chat.postMessage"]
    message.refresh_from_db()
    assert (message.status, message.attempts, message.retry_at) == ("sent", 2, None)
    assert failures(incident) == []


@pytest.mark.django_db
def test_a_rate_limit_holds_back_every_incident_until_it_is_over(
    standin, client, am_token, retries
):
    first = event_of(open_incident(client, am_token), Kind.INCIDENT_OPENED)
    second = event_of(open_incident(client, am_token, "GPUXidError"), Kind.INCIDENT_OPENED)
    standin.rate_limit("chat.postMessage", retry_after=7)
    with pytest.raises(Retry):
        slack_announce(first.pk)
    # Another incident's message waits for the same limit without a call of its own.
    with pytest.raises(Retry):
        slack_announce(second.pk)
    assert len(standin.calls("chat.postMessage")) == 1
    assert retries[0] == 7.0 and 6.0 < retries[1] <= 7.0
    message = SlackMessage.objects.get(event=second)
    assert (message.status, message.error) == ("pending", "ratelimited")
    # Other methods are not held back: Slack's limits are per method.
    assert slack._shared_wait("chat_update") == 0.0

    elapse(second)
    assert slack_announce(second.pk) == "sent"


@pytest.mark.django_db
def test_a_long_retry_after_is_capped(standin, client, am_token, retries, settings):
    settings.VIGIL_SLACK_MAX_RETRY_WAIT = 60
    incident = open_incident(client, am_token)
    standin.rate_limit("chat.postMessage", retry_after=3600)
    with pytest.raises(Retry):
        slack_announce(event_of(incident, Kind.INCIDENT_OPENED).pk)
    assert retries == [60.0]


@pytest.mark.django_db
@pytest.mark.parametrize("error", ["channel_not_found", "invalid_auth", "not_in_channel"])
def test_a_permanent_error_is_not_retried_and_shows_on_the_timeline(
    standin, client, am_token, retries, enqueued, error
):
    incident = open_incident(client, am_token)
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    enqueued.clear()
    standin.fail("chat.postMessage", error)

    assert slack_announce(opened.pk) == "failed"
    assert slack_announce(opened.pk) == "failed"  # redelivered: no second try, no second line

    assert retries == []
    assert len(standin.calls()) == 1
    assert failures(incident) == [
        (
            f"Slack message for incident opened not sent: {error}",
            {
                "event": opened.pk,
                "announcement": "opened",
                "channel": "C0DEFAULT",
                "error": error,
                "attempts": 1,
            },
        )
    ]
    assert SlackMessage.objects.get(event=opened).status == "failed"
    # The failure's own event is never announced: no loop.
    assert enqueued == []


@pytest.mark.django_db
def test_slack_trouble_backs_off_then_gives_up_visibly(standin, client, am_token, retries):
    incident = open_incident(client, am_token)
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    for _ in range(3):
        standin.script("chat.postMessage", Answer(503, "<html>Service Unavailable</html>"))

    for _ in range(2):
        with pytest.raises(Retry):
            slack_announce(opened.pk)
        elapse(opened)
    assert slack_announce(opened.pk) == "failed"

    assert retries == [5.0, 10.0]  # exponential backoff, VIGIL_SLACK_MAX_ATTEMPTS = 3 tries
    assert len(standin.calls()) == 3
    ((summary, payload),) = failures(incident)
    assert summary == "Slack message for incident opened not sent after 3 attempts: HTTP 503"
    assert payload["attempts"] == 3


@pytest.mark.django_db
def test_an_unreachable_slack_is_retried(standin, client, am_token, settings, retries):
    from tests.support import free_port

    settings.VIGIL_SLACK_API_URL = f"http://127.0.0.1:{free_port()}/api/"
    incident = open_incident(client, am_token)
    with pytest.raises(Retry):
        slack_announce(event_of(incident, Kind.INCIDENT_OPENED).pk)
    assert retries == [5.0]
    assert "Connection refused" in SlackMessage.objects.get().error


@pytest.mark.django_db
def test_a_webhook_rate_limit_follows_retry_after(settings, client, am_token, retries):
    with SlackStandin() as standin:
        configure(settings, standin, mode="webhook")
        incident = open_incident(client, am_token)
        standin.rate_limit("webhook", retry_after=9)
        with pytest.raises(Retry):
            slack_announce(event_of(incident, Kind.INCIDENT_OPENED).pk)
        assert retries == [9.0]


@pytest.mark.django_db
def test_a_parent_that_cannot_be_updated_is_said_once(standin, client, am_token, retries):
    incident = open_incident(client, am_token)
    announce(event_of(incident, Kind.INCIDENT_OPENED))
    standin.fail("chat.update", "message_not_found")
    standin.fail("chat.update", "message_not_found")
    announce(services.incident_acknowledge(incident=incident, by="responder"))
    announce(services.incident_resolve(incident=incident, by="responder"))
    assert [summary for summary, _ in failures(incident)] == [
        "Slack: the incident's message could not be updated: message_not_found"
    ]
    assert SlackThread.objects.get(incident=incident).error == "message_not_found"


@pytest.mark.django_db
def test_without_slack_nothing_is_enqueued_and_nothing_is_sent(client, am_token, enqueued):
    incident = open_incident(client, am_token)
    services.incident_resolve(incident=incident, by="responder")
    assert enqueued == []
    assert slack.announce(event_of(incident, Kind.INCIDENT_OPENED).pk) == "off"
    assert slack_sweep() == {"announcements": 0, "unfurls": 0, "parents": 0}
    assert not SlackThread.objects.exists()
    assert not SlackMessage.objects.exists()


@pytest.mark.django_db
def test_an_auto_resolution_is_enqueued_as_soon_as_ingest_commits(
    standin, client, am_token, enqueued
):
    from tests.incidents.payloads import group, post, resolved

    incident = open_incident(client, am_token)
    enqueued.clear()
    assert post(client, group(resolved("KVCacheHigh")), am_token).status_code == 200
    done = event_of(incident, Kind.INCIDENT_RESOLVED)
    assert enqueued == [("incidents.tasks.slack_announce", (done.pk,))]


@pytest.mark.django_db
def test_announced_events_are_enqueued_and_others_are_not(standin, client, am_token, enqueued):
    incident = open_incident(client, am_token)
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    # Alert lines are bulk-created (no signal) and are not announced anyway.
    assert enqueued == [("incidents.tasks.slack_announce", (opened.pk,))]
    enqueued.clear()
    TimelineEvent.objects.create(incident=incident, kind=Kind.NOTE, actor="a", summary="n")
    TimelineEvent.objects.create(
        incident=incident, kind=Kind.SLACK_FAILED, actor="slack", summary="x"
    )
    assert enqueued == []
    acknowledged = services.incident_acknowledge(incident=incident, by="responder")
    assert enqueued == [("incidents.tasks.slack_announce", (acknowledged.pk,))]


@pytest.mark.django_db
def test_a_task_finding_the_incident_busy_retries_shortly(standin, client, am_token, retries):
    incident = open_incident(client, am_token)
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    SlackThread.objects.create(
        incident=incident, channel="C0DEFAULT", lease_until=timezone.now() + timedelta(minutes=1)
    )
    with pytest.raises(Retry):
        slack_announce(opened.pk)
    assert retries == [slack.BUSY_WAIT]
    assert standin.calls() == []
    # A lease whose holder died expires.
    SlackThread.objects.update(lease_until=timezone.now() - timedelta(seconds=1))
    assert slack_announce(opened.pk) == "sent"


@pytest.mark.django_db
def test_events_older_than_the_maximum_age_are_not_announced(standin, client, am_token):
    incident = open_incident(client, am_token)
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    TimelineEvent.objects.filter(pk=opened.pk).update(at=timezone.now() - timedelta(days=1))
    assert announce(opened) == "skipped"
    assert standin.calls() == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_tasks_post_the_parent_once_and_replies_in_timeline_order(
    standin, client, am_token
):
    incident = open_incident(client, am_token)
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    _, ready = ready_analysis(incident)
    acknowledged = services.incident_acknowledge(incident=incident, by="responder")
    resolved = services.incident_resolve(incident=incident, by="responder")
    events = [resolved, ready, acknowledged, opened]  # the workers pick them in any order
    errors: list[BaseException] = []
    start = threading.Barrier(len(events))

    def worker(event_id: int) -> None:
        try:
            start.wait()
            for _ in range(200):  # what Celery's retries would do, minus the countdown
                try:
                    slack.announce(event_id)
                    return
                except slack.SlackRetry:
                    time.sleep(0.02)
            raise AssertionError(f"event {event_id} never went out")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(e.pk,)) for e in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []

    posts = standin.calls("chat.postMessage")
    assert ["thread_ts" in p.json for p in posts] == [False, True, True]
    assert [p.json["blocks"][0]["text"]["text"].split("\n")[0] for p in posts[1:]] == [
        "*Analysis ready*",
        "*:white_check_mark: Resolved*",
    ]
    assert {p.json["thread_ts"] for p in posts[1:]} == {"1700000000.000001"}
    assert set(SlackMessage.objects.filter(incident=incident).values_list("status", flat=True)) == {
        "sent"
    }
    assert SlackThread.objects.get(incident=incident).lease_until is None


@pytest.mark.django_db
def test_a_long_backlog_goes_out_in_order_over_several_runs(standin, client, am_token, monkeypatch):
    monkeypatch.setattr(slack, "DRAIN_LIMIT", 2)
    incident = open_incident(client, am_token)
    events = [event_of(incident, Kind.INCIDENT_OPENED)]
    for _ in range(3):
        events.append(ready_analysis(incident)[1])
    with pytest.raises(slack.SlackRetry):
        slack.announce(events[-1].pk)  # the first two went out; the task goes on shortly
    assert slack.announce(events[-1].pk) == "sent"
    # Stand-in timestamps increase with each post: the messages went out in timeline order.
    assert [m.ts for m in SlackMessage.objects.order_by("event__at", "event__id")] == [
        f"1700000000.00000{n}" for n in (1, 2, 3, 4)
    ]

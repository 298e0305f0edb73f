"""A dead broker never fails or hangs the webhook; the sweep enqueues what was missed."""

from __future__ import annotations

import pytest

from incidents.models import Incident, WebhookDelivery
from incidents.tasks import enqueue_missed_collections
from tests.incidents.payloads import firing, group, post
from tests.support import free_port
from vigil import celery as vigil_celery

pytestmark = pytest.mark.django_db(transaction=True)


def _use_broker(url: str) -> None:
    """Switch the app's broker in-process: drop every cached connection and producer pool."""
    from kombu import pools

    app = vigil_celery.app
    app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = url
    app.pool.force_close_all()
    app._pool = None
    app.amqp._producer_pool = None
    pools.reset()


@pytest.fixture
def dead_broker():
    """Point the app at a Redis port nobody listens on, then restore the real broker."""
    real = vigil_celery.app.conf.broker_url
    _use_broker(f"redis://127.0.0.1:{free_port()}/0")
    yield
    _use_broker(real)


@pytest.fixture
def published(monkeypatch):
    """Record what reaches the (real) broker's publish call and whether it succeeded."""
    calls = []
    real_publish = vigil_celery.publish

    def spy(task, *args, countdown=0):
        ok = real_publish(task, *args, countdown=countdown)
        calls.append((task.name, args, ok))
        return ok

    monkeypatch.setattr(vigil_celery, "publish", spy)
    monkeypatch.setattr("incidents.tasks.publish", spy)
    return calls


def test_webhook_answers_2xx_and_stores_everything_while_the_broker_is_down(
    client, am_token, dead_broker, published
):
    first = post(client, group(firing("A")), am_token)
    second = post(client, group(firing("B")), am_token)

    assert (first.status_code, second.status_code) == (200, 200)
    assert WebhookDelivery.objects.filter(status="processed").count() == 2
    assert Incident.objects.count() == 2
    assert [ok for _, _, ok in published] == [False, False]
    assert not Incident.objects.filter(collection_started_at__isnull=False).exists()


def test_after_a_failed_publish_the_next_requests_skip_the_broker(
    client, am_token, dead_broker, monkeypatch
):
    post(client, group(firing("A")), am_token)
    attempts = []
    monkeypatch.setattr(
        vigil_celery.app.amqp,
        "send_task_message",
        lambda *a, **k: attempts.append(a) or (_ for _ in ()).throw(OSError("down")),
    )
    post(client, group(firing("B")), am_token)
    assert attempts == []  # backing off: no connection attempt, no timeout paid


def test_the_sweep_cannot_enqueue_while_the_broker_stays_down(
    client, am_token, dead_broker, settings
):
    from datetime import timedelta

    post(client, group(firing("A")), am_token)
    settings.VIGIL_SWEEP_GRACE = timedelta(0)
    vigil_celery.reset_broker_backoff()
    assert enqueue_missed_collections() == 0
    assert Incident.objects.get().collection_started_at is None


def test_the_sweep_enqueues_once_the_broker_is_back(client, am_token, published, settings):
    from datetime import timedelta

    real = vigil_celery.app.conf.broker_url
    _use_broker(f"redis://127.0.0.1:{free_port()}/0")
    try:
        post(client, group(firing("A")), am_token)
    finally:
        _use_broker(real)
    incident = Incident.objects.get()
    assert published[-1][2] is False

    settings.VIGIL_SWEEP_GRACE = timedelta(0)
    vigil_celery.reset_broker_backoff()
    assert enqueue_missed_collections() == 1
    assert published[-1] == ("collectors.tasks.collect_evidence", (incident.pk,), True)

"""Alertmanager retries and reorders: a resolution before its firing, a notification delivered
again after the client timed out, the same notification many times at once — nothing is
duplicated and the final state is right.

Against gunicorn (3 sync workers, so deliveries really run at the same time) on a throwaway
PostgreSQL; the outcome is read from the database.
"""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
import requests

from tests.faults.support import firing, group, now, record, resolved, settle

pytestmark = pytest.mark.faults
CONCURRENT = 8


@pytest.fixture
def web(vigil):
    token = vigil.integration_token()
    vigil.start_web(workers=3)
    return vigil, token


def alerts_of(vigil, name_prefix: str) -> list[tuple]:
    return vigil.rows(
        "SELECT alertname, fingerprint, starts_at, status, ends_at, notification_count "
        "FROM incidents_alert WHERE alertname LIKE %s ORDER BY alertname",
        f"{name_prefix}%",
    )


def events_of(vigil, incident_id: int) -> list[tuple]:
    return vigil.rows(
        "SELECT kind, summary FROM incidents_timelineevent WHERE incident_id = %s ORDER BY id",
        incident_id,
    )


def incident_of(vigil, alertname: str) -> tuple:
    return vigil.rows(
        "SELECT i.id, i.status, i.alert_count, i.firing_count FROM incidents_incident i "
        "JOIN incidents_alert a ON a.incident_id = i.id WHERE a.alertname = %s",
        alertname,
    )[0]


def post_all_at_once(vigil, token: str, payloads: list[dict]) -> list[int]:
    """Every payload in its own thread, released together."""
    barrier = threading.Barrier(len(payloads))
    statuses: list[int] = [0] * len(payloads)

    def send(index: int) -> None:
        http = requests.Session()
        http.trust_env = False
        barrier.wait()
        statuses[index] = http.post(
            f"{vigil.web_url}/hooks/alertmanager",
            json=payloads[index],
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


def test_a_resolution_before_its_firing_leaves_the_alert_resolved(web):
    vigil, token = web
    t0 = now() - timedelta(minutes=20)
    fire = group("reorder", firing("Reorder", t0, pod="p-1"))
    resolve = group("reorder", resolved("Reorder", t0, t0 + timedelta(minutes=5), pod="p-1"))
    for payload in (resolve, fire, fire):  # the resolution overtook the firing; then a repeat
        assert vigil.post_hook(payload, token).status_code == 200

    ((_, _, starts, status, ends, count),) = alerts_of(vigil, "Reorder")
    assert (status, ends, count) == ("resolved", t0 + timedelta(minutes=5), 3)
    incident_id, incident_status, alert_count, firing_count = incident_of(vigil, "Reorder")
    assert (incident_status, alert_count, firing_count) == ("resolved", 1, 0)
    kinds = [kind for kind, _ in events_of(vigil, incident_id)]
    assert kinds.count("alert_resolved") == 1 and "alert_firing" not in kinds
    record("Alertmanager: resolved before firing, then a repeat", inputs=3, lost=0)


def test_shuffled_duplicated_notifications_of_a_group_end_in_the_right_state(web):
    vigil, token = web
    t0 = now() - timedelta(minutes=30)
    names = [f"Shuffle{i}" for i in range(4)]
    # As Alertmanager sends them: all firing; then the first two resolved; then all resolved
    # but the last, which fires on.
    history = [
        group("shuffle", *(firing(n, t0, pod=n) for n in names)),
        group(
            "shuffle",
            *(resolved(n, t0, t0 + timedelta(minutes=10), pod=n) for n in names[:2]),
            *(firing(n, t0, pod=n) for n in names[2:]),
        ),
        group(
            "shuffle",
            *(resolved(n, t0, t0 + timedelta(minutes=10), pod=n) for n in names[:3]),
            firing(names[3], t0, pod=names[3]),
        ),
    ]
    deliveries = history * 3  # each retried twice
    random.Random(11).shuffle(deliveries)
    for payload in deliveries:
        assert vigil.post_hook(payload, token).status_code == 200

    rows = alerts_of(vigil, "Shuffle")
    assert [(r[0], r[3]) for r in rows] == [
        ("Shuffle0", "resolved"),
        ("Shuffle1", "resolved"),
        ("Shuffle2", "resolved"),
        ("Shuffle3", "firing"),
    ]
    incident_id, status, alert_count, firing_count = incident_of(vigil, "Shuffle3")
    assert (alert_count, firing_count) == (4, 1) and status != "resolved"
    kinds = [kind for kind, _ in events_of(vigil, incident_id)]
    # Each instance fired once and resolved at most once, whatever the order; one incident.
    assert kinds.count("alert_resolved") == 3
    assert kinds.count("alert_firing") + kinds.count("alert_resolved") <= 7
    assert len({r[0] for r in vigil.rows("SELECT incident_id FROM incidents_alert")}) == 1
    record("Alertmanager: 3 notifications x 3 deliveries, shuffled", inputs=9, lost=0)


def test_a_delivery_retried_after_a_client_timeout_is_not_duplicated(web):
    vigil, token = web
    t0 = now()
    payload = group("timeout", firing("TimedOut", t0, pod="p-1"))
    http = requests.Session()
    http.trust_env = False
    with pytest.raises(requests.Timeout):
        # Sent in full, then Alertmanager stops waiting: Vigil goes on with it all the same.
        http.post(
            f"{vigil.web_url}/hooks/alertmanager",
            json=payload,
            headers={"Authorization": f"Bearer {token}"},
            timeout=(10, 0.001),
        )
    assert vigil.post_hook(payload, token).status_code == 200  # the retry
    settle(
        vigil,
        lambda: (
            vigil.value("SELECT count(*) FROM incidents_webhookdelivery WHERE status = 'processed'")
            == 2
        ),
        "both deliveries processed",
    )
    ((_, _, _, status, _, count),) = alerts_of(vigil, "TimedOut")
    assert (status, count) == ("firing", 2)
    incident_id, _, alert_count, _ = incident_of(vigil, "TimedOut")
    kinds = [kind for kind, _ in events_of(vigil, incident_id)]
    assert alert_count == 1 and kinds.count("alert_firing") == 1
    assert kinds.count("incident_opened") == 1
    record("Alertmanager: retry after a client timeout", inputs=2, lost=0)


def test_the_same_notification_many_times_at_once_is_stored_once(web):
    vigil, token = web
    t0 = now()
    fire = group("burst", firing("Burst", t0, pod="p-1"), firing("Burst2", t0, pod="p-2"))
    assert post_all_at_once(vigil, token, [fire] * CONCURRENT) == [200] * CONCURRENT
    resolve = group(
        "burst",
        resolved("Burst", t0, t0 + timedelta(minutes=3), pod="p-1"),
        resolved("Burst2", t0, t0 + timedelta(minutes=3), pod="p-2"),
    )
    assert post_all_at_once(vigil, token, [resolve] * CONCURRENT) == [200] * CONCURRENT

    rows = alerts_of(vigil, "Burst")
    assert [(r[0], r[3], r[5]) for r in rows] == [
        ("Burst", "resolved", 2 * CONCURRENT),
        ("Burst2", "resolved", 2 * CONCURRENT),
    ]
    incident_id, status, alert_count, firing_count = incident_of(vigil, "Burst")
    assert (status, alert_count, firing_count) == ("resolved", 2, 0)
    assert vigil.value("SELECT count(*) FROM incidents_incident") == 1
    kinds = [kind for kind, _ in events_of(vigil, incident_id)]
    assert kinds.count("incident_opened") == 1
    assert kinds.count("alert_firing") == 2
    assert kinds.count("alert_resolved") == 2
    assert kinds.count("incident_resolved") == 1
    processed = vigil.value(
        "SELECT count(*) FROM incidents_webhookdelivery WHERE status = 'processed'"
    )
    assert processed == 2 * CONCURRENT
    record(
        f"Alertmanager: the same notification {CONCURRENT}x at once (firing, then resolved)",
        inputs=2 * CONCURRENT,
        lost=0,
    )


def test_a_resolution_racing_the_first_firing_of_a_new_group_is_not_lost(web):
    vigil, token = web
    t0 = now() - timedelta(minutes=10)
    rounds = 40
    statuses: list[int] = []
    for i in range(rounds):
        fire = group(f"race{i}", firing(f"Race{i:02d}", t0, pod="p-1"))
        resolve = group(
            f"race{i}", resolved(f"Race{i:02d}", t0, t0 + timedelta(minutes=2), pod="p-1")
        )
        # Alertmanager retried the firing while the resolution was already on its way.
        statuses += post_all_at_once(vigil, token, [fire, resolve, fire, resolve])
    # A delivery that lost the race to create the instance is stored and answered 202: the
    # sweep ingests it (Alertmanager need not retry).
    assert set(statuses) <= {200, 202}, statuses
    vigil.sweep()
    assert vigil.value("SELECT count(*) FROM incidents_webhookdelivery") == 4 * rounds
    assert (
        vigil.value("SELECT count(*) FROM incidents_webhookdelivery WHERE status <> 'processed'")
        == 0
    )
    rows = alerts_of(vigil, "Race")
    # Before the fix, a resolution that joined the incident its firing was opening was dropped
    # uncounted: the alert stayed firing (seen in 1 round of 40).
    assert [(r[0], r[3], r[5]) for r in rows] == [
        (f"Race{i:02d}", "resolved", 4) for i in range(rounds)
    ]
    assert vigil.value("SELECT count(*) FROM incidents_incident WHERE status <> 'resolved'") == 0
    record(
        "Alertmanager: a resolution racing the first firing of a new group",
        inputs=4 * rounds,
        lost=0,
        deferred_202=statuses.count(202),
    )

"""Redis is unreachable while webhooks arrive: every delivery answers 2xx at once, is stored, and
is processed (collected, analysed) after Redis returns, by the beat sweep — nothing lost.

Real processes: gunicorn, a Celery worker and beat, on a throwaway PostgreSQL and Redis; Redis
is killed and restarted empty on the same port (queued tasks are gone too, as after a crash).
"""

from __future__ import annotations

import time

import pytest

from tests.faults.support import firing, group, now, record, settle

pytestmark = pytest.mark.faults

NEW_GROUPS = 8
JOINING = 3


@pytest.fixture
def running(vigil):
    # The sweep runs every 2s and takes deliveries and collections older than 1s; a joined alert
    # is re-collected after 2s. The worker runs the sweep, so it needs these settings too.
    vigil.env_overrides.update(
        VIGIL_SWEEP_INTERVAL="2",
        VIGIL_SWEEP_GRACE="1",
        VIGIL_COLLECT_DEBOUNCE="2",
        VIGIL_BROKER_BACKOFF="3",
    )
    token = vigil.integration_token()
    vigil.start_web()
    vigil.start_worker()
    vigil.start_beat()
    return vigil, token


def analysed_after_last_alert(vigil) -> list[tuple]:
    """Open incidents lacking a finished round that started after their last alert arrived, or
    an analysis of that round."""
    return vigil.rows(
        """
        SELECT i.id FROM incidents_incident i
        WHERE i.status <> 'resolved' AND (
            i.collection_finished_at IS NULL
            OR i.collection_started_at IS NULL
            OR i.collection_finished_at < i.collection_started_at
            OR i.collection_started_at < (SELECT max(a.first_seen_at) FROM incidents_alert a
                                          WHERE a.incident_id = i.id)
            OR NOT EXISTS (SELECT 1 FROM assistant_analysis an WHERE an.incident_id = i.id
                           AND an.status = 'ready' AND an.created_at >= i.collection_finished_at))
        """
    )


def test_webhooks_while_redis_is_down_are_stored_and_processed_when_it_returns(running):
    vigil, token = running
    t0 = now()
    before = vigil.post_hook(group("before", firing("Before", t0, pod="p-0")), token)
    assert before.status_code == 200, before.text
    settle(vigil, lambda: not analysed_after_last_alert(vigil), "the first incident's analysis")

    vigil.redis.stop()
    payloads = [group(f"g{i}", firing(f"Outage{i}", t0, pod=f"p-{i}")) for i in range(NEW_GROUPS)]
    payloads += [group("before", firing("Before", t0, pod=f"joined-{i}")) for i in range(JOINING)]
    payloads += payloads[:2]  # Alertmanager retrying two of them
    answers = []
    for payload in payloads:
        started = time.monotonic()
        answer = vigil.post_hook(payload, token, timeout=30)
        answers.append((answer.status_code, time.monotonic() - started))
    assert [status for status, _ in answers] == [200] * len(payloads), answers
    stored = vigil.value("SELECT count(*) FROM incidents_webhookdelivery WHERE status='processed'")
    assert stored == 1 + len(payloads)
    assert vigil.value("SELECT count(*) FROM incidents_alert") == 1 + NEW_GROUPS + JOINING

    vigil.redis.start()  # empty: whatever was queued before the outage is gone as well
    settle(
        vigil,
        lambda: (
            vigil.value("SELECT count(*) FROM incidents_incident WHERE status <> 'resolved'")
            == 1 + NEW_GROUPS
            and not analysed_after_last_alert(vigil)
        ),
        "every incident collected and analysed after Redis returned",
    )
    # Each incident's last round saw every alert; no alert, incident or delivery twice.
    assert vigil.value("SELECT count(*) FROM incidents_alert") == 1 + NEW_GROUPS + JOINING
    assert (
        vigil.value(
            "SELECT count(*) FROM (SELECT fingerprint, starts_at FROM incidents_alert "
            "GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
        == 0
    )
    duplicated_evidence = vigil.rows(
        "SELECT incident_id, collector, kind, title, count(*) FROM collectors_evidence "
        "GROUP BY 1, 2, 3, 4, entity_kind, entity_namespace, entity_name HAVING count(*) > 1"
    )
    assert duplicated_evidence == []
    record(
        "Redis down while webhooks arrive",
        inputs=len(payloads),
        lost=0,
        answered_2xx=len(answers),
        slowest_answer_s=round(max(s for _, s in answers), 2),
    )

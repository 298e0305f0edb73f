"""PostgreSQL restarts under load: requests in flight may fail with 503 (Alertmanager retries
them), none is answered 2xx without being stored, and the app recovers without a restart of its
own.

Real processes on a throwaway cluster: gunicorn (2 sync workers, persistent connections with
health checks), a Celery worker and beat. Clients post distinct notifications continuously and
retry 5xx and refused connections as Alertmanager does, while `pg_ctl restart -m fast` cuts every
connection, three times. Afterwards every 2xx answer's delivery is in the database, every alert is
stored exactly once, every incident is collected and analysed, and gunicorn booted no new worker.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests

from tests.faults.support import firing, group, now, record, settle

pytestmark = pytest.mark.faults

CLIENTS = 4
RESTARTS = 3


@dataclass
class Load:
    """Alertmanager-like senders: each notification is posted until it is answered 2xx."""

    url: str
    token: str
    answers: list[tuple[int, int, dict]] = field(default_factory=list)  # (payload, status, body)
    errors: Counter = field(default_factory=Counter)
    payloads: dict[int, dict] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 0

    def take(self) -> tuple[int, dict]:
        with self.lock:
            number = self.next_id
            self.next_id += 1
        starts = now()
        # A new group (an incident) every third notification; the others join group g<n//3>.
        payload = group(f"g{number // 3}", firing(f"Load{number // 3}", starts, pod=f"p-{number}"))
        with self.lock:
            self.payloads[number] = payload
        return number, payload

    def run(self) -> None:
        http = requests.Session()
        http.trust_env = False
        headers = {"Authorization": f"Bearer {self.token}"}
        while not self.stop.is_set():
            number, payload = self.take()
            for _ in range(200):  # retried until answered 2xx, as Alertmanager would
                try:
                    answer = http.post(
                        f"{self.url}/hooks/alertmanager", json=payload, headers=headers, timeout=30
                    )
                except requests.RequestException as exc:
                    with self.lock:
                        self.errors[type(exc).__name__] += 1
                    time.sleep(0.2)
                    continue
                try:
                    body = answer.json()
                except ValueError:
                    body = {"text": answer.text[:200]}
                with self.lock:
                    self.answers.append((number, answer.status_code, body))
                if answer.status_code < 300:
                    break
                time.sleep(0.2)
        http.close()

    def answered(self) -> int:
        with self.lock:
            return sum(1 for _, status, _ in self.answers if status < 300)


def booted_workers(vigil) -> int:
    return (
        next(p for p in vigil.procs if p.name == "gunicorn")
        .tail(10_000_000)
        .count("Booting worker")
    )


def test_postgres_restarts_under_load_lose_nothing(vigil):
    # A round whose worker lost the database after claiming it is the sweep's: after 20s here.
    vigil.env_overrides.update(
        VIGIL_SWEEP_INTERVAL="2",
        VIGIL_SWEEP_GRACE="1",
        VIGIL_COLLECT_DEBOUNCE="2",
        VIGIL_STUCK_COLLECTION_AFTER="20",
    )
    token = vigil.integration_token()
    vigil.start_web(workers=2)
    vigil.start_worker()
    vigil.start_beat()
    booted = booted_workers(vigil)

    load = Load(vigil.web_url, token)
    clients = [threading.Thread(target=load.run, daemon=True) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        for restart in range(RESTARTS):
            floor = load.answered() + 40
            settle(vigil, lambda floor=floor: load.answered() >= floor, "answers before a restart")
            vigil.postgres.restart("fast")
        floor = load.answered() + 40
        settle(vigil, lambda: load.answered() >= floor, "answers after the restarts")
    finally:
        load.stop.set()
        for client in clients:
            client.join(timeout=120)
    assert not any(client.is_alive() for client in clients)

    statuses = Counter(status for _, status, _ in load.answers)
    # Contract: 2xx stored, 503 retried; nothing else (a 500 would mean ingest broke).
    assert set(statuses) <= {200, 202, 503}, statuses
    ok = [(n, s, body) for n, s, body in load.answers if s < 300]
    assert {n for n, _, _ in ok} == set(load.payloads)  # every notification got its 2xx in the end
    stored = {r[0] for r in vigil.rows("SELECT id FROM incidents_webhookdelivery")}
    assert {body["delivery"] for _, _, body in ok} <= stored

    # Deferred ones (202) are ingested by the sweep; then every alert is there, once.
    settle(
        vigil,
        lambda: (
            vigil.value(
                "SELECT count(*) FROM incidents_webhookdelivery WHERE status <> 'processed'"
            )
            == 0
        ),
        "every delivery processed",
    )
    fingerprints = {p["alerts"][0]["fingerprint"] for p in load.payloads.values()}
    rows = vigil.rows("SELECT fingerprint, count(*) FROM incidents_alert GROUP BY 1")
    assert {f for f, _ in rows} == fingerprints
    assert all(count == 1 for _, count in rows)
    unanalysed = (
        "SELECT i.id, i.collection_started_at, i.collection_finished_at FROM incidents_incident i "
        "WHERE NOT EXISTS (SELECT 1 FROM assistant_analysis a WHERE a.incident_id = i.id "
        "AND a.status = 'ready' AND a.created_at >= i.collection_finished_at)"
    )
    try:
        settle(vigil, lambda: not vigil.rows(unanalysed), "every incident analysed")
    except pytest.fail.Exception as exc:
        pytest.fail(f"{exc.msg}\nnot analysed: {vigil.rows(unanalysed)}")
    # Recovered on its own: answering, and no gunicorn worker was replaced.
    assert vigil.http.get(f"{vigil.web_url}/healthz", timeout=10).status_code == 200
    assert booted_workers(vigil) == booted
    assert all(p.alive() for p in vigil.procs)
    record(
        "PostgreSQL restarted under load (pg_ctl restart -m fast, three times)",
        inputs=len(load.payloads),
        lost=0,
        requests=len(load.answers),
        statuses=dict(statuses),
        connection_errors=dict(load.errors),
    )

"""The Celery worker is SIGKILLed in the middle of a collection: what it held is delivered again,
completes once, and nothing is stored twice or lost.

Real processes on a throwaway PostgreSQL and Redis: gunicorn takes a scenario's alerts, worker A
runs the collection against the Kubernetes stand-in, behind a proxy that holds the log reads, so
the kill lands while a collector is waiting on its source. Worker A (its main process and pool,
`kill -9` of the process group: no warm shutdown, no reject, no ack) is gone; worker B starts.

- Redelivery: worker B's Redis `visibility_timeout` is short (5s), so the unacknowledged tasks
  come back to it; the round finishes with each collector's evidence stored once.
- The sweep as backstop: worker B keeps a longer visibility timeout; the sweep releases the
  stuck round (VIGIL_STUCK_COLLECTION_AFTER) and starts a new one, which finishes; then the old
  round's tasks are delivered again late, and must change nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from collectors.registry import COLLECTORS
from replay.kube import KubernetesStandIn
from replay.scenario import load_scenario
from tests.faults.proxy import FaultProxy
from tests.faults.support import now, record, settle

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "04-oom-killed.yaml"


@pytest.fixture
def world(vigil, tmp_path):
    """The scenario's Kubernetes behind a proxy that holds pod log reads; Vigil's default cluster
    points at the proxy (KUBECONFIG), with no Prometheus (that collector fails, once)."""
    scenario = load_scenario(SCENARIO)
    moment = now()
    kube = KubernetesStandIn(
        scenario.kubernetes_objects(moment), scenario.kubernetes_logs(moment)
    ).start()
    proxy = FaultProxy(kube.url, fault="hold", only="/log")
    kubeconfig = kube.kubeconfig()
    kubeconfig["clusters"][0]["cluster"]["server"] = proxy.url
    path = tmp_path / "kubeconfig.json"
    path.write_text(json.dumps(kubeconfig))
    vigil.env_overrides.update(
        KUBECONFIG=str(path),
        VIGIL_COLLECTOR_SOFT_LIMIT="60",  # the held read is the kill's moment, not a timeout
        VIGIL_COLLECTOR_HARD_LIMIT="90",
        VIGIL_COLLECT_REQUEST_TIMEOUT="60",
    )
    token = vigil.integration_token()
    vigil.start_web()
    try:
        yield scenario, moment, proxy, token
    finally:
        proxy.close()
        kube.stop()


def task_ids(log: str, outcome: str) -> dict[str, str]:
    """{task id: task name} of the log's lines `Task <name>[<id>] <outcome>`."""
    return {
        m.group(2): m.group(1)
        for m in re.finditer(r"Task (\S+)\[([0-9a-f-]{36})\] " + outcome, log)
    }


def kill_mid_collection(vigil, world) -> tuple[int, dict[str, str]]:
    """Post the alerts, wait for a collector to be waiting on its source, SIGKILL worker A.

    Returns the incident and the tasks worker A had received but not finished."""
    scenario, moment, proxy, token = world
    worker_a = vigil.start_worker("worker-a")  # the default visibility timeout (an hour)
    answer = vigil.post_hook(scenario.alert_notification(moment, "killed"), token)
    assert answer.status_code == 200, answer.text
    (incident_id,) = answer.json()["incidents"]
    settle(vigil, lambda: proxy.held >= 1, "a collector to wait on a held log read")
    worker_a.kill()
    log = worker_a.tail(1_000_000)
    in_flight = {
        task_id: name
        for task_id, name in task_ids(log, "received").items()
        if task_id not in task_ids(log, "succeeded")
    }
    assert "collectors.tasks.run_collector_task" in in_flight.values(), log[-3000:]
    assert not vigil.value(
        "SELECT collection_finished_at FROM incidents_incident WHERE id = %s", incident_id
    )
    proxy.release()
    return incident_id, in_flight


def unacked(vigil) -> int:
    return vigil.redis.client().hlen("unacked")


def finished_and_analysed(vigil, incident_id: int) -> bool:
    return bool(
        vigil.value(
            """
            SELECT 1 FROM incidents_incident i JOIN assistant_analysis a ON a.incident_id = i.id
            WHERE i.id = %s AND i.collection_finished_at >= i.collection_started_at
              AND a.status = 'ready' AND a.created_at >= i.collection_finished_at
            """,
            incident_id,
        )
    )


def assert_evidence_once_per_collector(vigil, incident_id: int) -> int:
    rows = vigil.rows(
        "SELECT collector, kind, status, reason, entity_kind, entity_namespace, entity_name, title "
        "FROM collectors_evidence WHERE incident_id = %s",
        incident_id,
    )
    assert {r[0] for r in rows} == set(COLLECTORS)
    duplicates = {r for r in rows if rows.count(r) > 1}
    assert duplicates == set()
    killed = [r for r in rows if "did not finish" in (r[3] or "")]
    assert killed == []  # the redelivered collector finished; nobody wrote it off
    # Nothing else failed than what has no source in this world (no Prometheus, so no GPU metrics).
    failed = {r[0] for r in rows if r[2] == "failed"}
    assert failed <= {"prometheus", "gpu"}, rows
    kinds = {(r[0], r[1]) for r in rows}
    assert ("logs", "log_signatures") in kinds and ("kubernetes", "pod_status") in kinds, kinds
    return len(rows)


def timeline_kinds(vigil, incident_id: int) -> list[str]:
    return [
        r[0]
        for r in vigil.rows(
            "SELECT kind FROM incidents_timelineevent WHERE incident_id = %s AND actor = 'vigil' "
            "ORDER BY at, id",
            incident_id,
        )
    ]


def test_a_killed_worker_s_collection_is_delivered_again_and_completes_once(vigil, world):
    incident_id, in_flight = kill_mid_collection(vigil, world)
    worker_b = vigil.start_worker("worker-b", VIGIL_BROKER_VISIBILITY_TIMEOUT="5")
    settle(vigil, lambda: finished_and_analysed(vigil, incident_id), "the round to finish")
    settle(vigil, lambda: unacked(vigil) == 0, "every delivery acknowledged")

    completed_by_b = task_ids(worker_b.tail(1_000_000), "succeeded")
    assert set(in_flight) <= set(completed_by_b), (in_flight, completed_by_b)
    items = assert_evidence_once_per_collector(vigil, incident_id)
    kinds = timeline_kinds(vigil, incident_id)
    assert kinds.count("collection_started") == 1 and kinds.count("collection_finished") == 1
    record(
        "Worker SIGKILLed mid-collection (redelivery)",
        inputs=len(in_flight),
        lost=0,
        redelivered_tasks=len(in_flight),
        evidence_items=items,
    )


def test_the_sweep_restarts_a_killed_round_and_late_redeliveries_change_nothing(vigil, world):
    incident_id, in_flight = kill_mid_collection(vigil, world)
    worker_b = vigil.start_worker("worker-b", VIGIL_BROKER_VISIBILITY_TIMEOUT="20")
    swept = vigil.sweep(VIGIL_STUCK_COLLECTION_AFTER="0")
    assert swept["collections"] == 1
    settle(vigil, lambda: finished_and_analysed(vigil, incident_id), "the new round to finish")
    # The killed round's tasks come back after the visibility timeout, into a finished round.
    settle(
        vigil,
        lambda: set(in_flight) <= set(task_ids(worker_b.tail(1_000_000), "succeeded")),
        "the old round's tasks to be delivered again and complete",
    )
    settle(vigil, lambda: unacked(vigil) == 0, "every delivery acknowledged")

    items = assert_evidence_once_per_collector(vigil, incident_id)
    kinds = timeline_kinds(vigil, incident_id)
    assert kinds.count("collection_started") == 2  # the killed round, the sweep's round
    assert kinds.count("collection_finished") == 1  # only the sweep's round finished
    record(
        "Worker SIGKILLed mid-collection (sweep backstop, late redelivery)",
        inputs=len(in_flight),
        lost=0,
        redelivered_tasks=len(in_flight),
        evidence_items=items,
    )

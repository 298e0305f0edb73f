"""Every shipped scenario, replayed and collected, yields the evidence a human would look for.

The world is real on loopback (the Kubernetes stand-in, a backfilled Prometheus); Vigil is fed
through its HTTP endpoints; the collectors run as one round. Each check names the fact an
on-call engineer would want on the page first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collectors.models import Evidence
from collectors.registry import COLLECTORS
from collectors.tasks import collect_now
from incidents.models import Incident
from replay.scenario import load_scenario
from replay.world import ReplayWorld
from tests.support import require_binary

ROOT = Path(__file__).resolve().parents[2]


def rows(incident_id: int, kind: str, name: str | None = None) -> list[Evidence]:
    found = Evidence.objects.filter(incident_id=incident_id, kind=kind)
    return [
        r for r in found if name is None or r.entity_name == name or r.entity_name.startswith(name)
    ]


def text(evidence: list[Evidence]) -> str:
    return json.dumps([e.data for e in evidence])


def stepped_up(incident_id: int, title_part: str) -> bool:
    return any(
        title_part in r.title
        and any(s["summary"].get("step_direction") == "up" for s in r.data["series"])
        for r in rows(incident_id, "metric")
    )


def bad_deploy(i):
    (history,) = rows(i, "rollout_history", "chat-api")
    assert {rs["revision"]: rs["createdInWindow"] for rs in history.data["replicaSets"]} == {
        12: True,
        11: False,
    }
    assert "TypeError" in text(rows(i, "log_signatures", "chat-api-6f4d9b8c7d"))
    assert "v0.6.4-r42" in text(rows(i, "deploys", "chat-api"))
    assert stepped_up(i, "ChatAPIHighErrorRate")


def kv_cache(i):
    assert stepped_up(i, "KV-cache usage")
    assert stepped_up(i, "vLLM requests waiting")


def gpu_fault(i):
    (health,) = rows(i, "gpu_health", "gpu-node-7")
    xids = [g["xid"]["code"] for g in health.data["gpus"] if g["xid"]]
    assert xids == [79]
    assert "NVRMXidError" in text(rows(i, "k8s_events", "gpu-node-7"))


def oom(i):
    exits = [
        c["lastState"]["terminated"]
        for r in rows(i, "pod_status", "embedder")
        for c in r.data["containers"]
        if c["lastState"].get("terminated")
    ]
    assert {(t["reason"], t["exitCode"]) for t in exits} == {("OOMKilled", 137)}


def crash_loop(i):
    waiting = {
        c["state"].get("waiting", {}).get("reason")
        for r in rows(i, "pod_status")
        for c in r.data["containers"]
    }
    assert "CrashLoopBackOff" in waiting
    logs = rows(i, "log_signatures", "ingest-worker")
    assert any(r.data["previous"] for r in logs) and "KeyError" in text(logs)


def node_failure(i):
    (node,) = rows(i, "node_status", "cpu-node-2")
    assert node.data["ready"] == "Unknown"
    assert any(t["key"] == "node.kubernetes.io/unreachable" for t in node.data["taints"])


def gpu_memory(i):
    assert "CUDA out of memory" in text(rows(i, "log_signatures", "vision-captioner"))


def traffic_surge(i):
    assert stepped_up(i, "vLLM requests waiting")
    assert stepped_up(i, "vLLM generation throughput")


def image_pull(i):
    events = text(rows(i, "k8s_events", "pdf-extractor"))
    assert "ErrImagePull" in events or "ImagePullBackOff" in events
    waiting = {
        c["state"].get("waiting", {}).get("reason")
        for r in rows(i, "pod_status")
        for c in r.data["containers"]
    }
    assert waiting & {"ErrImagePull", "ImagePullBackOff"}


def thermal(i):
    flagged = {
        r.entity_name
        for r in rows(i, "gpu_health")
        if any("thermal" in g["flags"] for g in r.data["gpus"])
    }
    assert flagged == {"gpu-a10-5"}


def rate_limit(i):
    assert "429" in text(rows(i, "log_signatures", "doc-qa"))


def dependency(i):
    assert "FailedScheduling" in text(rows(i, "k8s_events", "cache-redis"))
    assert "redis" in text(rows(i, "log_signatures", "semantic-api")).lower()


def unknown(i):
    assert rows(i, "pod_status", "chat-lite")


EXPECTATIONS = {
    "01-bad-deploy": bad_deploy,
    "02-kv-cache-saturation": kv_cache,
    "03-gpu-hardware-fault": gpu_fault,
    "04-oom-killed": oom,
    "05-crash-loop": crash_loop,
    "06-node-failure": node_failure,
    "07-gpu-memory-exhaustion": gpu_memory,
    "08-traffic-surge": traffic_surge,
    "09-image-pull-failure": image_pull,
    "10-gpu-thermal-throttle": thermal,
    "11-upstream-rate-limit": rate_limit,
    "12-dependency-failure": dependency,
    "13-unknown": unknown,
}


def test_every_shipped_scenario_has_an_expectation():
    assert {p.stem for p in (ROOT / "scenarios").glob("*.yaml")} == set(EXPECTATIONS)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", sorted(EXPECTATIONS))
def test_the_replayed_scenario_yields_the_evidence_a_human_expects(name, live_server, client_as):
    require_binary("prometheus")
    require_binary("promtool")
    with ReplayWorld(load_scenario(ROOT / "scenarios" / f"{name}.yaml")) as world:
        (incident_id,) = world.deliver(live_server.url).incident_ids
        assert collect_now(incident_id) == "finished"

        failed = {
            r.collector: r.reason
            for r in Evidence.objects.filter(incident_id=incident_id, status="failed")
        }
        assert failed == {}
        assert {r.collector for r in Evidence.objects.filter(incident_id=incident_id)} == set(
            COLLECTORS
        )
        EXPECTATIONS[name](incident_id)

        incident = Incident.objects.get(pk=incident_id)
        assert incident.scope["namespaces"] or incident.scope["nodes"]
        assert incident.timeline.filter(kind="collection_finished").exists()
        page = client_as("viewer").get(f"/incidents/{incident_id}/")
        assert page.status_code == 200
        assert b'<svg class="chart"' in page.content and b'class="alert-start"' in page.content


@pytest.mark.django_db(transaction=True)
def test_a_dead_prometheus_fails_its_collectors_and_the_others_still_complete(
    live_server, client_as
):
    require_binary("prometheus")
    require_binary("promtool")
    with ReplayWorld(load_scenario(ROOT / "scenarios/04-oom-killed.yaml")) as world:
        (incident_id,) = world.deliver(live_server.url).incident_ids
        world.prometheus.stop()  # the cluster row still points at it
        assert collect_now(incident_id) == "finished"

        failed = dict(
            Evidence.objects.filter(incident_id=incident_id, status="failed").values_list(
                "collector", "reason"
            )
        )
        assert set(failed) == {"prometheus", "gpu"}
        assert all("unreachable" in reason for reason in failed.values())
        oom(incident_id)  # Kubernetes and logs evidence is all there
        finished = Incident.objects.get(pk=incident_id).timeline.get(kind="collection_finished")
        assert "failed: gpu" in finished.summary or "failed: prometheus" in finished.summary
        page = client_as("viewer").get(f"/incidents/{incident_id}/")
        assert (
            b'id="source-prometheus"' in page.content
            and b"failed: Prometheus unreachable" in page.content
        )

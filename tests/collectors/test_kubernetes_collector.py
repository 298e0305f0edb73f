"""The Kubernetes collector against replayed scenarios: what an engineer expects to see, per incident."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

import pytest

from collectors import kubernetes
from collectors.base import CollectionContext, CollectorError, Entity, Scope, Window
from collectors.scope import resolve_scope
from tests.collectors.conftest import forbidden


def collect(world, **context) -> list:
    scope = resolve_scope(world.alerts, world.cluster, timeout=5)
    drafts = kubernetes.collect(world.context(scope, **context))
    for draft in drafts:  # the runner stores `data` as JSON, tagged with the entity
        json.dumps(draft.data)
        assert draft.title
    return drafts


def of_kind(drafts: list, kind: str) -> dict:
    return {str(d.entity): d.data for d in drafts if d.kind == kind}


def test_bad_deploy_shows_the_new_revision_rolled_out_inside_the_window(open_world):
    drafts = collect(open_world("01-bad-deploy"))
    history = of_kind(drafts, "rollout_history")["Deployment llm/chat-api"]
    assert history["revision"] == 12
    revisions = {r["revision"]: r for r in history["replicaSets"]}
    assert set(revisions) == {11, 12}
    assert revisions[12]["current"] and not revisions[11]["current"]
    assert revisions[12]["images"] == ["registry.acme.internal/ml/chat-api-vllm:v0.6.4-r42"]
    assert revisions[11]["images"] == ["registry.acme.internal/ml/chat-api-vllm:v0.6.3-r41"]
    assert revisions[12]["createdInWindow"] and not revisions[11]["createdInWindow"]
    assert (revisions[12]["replicas"], revisions[11]["replicas"]) == (2, 0)
    [rollout] = history["rolloutsInWindow"]
    assert (rollout["revision"], rollout["previousRevision"]) == (12, 11)
    assert rollout["previousImages"] == ["registry.acme.internal/ml/chat-api-vllm:v0.6.3-r41"]
    assert [r["revision"] for r in history["replicaSets"]] == [12, 11]  # newest first

    events = of_kind(drafts, "k8s_events")["Deployment llm/chat-api"]["events"]
    assert [(e["reason"], e["kind"]) for e in events] == [
        ("ScalingReplicaSet", "Deployment"),  # -14m: the rollout starts
        ("Unhealthy", "Pod"),  # -13m..-9m: readiness during model load
        ("ScalingReplicaSet", "Deployment"),  # -8m: the old ReplicaSet scaled to 0
    ]
    assert events[1]["count"] == 26 and events[1]["first"] < events[1]["last"]

    pods = of_kind(drafts, "pod_status")
    assert set(pods) == {"Pod llm/chat-api-6f4d9b8c7d-4kq2v", "Pod llm/chat-api-6f4d9b8c7d-h7xwp"}
    pod = pods["Pod llm/chat-api-6f4d9b8c7d-4kq2v"]
    assert pod["node"] == "gpu-node-2"
    assert pod["owner"] == {"kind": "ReplicaSet", "name": "chat-api-6f4d9b8c7d"}
    assert pod["workload"] == {"kind": "Deployment", "namespace": "llm", "name": "chat-api"}
    assert pod["containers"][0]["image"].endswith(":v0.6.4-r42")


def test_oom_kill_shows_in_the_last_state_of_the_container(open_world):
    drafts = collect(open_world("04-oom-killed"))
    pod = of_kind(drafts, "pod_status")["Pod rag/embedder-6c8f9b7d5-lq8zn"]
    [container] = pod["containers"]
    terminated = container["lastState"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
    assert terminated["startedAt"] < terminated["finishedAt"]
    assert container["restartCount"] > 0
    assert container["resources"]["limits"]["memory"]
    assert "OOMKilled 137" in next(d.title for d in drafts if d.kind == "pod_status")


def test_crash_loop_shows_the_waiting_reason_and_the_back_off_events(open_world):
    drafts = collect(open_world("05-crash-loop"))
    pods = of_kind(drafts, "pod_status")
    for name in ("ingest-worker-7d9c8b6f5-nq4wz", "ingest-worker-7d9c8b6f5-b8rtc"):
        [container] = pods[f"Pod rag/{name}"]["containers"]
        assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert container["lastState"]["terminated"]["exitCode"] == 1
        assert not container["ready"]
    events = of_kind(drafts, "k8s_events")["Deployment rag/ingest-worker"]["events"]
    back_off = [e for e in events if e["reason"] == "BackOff"]
    assert back_off[0]["count"] == 112 and back_off[0]["type"] == "Warning"
    assert back_off[0]["name"] == "ingest-worker-7d9c8b6f5-nq4wz"


def test_node_failure_shows_the_unknown_node_its_taints_and_its_pods(open_world):
    drafts = collect(open_world("06-node-failure"))
    node = of_kind(drafts, "node_status")["Node cpu-node-2"]
    assert node["ready"] == "Unknown"
    ready = next(c for c in node["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NodeStatusUnknown" and ready["lastTransitionTime"]
    assert {(t["key"], t["effect"]) for t in node["taints"]} == {
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
    }
    assert {p["name"]: p["phase"] for p in node["pods"]} == {
        "checkout-api-5c8d7b9f6-k2x7m": "Running",
        "guardrails-7f6d5c4b8-r9t3v": "Running",
        "query-router-6b7c8d9e5-p4w2n": "Running",
    }
    assert all(p["deleting"] for p in node["pods"])
    node_events = of_kind(drafts, "k8s_events")["Node cpu-node-2"]["events"]
    assert [e["reason"] for e in node_events] == ["NodeNotReady"]
    pod = of_kind(drafts, "pod_status")["Pod llm/guardrails-7f6d5c4b8-r9t3v"]
    assert pod["reason"] == "NodeLost" and pod["deletionTimestamp"]


def test_image_pull_failure_shows_the_pull_errors(open_world):
    drafts = collect(open_world("09-image-pull-failure"))
    events = of_kind(drafts, "k8s_events")["Deployment tools/pdf-extractor"]["events"]
    messages = {e["message"] for e in events if e["type"] == "Warning"}
    assert "Error: ImagePullBackOff" in messages and "Error: ErrImagePull" in messages
    assert any("pull access denied" in m for m in messages)
    waiting = {
        name.split("/")[-1]: data["containers"][0]["state"].get("waiting", {}).get("reason")
        for name, data in of_kind(drafts, "pod_status").items()
    }
    assert waiting["pdf-extractor-78c4f9d6b-qk5vd"] == "ImagePullBackOff"
    assert waiting["pdf-extractor-78c4f9d6b-w9ftx"] == "ErrImagePull"
    history = of_kind(drafts, "rollout_history")["Deployment tools/pdf-extractor"]
    assert history["rolloutsInWindow"][0]["images"] == ["acmeml/pdf-extractor:2.4.0"]


def test_gpu_fault_shows_the_node_of_the_pod_and_its_xid_event(open_world):
    drafts = collect(open_world("03-gpu-hardware-fault"))
    pod = of_kind(drafts, "pod_status")["Pod llm/summarizer-7b5c9d8f4-fq7ln"]
    assert pod["node"] == "gpu-node-7"
    node = of_kind(drafts, "node_status")["Node gpu-node-7"]
    assert node["gpus"]["nvidia.com/gpu"] == {"capacity": "8", "allocatable": "7"}
    assert node["gpuProduct"] == "NVIDIA-A100-SXM4-80GB"
    assert node["kubeletVersion"] == "v1.29.8"
    [xid] = of_kind(drafts, "k8s_events")["Node gpu-node-7"]["events"]
    assert xid["reason"] == "NVRMXidError" and "Xid" in xid["message"] and "79" in xid["message"]


def test_events_outside_the_window_are_left_out(open_world):
    world = open_world("01-bad-deploy")
    late = Window(start=world.now - timedelta(minutes=10), end=world.now, first_alert_at=world.now)
    drafts = collect(world, window=late)
    events = of_kind(drafts, "k8s_events")["Deployment llm/chat-api"]["events"]
    # the scale-up at -14m ended before the window; the readiness failures ran until -9m
    assert [e["reason"] for e in events] == ["Unhealthy", "ScalingReplicaSet"]
    history = of_kind(drafts, "rollout_history")["Deployment llm/chat-api"]
    assert history["rolloutsInWindow"] == []


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_same_event_recorded_twice_is_merged(open_world):
    now = datetime.now(UTC).replace(microsecond=0)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "solo", "namespace": "ml"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        "status": {
            "containerStatuses": [
                {"state": {"running": {"startedAt": rfc3339(now - timedelta(hours=1))}}}
            ]
        },
    }

    def event(name: str, first: int, last: int, count: int) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": "ml"},
            "involvedObject": {"kind": "Pod", "name": "solo", "namespace": "ml"},
            "reason": "Unhealthy",
            "type": "Warning",
            "message": "Liveness probe failed: HTTP probe failed with statuscode: 503",
            "count": count,
            "firstTimestamp": rfc3339(now - timedelta(minutes=first)),
            "lastTimestamp": rfc3339(now - timedelta(minutes=last)),
        }

    world = open_world(objects=[pod, event("solo.a", 30, 20, 4), event("solo.b", 15, 2, 6)])
    scope = Scope(pods=[Entity("Pod", "ml", "solo")])
    drafts = kubernetes.collect(world.context(scope))
    [events] = [d.data["events"] for d in drafts if d.kind == "k8s_events"]
    assert len(events) == 1
    assert events[0]["count"] == 10
    assert events[0]["first"] == rfc3339(now - timedelta(minutes=30))
    assert events[0]["last"] == rfc3339(now - timedelta(minutes=2))


def test_a_pod_gone_since_the_alert_is_noted_and_the_rest_collected(open_world):
    world = open_world("05-crash-loop")
    scope = resolve_scope(world.alerts, world.cluster, timeout=5)
    scope.pods.append(Entity("Pod", "rag", "ingest-worker-7d9c8b6f5-zzzzz"))
    drafts = kubernetes.collect(world.context(scope))
    assert len(of_kind(drafts, "pod_status")) == 2
    [note] = [d for d in drafts if d.kind == "collection_note"]
    assert any("ingest-worker-7d9c8b6f5-zzzzz" in p for p in note.data["problems"])


# --- when Kubernetes cannot be read ------------------------------------------------------------

SCOPE = Scope(
    pods=[Entity("Pod", "llm", "chat-api-6f4d9b8c7d-4kq2v")],
    deployments=[Entity("Deployment", "llm", "chat-api")],
    nodes=[Entity("Node", None, "gpu-node-2")],
)


def test_an_unreachable_api_fails_the_collector_saying_so(open_world, closed_port_cluster):
    world = open_world(objects=[])
    with pytest.raises(CollectorError) as failure:
        kubernetes.collect(world.context(SCOPE, cluster=closed_port_cluster, timeout=2))
    assert "unreachable" in failure.value.reason
    assert failure.value.retryable


def test_an_rbac_refusal_names_the_verb_and_resource(open_world, fake_server):
    server = fake_server(forbidden)
    world = open_world(objects=[])
    with pytest.raises(CollectorError) as failure:
        kubernetes.collect(world.context(SCOPE, cluster=server.cluster(), timeout=2))
    reason = failure.value.reason
    assert "RBAC" in reason and "forbids get pod llm/chat-api-6f4d9b8c7d-4kq2v" in reason
    assert not failure.value.retryable


def test_a_slow_api_times_out_after_one_attempt(open_world, fake_server):
    server = fake_server(forbidden, delay=3)
    world = open_world(objects=[])
    started = time.monotonic()
    with pytest.raises(CollectorError) as failure:
        kubernetes.collect(world.context(SCOPE, cluster=server.cluster(), timeout=0.5))
    assert "timed out" in failure.value.reason
    assert time.monotonic() - started < 2
    assert len(server.paths) == 1


@dataclass(frozen=True)
class RunsOutOfTime(CollectionContext):
    """A context whose deadline passes after `allowed` checks (one check per read)."""

    allowed: int = 0
    checks: list = field(default_factory=list)

    def out_of_time(self) -> bool:
        self.checks.append(None)
        return len(self.checks) > self.allowed


def running_out(ctx: CollectionContext, allowed: int) -> RunsOutOfTime:
    return RunsOutOfTime(**{f.name: getattr(ctx, f.name) for f in fields(ctx)}, allowed=allowed)


def test_the_runners_deadline_stops_reading_and_keeps_what_was_read(open_world):
    world = open_world("01-bad-deploy")
    scope = resolve_scope(world.alerts, world.cluster, timeout=5)
    # 2 pods, the Deployment and its ReplicaSets; then the events would be next
    drafts = kubernetes.collect(running_out(world.context(scope), allowed=4))
    assert [d.kind for d in drafts] == [
        "rollout_history",
        "pod_status",
        "pod_status",
        "collection_note",
    ]
    assert "out of time" in drafts[-1].title
    with pytest.raises(CollectorError, match="out of time") as failure:
        kubernetes.collect(running_out(world.context(scope), allowed=0))
    assert failure.value.retryable

"""The GPU, node and load rules: each family's signature, and the distractors each must resist.

Unit cases are Facts built by hand, small enough to read; the replay cases run every shipped
scenario through the real pipeline (Kubernetes stand-in, backfilled Prometheus, collectors) and
check the rules against each scenario's `expected` answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from assistant.base import AlertItem, Candidate, EvidenceItem, Facts
from assistant.rules import (
    gpu_hardware_fault,
    gpu_thermal_throttle,
    kv_cache_saturation,
    node_failure,
    traffic_surge,
)
from collectors.base import Entity, Scope

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
RULES: dict[str, ModuleType] = {
    rule.CATEGORY: rule
    for rule in (
        gpu_hardware_fault,
        gpu_thermal_throttle,
        node_failure,
        kv_cache_saturation,
        traffic_surge,
    )
}
HIGH = 0.85


# -- building Facts by hand ------------------------------------------------------------------------


def ago(minutes: float) -> str:
    return (NOW - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


class World:
    """A growing list of Evidence rows with ids, and the incident's alerts."""

    def __init__(self, alert_minutes_ago: float = 5) -> None:
        self.rows: list[EvidenceItem] = []
        self.alert_at = NOW - timedelta(minutes=alert_minutes_ago)

    def add(self, kind: str, entity: Entity | None, data: dict[str, Any]) -> int:
        row_id = len(self.rows) + 1
        self.rows.append(EvidenceItem(row_id, "test", kind, "ok", f"{kind} {entity}", entity, data))
        return row_id

    def facts(self) -> Facts:
        alert = AlertItem(
            {"alertname": "Symptom", "namespace": "llm"}, {}, self.alert_at, None, "firing"
        )
        return Facts(1, NOW, [alert], Scope.from_json({}), self.rows)

    # kinds

    def pod(self, name: str, node: str, workload: str = "chat", *, trouble: str = "") -> int:
        container: dict[str, Any] = {"name": "vllm", "ready": not trouble, "restartCount": 0}
        container["state"] = {"waiting": {"reason": trouble}} if trouble else {"running": {}}
        container["lastState"] = {}
        data = {
            "namespace": "llm",
            "pod": name,
            "phase": "Running",
            "node": node,
            "containers": [container],
            "workload": {"kind": "Deployment", "namespace": "llm", "name": workload},
        }
        return self.add("pod_status", Entity("Pod", "llm", name), data)

    def gpu_health(self, node: str, *gpus: dict[str, Any]) -> int:
        filled = [{"gpu": "0", "uuid": f"GPU-{node}", "xid": None, "flags": [], **g} for g in gpus]
        data = {"node": node, "gpus": filled, "flags": [], "start": ago(65), "end": ago(0)}
        data["flags"] = sorted({f for g in filled for f in g["flags"]})
        return self.add("gpu_health", Entity("Node", None, node), data)

    def node(self, name: str, *, ready: str = "True", since: float = 600, **extra: Any) -> int:
        conditions = [{"type": "Ready", "status": ready, "lastTransitionTime": ago(since)}]
        conditions += extra.pop("conditions", [])
        data = {"node": name, "ready": ready, "conditions": conditions, "taints": [], **extra}
        return self.add("node_status", Entity("Node", None, name), data)

    def events(self, entity: Entity, *events: dict[str, Any]) -> int:
        return self.add("k8s_events", entity, {"object": entity.as_dict(), "events": list(events)})

    def metric(self, profile: str, deployment: str, *series: dict[str, Any]) -> int:
        data = {
            "profile": profile,
            "query": f"{profile}(...)",
            "series": [{"labels": s.pop("labels", {}), "summary": s} for s in series],
        }
        return self.add("metric", Entity("Deployment", "llm", deployment), data)

    def replicas(self, deployment: str, count: int) -> int:
        data = {"deployment": deployment, "replicas": count, "rolloutsInWindow": []}
        return self.add("rollout_history", Entity("Deployment", "llm", deployment), data)


def level(
    baseline: float | None, recent: float, *, step: float | None = None, pod: str = ""
) -> dict[str, Any]:
    """A series summary: baseline → recent, stepping `step` minutes ago (up or down)."""
    direction = None if step is None else ("up" if recent > (baseline or 0) else "down")
    return {
        "labels": {"pod": pod} if pod else {},
        "baseline": baseline,
        "recent": recent,
        "last": recent,
        "ratio": recent / baseline if baseline else None,
        "step_at": ago(step) if step is not None else None,
        "step_direction": direction,
    }


def only(candidates: list[Candidate]) -> Candidate:
    assert len(candidates) == 1, candidates
    return candidates[0]


def cites_real_evidence(candidate: Candidate, facts: Facts) -> bool:
    known = {row.id for row in facts.evidence}
    return bool(candidate.evidence_ids) and set(candidate.evidence_ids) <= known


# -- gpu-hardware-fault ----------------------------------------------------------------------------


def xid(code: int, minutes_ago: float) -> dict[str, Any]:
    return {"code": code, "meaning": "…", "first_seen": ago(minutes_ago)}


def test_an_xid_79_on_the_node_of_the_crashing_pod_is_a_gpu_hardware_fault():
    world = World(alert_minutes_ago=5)
    world.pod("chat-a", "gpu-7", trouble="CrashLoopBackOff")
    world.pod("chat-b", "gpu-5")
    world.gpu_health("gpu-7", {"gpu": "3", "xid": xid(79, 20), "flags": ["xid-79"]})
    world.events(
        Entity("Node", None, "gpu-7"),
        {
            "kind": "Node",
            "name": "gpu-7",
            "reason": "NVRMXidError",
            "message": "NVRM: Xid (PCI:0000:c9:00): 79, GPU has fallen off the bus.",
            "first": ago(20),
        },
    )
    facts = world.facts()

    candidate = only(gpu_hardware_fault.evaluate(facts))

    assert candidate.entity == Entity("Node", None, "gpu-7")
    assert candidate.confidence >= HIGH
    assert "GPU 3" in candidate.explanation and "gpu-7" in candidate.explanation
    assert [p.action for p in candidate.proposals] == ["cordon-node", "drain-node"]
    assert all(p.target == candidate.entity for p in candidate.proposals)
    assert candidate.proposals[1].params == {"grace_seconds": 30}
    assert cites_real_evidence(candidate, facts)


def test_a_double_bit_ecc_error_counts_as_a_hardware_fault():
    world = World()
    world.pod("chat-a", "gpu-7", trouble="CrashLoopBackOff")
    world.gpu_health("gpu-7", {"ecc_dbe": 2, "ecc_dbe_increase": 2, "flags": ["ecc-dbe"]})

    candidate = only(gpu_hardware_fault.evaluate(world.facts()))

    assert candidate.confidence >= 0.7 and "double-bit" in candidate.explanation


def test_a_faulty_gpu_on_a_node_hosting_none_of_the_affected_pods_is_weak():
    world = World()
    world.pod("chat-a", "gpu-5", trouble="CrashLoopBackOff")
    world.gpu_health("gpu-9", {"xid": xid(79, 20), "flags": ["xid-79"]})

    candidate = only(gpu_hardware_fault.evaluate(world.facts()))

    assert candidate.entity.name == "gpu-9" and candidate.confidence < 0.4


def test_an_xid_already_there_when_the_window_opened_is_weak():
    world = World()
    world.pod("chat-a", "gpu-7", trouble="CrashLoopBackOff")
    world.gpu_health("gpu-7", {"xid": xid(48, 65), "flags": ["xid-48"]})

    assert only(gpu_hardware_fault.evaluate(world.facts())).confidence < 0.4


def test_single_bit_ecc_and_application_xids_are_not_hardware_faults():
    world = World()
    world.pod("chat-a", "gpu-7", trouble="CrashLoopBackOff")
    world.gpu_health("gpu-7", {"ecc_sbe": 3, "ecc_sbe_increase": 1})
    world.events(
        Entity("Node", None, "gpu-7"),
        {
            "kind": "Node",
            "name": "gpu-7",
            "reason": "NVRMXidError",
            "message": "NVRM: Xid (PCI:0000:c9:00): 13, Graphics Exception",
            "first": ago(10),
        },
    )

    assert gpu_hardware_fault.evaluate(world.facts()) == []


# -- gpu-thermal-throttle --------------------------------------------------------------------------


def hot_gpu(index: str, minutes_ago: float = 30) -> dict[str, Any]:
    return {
        "gpu": index,
        "temperature": {"last": 89, "max": 91},
        "sm_clock": {"last": 1110, "max": 1695},
        "throttle_reasons": ["SwThermalSlowdown"],
        "throttle_reasons_seen": [{"reason": "SwThermalSlowdown", "first_seen": ago(minutes_ago)}],
        "flags": ["thermal"],
    }


def throttled_world(*, slower_here: bool = True) -> World:
    world = World(alert_minutes_ago=20)
    world.pod("sum-a", "a10-5", "summarize")
    world.pod("sum-b", "a10-3", "summarize")
    world.gpu_health("a10-5", hot_gpu("0"))
    world.gpu_health("a10-3", {"temperature": {"last": 69, "max": 70}})
    here = 940.0 if slower_here else 1440.0
    world.metric(
        "vllm_generation_throughput",
        "summarize",
        level(1440, here, step=25, pod="sum-a"),
        level(1450, 1450, pod="sum-b"),
    )
    return world


def test_thermal_slowdown_on_the_node_whose_pods_are_slower_is_a_thermal_throttle():
    facts = throttled_world().facts()

    candidate = only(gpu_thermal_throttle.evaluate(facts))

    assert candidate.entity == Entity("Node", None, "a10-5")
    assert candidate.confidence >= HIGH
    assert candidate.proposals[0].action == "cordon-node"
    assert candidate.proposals[0].target == candidate.entity
    assert cites_real_evidence(candidate, facts)


def test_a_throttled_gpu_whose_pods_are_not_measured_slower_is_only_suggestive():
    assert (
        0.4
        <= only(
            gpu_thermal_throttle.evaluate(throttled_world(slower_here=False).facts())
        ).confidence
        < HIGH
    )


def test_a_warm_unthrottled_or_power_capped_gpu_is_not_a_thermal_throttle():
    world = World()
    world.pod("chat-a", "gpu-12")
    world.gpu_health(
        "gpu-12",
        {"gpu": "2", "temperature": {"last": 78, "max": 79}, "throttle_reasons": []},
        {"gpu": "3", "temperature": {"last": 70, "max": 72}, "throttle_reasons": ["SwPowerCap"]},
    )

    assert gpu_thermal_throttle.evaluate(world.facts()) == []


def test_a_throttled_node_hosting_no_pod_of_the_incident_is_weak():
    world = World()
    world.pod("chat-a", "gpu-1")
    world.gpu_health("gpu-9", hot_gpu("0"))

    assert only(gpu_thermal_throttle.evaluate(world.facts())).confidence < 0.4


# -- node-failure ----------------------------------------------------------------------------------


def test_a_not_ready_unreachable_node_whose_pods_all_fail_is_a_node_failure():
    world = World(alert_minutes_ago=12)
    world.node(
        "cpu-2",
        ready="Unknown",
        since=20,
        taints=[
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": ago(20)}
        ],
    )
    world.pod("api-a", "cpu-2", "api", trouble="ContainerStatusUnknown")
    world.events(
        Entity("Node", None, "cpu-2"),
        {
            "kind": "Node",
            "name": "cpu-2",
            "reason": "NodeNotReady",
            "message": "…",
            "first": ago(20),
        },
    )
    facts = world.facts()

    candidate = only(node_failure.evaluate(facts))

    assert candidate.entity == Entity("Node", None, "cpu-2")
    assert candidate.confidence >= HIGH
    assert [p.action for p in candidate.proposals] == ["cordon-node", "drain-node"]
    assert candidate.proposals[0].target == candidate.entity
    assert cites_real_evidence(candidate, facts)


def test_a_ready_node_whose_memory_pressure_has_cleared_is_fine():
    world = World()
    world.node(
        "cpu-4",
        conditions=[{"type": "MemoryPressure", "status": "False", "lastTransitionTime": ago(16)}],
    )
    world.pod("redis-a", "cpu-4", "redis", trouble="Evicted")
    world.events(
        Entity("Node", None, "cpu-4"),
        {
            "kind": "Node",
            "name": "cpu-4",
            "reason": "EvictionThresholdMet",
            "message": "…",
            "first": ago(21),
        },
    )

    assert node_failure.evaluate(world.facts()) == []


def test_a_not_ready_node_without_affected_pods_is_weak():
    world = World()
    world.node("cpu-9", ready="False", since=30)
    world.pod("api-a", "cpu-1", "api", trouble="CrashLoopBackOff")

    assert only(node_failure.evaluate(world.facts())).confidence < 0.4


def test_a_node_that_failed_after_the_symptom_began_is_not_confident():
    world = World(alert_minutes_ago=30)
    world.node("cpu-2", ready="Unknown", since=5)
    world.pod("api-a", "cpu-2", "api", trouble="ContainerStatusUnknown")

    assert only(node_failure.evaluate(world.facts())).confidence < HIGH


# -- kv-cache-saturation and traffic-surge ---------------------------------------------------------


def vllm_world(
    *,
    kv: tuple[float, float],
    throughput: tuple[float, float],
    running: tuple[float, float],
    waiting: tuple[float, float] = (0, 55),
    preemptions: tuple[float, float] = (0, 0.6),
    replicas: int = 2,
    request_rate: tuple[float, float] | None = None,
) -> World:
    """A vLLM Deployment `chat` of `replicas` pods, each series given as (baseline, recent)."""
    world = World(alert_minutes_ago=11)
    world.replicas("chat", replicas)
    pods = [f"chat-{i}" for i in range(replicas)]
    for i, pod in enumerate(pods):
        world.pod(pod, f"gpu-{i}")

    def each(base: float, recent: float, step: float) -> list[dict[str, Any]]:
        stepped = None if base == recent else step
        return [level(base, recent, step=stepped, pod=pod) for pod in pods]

    world.metric("vllm_kv_cache_usage", "chat", *each(*kv, step=23))
    world.metric("vllm_requests_waiting", "chat", *each(*waiting, step=18))
    world.metric("vllm_requests_running", "chat", *each(*running, step=24))
    world.metric("vllm_preemptions", "chat", *each(*preemptions, step=14))
    world.metric("vllm_ttft_p95", "chat", level(1.4, 9.9, step=18, pod=pods[0]))
    world.metric(
        "vllm_generation_throughput",
        "chat",
        level(*throughput, step=None if throughput[0] == throughput[1] else 24, pod=pods[0]),
    )
    if request_rate:
        world.metric("http_request_rate", "chat", level(*request_rate, step=25, pod=pods[0]))
    return world


def kv_saturated(**overrides: Any) -> World:
    settings = {"kv": (0.52, 0.99), "throughput": (1550, 1550), "running": (41, 62)}
    return vllm_world(**{**settings, **overrides})


def surging(**overrides: Any) -> World:
    settings = {
        "kv": (0.19, 0.55),
        "throughput": (413, 1224),
        "running": (15, 48),
        "preemptions": (0, 0),
        "replicas": 3,
    }
    return vllm_world(**{**settings, **overrides})


def test_a_full_kv_cache_with_a_queue_preemptions_and_flat_load_is_kv_cache_saturation():
    facts = kv_saturated().facts()

    candidate = only(kv_cache_saturation.evaluate(facts))

    assert candidate.entity == Entity("Deployment", "llm", "chat")
    assert candidate.confidence >= HIGH
    (proposal,) = candidate.proposals
    assert (proposal.action, proposal.target) == ("scale-deployment", candidate.entity)
    # 2 replicas hold 124 running requests while 110 wait: (124 + 110) / 124 = 1.89 → 4
    assert proposal.params == {"replicas": 4}
    assert "2 replicas" in proposal.rationale
    assert cites_real_evidence(candidate, facts)
    assert traffic_surge.evaluate(facts) == []


def test_kv_cache_replicas_follow_the_evidence_not_a_constant():
    candidate = only(kv_cache_saturation.evaluate(kv_saturated(replicas=3).facts()))

    # 3 pods × 62 running, 3 × 55 waiting: 351 / 186 = 1.89 → ceil(3 × 1.89) = 6
    assert candidate.proposals[0].params == {"replicas": 6}


def test_a_kv_cache_that_touched_high_once_without_queueing_is_not_saturation():
    world = vllm_world(
        kv=(0.38, 0.37), throughput=(900, 900), running=(13, 13), waiting=(0, 0), preemptions=(0, 0)
    )
    for row in world.rows:
        if row.data.get("profile") == "vllm_kv_cache_usage":
            for series in row.data["series"]:
                series["summary"]["max"] = 0.8

    assert kv_cache_saturation.evaluate(world.facts()) == []


def test_a_full_kv_cache_without_anybody_waiting_is_only_weak():
    world = kv_saturated(waiting=(0, 0), preemptions=(0, 0))

    assert only(kv_cache_saturation.evaluate(world.facts())).confidence < 0.5


def test_a_full_kv_cache_under_tripled_request_rate_is_left_to_traffic_surge():
    facts = kv_saturated(request_rate=(4.0, 12.0)).facts()

    assert only(kv_cache_saturation.evaluate(facts)).confidence <= 0.5
    assert only(traffic_surge.evaluate(facts)).confidence >= HIGH


def test_a_tripled_request_rate_before_the_queue_is_a_traffic_surge():
    facts = surging(request_rate=(4.0, 12.0)).facts()

    candidate = only(traffic_surge.evaluate(facts))

    assert candidate.entity == Entity("Deployment", "llm", "chat")
    assert candidate.confidence >= HIGH
    (proposal,) = candidate.proposals
    assert (proposal.action, proposal.target) == ("scale-deployment", candidate.entity)
    assert proposal.params == {"replicas": 9}  # 3 replicas × 3.0
    assert cites_real_evidence(candidate, facts)
    assert kv_cache_saturation.evaluate(facts) == []  # 55% is not full


def test_served_tokens_stand_in_for_a_missing_request_rate():
    candidate = only(traffic_surge.evaluate(surging().facts()))

    assert candidate.confidence >= HIGH
    assert "generation throughput" in candidate.explanation
    assert candidate.proposals[0].params == {"replicas": 9}  # ceil(3 × 1224 / 413)


def test_a_load_within_normal_is_not_a_traffic_surge():
    world = surging(throughput=(413, 520), running=(15, 19), request_rate=(4.0, 5.2))

    assert traffic_surge.evaluate(world.facts()) == []


def test_more_load_while_the_pods_crash_is_not_a_traffic_surge():
    world = surging(request_rate=(4.0, 12.0))
    world.pod("chat-9", "gpu-9", trouble="CrashLoopBackOff")

    assert only(traffic_surge.evaluate(world.facts())).confidence < 0.4


def test_more_load_served_without_queue_or_latency_is_weak():
    world = surging(waiting=(0, 0))
    for row in world.rows:
        if row.data.get("profile") == "vllm_ttft_p95":
            row.data["series"][0]["summary"].update(
                recent=1.4, ratio=1.0, step_at=None, step_direction=None
            )

    assert only(traffic_surge.evaluate(world.facts())).confidence <= 0.4


# -- every shipped scenario, replayed --------------------------------------------------------------


SCENARIOS = sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))


def expected_of(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "scenarios" / f"{name}.yaml").read_text())["expected"]


def replayed_facts(name: str, live_server_url: str) -> Facts:
    from assistant.facts import facts_for
    from collectors.tasks import collect_now
    from incidents.models import Incident
    from replay.scenario import load_scenario
    from replay.world import ReplayWorld

    with ReplayWorld(load_scenario(ROOT / "scenarios" / f"{name}.yaml")) as world:
        (incident_id,) = world.deliver(live_server_url).incident_ids
        assert collect_now(incident_id) == "finished"
        return facts_for(Incident.objects.get(pk=incident_id))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", SCENARIOS)
def test_the_rules_agree_with_each_replayed_scenario(name, live_server):
    from tests.support import require_binary

    require_binary("prometheus")
    require_binary("promtool")
    facts = replayed_facts(name, live_server.url)
    expected = expected_of(name)
    category = expected["root_cause"]["category"]
    entity = Entity.from_dict(expected["root_cause"]["entity"])

    produced = {family: rule.evaluate(facts) for family, rule in RULES.items()}

    for candidates in produced.values():
        assert all(cites_real_evidence(c, facts) for c in candidates)
        assert all(c.explanation for c in candidates)
    if category in RULES:
        right = [c for c in produced[category] if c.entity == entity]
        assert right, produced[category]
        best = max(right, key=lambda c: c.confidence)
        # Blind-written scenarios land below the hand-tuned HIGH; the right answer must still be
        # clearly supported and outrank every wrong candidate.
        assert best.confidence >= 0.5, best.explanation
        first = best.proposals[0]
        remediation = expected["remediation"]
        assert first.action == remediation["action"]
        assert first.target == Entity.from_dict(remediation["target"])
    wrong = [
        c
        for family, candidates in produced.items()
        for c in candidates
        if not (family == category and c.entity == entity)
    ]
    ceiling = best.confidence if category in RULES else 0.5
    assert all(c.confidence < min(ceiling, 0.6) for c in wrong), [
        (c.category, str(c.entity), c.confidence) for c in wrong
    ]

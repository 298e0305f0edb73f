"""traffic-surge: more requests than the replicas can serve, with nothing broken on their side.

The signature is the offered load stepping far above its baseline (2× or more) before the
queue and the latency rose, while the serving side is healthy: no crashing or unready pods, no
fatal logs, no rollout, no flagged GPU under its pods. The request rate is the direct measure;
without one, the tokens served per second stand in (they rise with the load until the engine
saturates, so they understate a surge, never invent one), and running requests last (weaker:
they also rise when requests get longer). A load within normal, or one that rose while the pods
were failing, is not a surge.
"""

from __future__ import annotations

from ..base import Candidate, Facts, Proposal
from .infra_signals import (
    Demand,
    Load,
    current_replicas,
    hhmm,
    ids,
    loads,
    node_rows,
    pod_views,
    precedes,
    scaled,
    serving_faults,
    total,
)

CATEGORY = "traffic-surge"

SURGE = 2.0
"""Offered load this many times its baseline is far above normal."""
ELEVATED = 1.5
"""Below this the load is within normal variation: no candidate at all."""
GPU_FAULT_FLAGS = frozenset(
    {"thermal", "hw-slowdown", "power-brake", "ecc-dbe", "row-remap-failure"}
)


def evaluate(facts: Facts) -> list[Candidate]:
    candidates = []
    for load in loads(facts):
        demand = load.demand()
        if demand is not None and demand.ratio >= ELEVATED:
            candidates.append(_candidate(facts, load, demand))
    return candidates


def _gpu_faults(facts: Facts, load: Load) -> list[tuple[int, str]]:
    """Flagged GPUs on the nodes of this Deployment's pods: a slow or broken server, not traffic."""
    nodes = {p.node for p in pod_views(facts) if p.workload == load.deployment and p.node}
    found = []
    for node, row in node_rows(facts, "gpu_health").items():
        flags = set(row.data.get("flags") or [])
        if node in nodes and (flags & GPU_FAULT_FLAGS or any(f.startswith("xid-") for f in flags)):
            found.append((row.id, f"GPU flags on {node}: {', '.join(sorted(flags))}"))
    return found


def _candidate(facts: Facts, load: Load, demand: Demand) -> Candidate:
    queueing = load.rising("vllm_requests_waiting") and bool(
        total(load.of("vllm_requests_waiting"), "recent")
    )
    latency = load.latency_ratio()
    slower = bool(latency and latency[0] >= 1.5)
    faults = serving_faults(facts, load.deployment) + _gpu_faults(facts, load)
    symptom = load.symptom_at() or facts.first_alert_at
    before = precedes(demand.step_at, min(symptom, facts.first_alert_at))
    return Candidate(
        category=CATEGORY,
        entity=load.deployment,
        confidence=_confidence(demand, queueing, slower, faults, before),
        evidence_ids=ids(
            demand.evidence_ids,
            load.ids_of("vllm_requests_waiting") if queueing else [],
            load.ids_of("vllm_ttft_p95", "vllm_e2e_latency_mean", "http_latency_p95")
            if slower
            else [],
            [i for i, _ in faults],
        ),
        explanation=_explanation(facts, load, demand, queueing, latency, faults),
        proposals=[_scale(facts, load, demand)],
    )


def _confidence(
    demand: Demand,
    queueing: bool,
    slower: bool,
    faults: list[tuple[int, str]],
    before: bool | None,
) -> float:
    if demand.ratio >= SURGE:
        score = 0.6 if demand.explicit else 0.55
        if demand.source == "requests running":
            score = 0.4  # running requests also rise when requests merely get longer
    else:
        score = 0.3
    score += 0.15 if queueing else 0
    score += 0.05 if slower else 0
    if before:
        score += 0.08
    elif before is False:
        score -= 0.15
    if not faults:
        score += 0.05
    if not (queueing or slower):
        score = min(score, 0.4)  # more load, but served without harm
    if faults:
        score = min(score, 0.3)  # the serving side is broken: more replicas would not help
    return round(min(score, 0.95), 2)


def _explanation(
    facts: Facts,
    load: Load,
    demand: Demand,
    queueing: bool,
    latency: tuple[float, str] | None,
    faults: list[tuple[int, str]],
) -> str:
    name = f"Deployment {load.deployment.namespace}/{load.deployment.name}"
    proxy = "" if demand.explicit else " (a proxy for the request rate)"
    parts = [
        f"The {demand.source}{proxy} of {name} is ×{demand.ratio:.2f} its baseline"
        + (f", stepping up at {hhmm(demand.step_at)}" if demand.step_at else "")
        + "."
    ]
    if queueing:
        waiting = total(load.of("vllm_requests_waiting"), "recent")
        parts.append(f"Requests queue ({waiting:g} waiting).")
    if latency and latency[0] >= 1.5:
        parts.append(
            f"{latency[1].replace('_', ' ').capitalize()} is ×{latency[0]:.1f} its baseline."
        )
    if faults:
        parts.append(
            "But the serving side shows faults: " + "; ".join(w for _, w in faults[:3]) + "."
        )
    else:
        parts.append("Its pods are healthy: no crashes, no fatal logs, no rollout, no flagged GPU.")
    parts.append(f"First alert at {hhmm(facts.first_alert_at)}.")
    return " ".join(parts)


def _scale(facts: Facts, load: Load, demand: Demand) -> Proposal:
    """Replicas in proportion to the load: N × (recent / baseline)."""
    replicas = current_replicas(facts, load.deployment)
    if replicas.count is None:
        return Proposal(
            action="scale-deployment",
            target=load.deployment,
            params={},
            rationale=f"Add replicas: the {demand.source} is ×{demand.ratio:.2f} its baseline.",
        )
    wanted = scaled(replicas.count, demand.ratio)
    return Proposal(
        action="scale-deployment",
        target=load.deployment,
        params={"replicas": wanted},
        rationale=(
            f"{replicas.count} replicas (from {replicas.source}) served the baseline load; the "
            f"{demand.source} is ×{demand.ratio:.2f} that, so {wanted} replicas carry it at the "
            "same load per replica."
        ),
    )

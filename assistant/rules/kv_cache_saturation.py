"""kv-cache-saturation: vLLM's KV cache is full, so requests queue and sequences are preempted.

When the cache holds no more blocks, the scheduler stops admitting requests (they wait), evicts
running sequences to recompute them later (preemptions) and time to first token climbs, while
the tokens served per second stay flat: the engine is busy, just out of room. The same picture
with the request rate far above its baseline is a traffic surge instead (the cache filled
because more requests came, and more requests is the cause); the rule leaves that to
traffic_surge by capping itself. A cache that is high but not full, or full without anybody
waiting, is not a saturation.
"""

from __future__ import annotations

from datetime import datetime

from ..base import Candidate, Facts, Proposal
from .infra_signals import (
    Demand,
    Load,
    current_replicas,
    first_step_up,
    hhmm,
    ids,
    loads,
    precedes,
    scaled,
    serving_faults,
    total,
)

CATEGORY = "kv-cache-saturation"

FULL = 0.9
"""KV-cache usage (0..1) from which vLLM starts to queue and preempt."""
HIGH = 0.8
"""High enough to mention, not enough to saturate."""
SURGE = 2.0
"""Demand this many times its baseline is a traffic surge, not a cache that ran out of room."""
PREEMPTION_LOG = "not enough kv cache space"


def evaluate(facts: Facts) -> list[Candidate]:
    candidates = []
    for load in loads(facts):
        usage = _usage(load)
        if usage is not None and usage >= HIGH:
            candidates.append(_candidate(facts, load, usage))
    return candidates


def _usage(load: Load) -> float | None:
    """The fullest pod's cache now (recent median or last sample, whichever is higher)."""
    values = [
        v
        for s in load.of("vllm_kv_cache_usage")
        for v in (s.value("recent"), s.value("last"))
        if v is not None
    ]
    return max(values) if values else None


def _preemption_logs(facts: Facts, load: Load) -> list[int]:
    """log_signatures rows of this Deployment's pods that report a KV-cache preemption."""
    prefix = f"{load.deployment.name}-"
    return [
        row.id
        for row in facts.of_kind("log_signatures")
        if row.data.get("namespace") == load.deployment.namespace
        and str(row.data.get("pod") or "").startswith(prefix)
        and any(
            PREEMPTION_LOG in (s.get("signature") or "").lower()
            for s in row.data.get("signatures") or []
        )
    ]


def _candidate(facts: Facts, load: Load, usage: float) -> Candidate:
    waiting = load.rising("vllm_requests_waiting") and bool(
        total(load.of("vllm_requests_waiting"), "recent")
    )
    preempt_logs = _preemption_logs(facts, load)
    preempting = load.rising("vllm_preemptions") or bool(preempt_logs)
    latency = load.latency_ratio()
    demand = load.demand()
    faults = serving_faults(facts, load.deployment)
    filled_at = first_step_up(load.of("vllm_kv_cache_usage"))
    # The queue is what a full cache causes; latency may rise earlier for other reasons (longer
    # prompts take longer to prefill), so it is not the clock the cache must beat.
    queued_at = first_step_up(load.of("vllm_requests_waiting"))
    before = precedes(filled_at, min(queued_at or facts.first_alert_at, facts.first_alert_at))
    confidence = _confidence(usage, waiting, preempting, latency, demand, bool(faults), before)
    return Candidate(
        category=CATEGORY,
        entity=load.deployment,
        confidence=confidence,
        evidence_ids=ids(
            load.ids_of("vllm_kv_cache_usage", "vllm_requests_waiting", "vllm_preemptions"),
            load.ids_of("vllm_ttft_p95", "vllm_e2e_latency_mean") if latency else [],
            demand.evidence_ids if demand else [],
            preempt_logs,
            [i for i, _ in faults],
        ),
        explanation=_explanation(
            facts, load, usage, waiting, preempting, latency, demand, faults, filled_at
        ),
        proposals=[_scale(facts, load)],
    )


def _confidence(
    usage: float,
    waiting: bool,
    preempting: bool,
    latency: tuple[float, str] | None,
    demand: Demand | None,
    faulty: bool,
    before: bool | None,
) -> float:
    """Full cache, then its consequences (queue, preemptions, latency), then what else explains it."""
    score = 0.52 if usage >= FULL else 0.3
    score += 0.15 if waiting else 0
    score += 0.1 if preempting else 0
    score += 0.05 if latency and latency[0] >= 1.5 else 0
    if demand and demand.ratio < 1.5:
        score += 0.05  # the load offered is flat: the requests got heavier, not more
    elif demand and demand.ratio < SURGE:
        score -= 0.1
    if before:
        score += 0.05
    elif before is False:
        score -= 0.15
    if not (waiting or preempting):
        score = min(score, 0.45)  # full but nobody is held up
    if demand and demand.ratio >= SURGE:
        score = min(score, 0.5)  # more requests, not heavier ones: a traffic surge
    if faulty:
        score = min(score, 0.4)  # pods crashing or a rollout: the cache is not the story
    return round(min(score, 0.93), 2)


def _explanation(
    facts: Facts,
    load: Load,
    usage: float,
    waiting: bool,
    preempting: bool,
    latency: tuple[float, str] | None,
    demand: Demand | None,
    faults: list[tuple[int, str]],
    filled_at: datetime | None,
) -> str:
    name = f"Deployment {load.deployment.namespace}/{load.deployment.name}"
    parts = [
        f"The vLLM KV cache of {name} is {usage:.0%} full"
        + (f", since it stepped up at {hhmm(filled_at)}" if filled_at else "")
        + "."
    ]
    consequences = []
    if waiting:
        waiting_now = total(load.of("vllm_requests_waiting"), "recent")
        consequences.append(f"{waiting_now:g} requests wait" if waiting_now else "requests wait")
    if preempting:
        consequences.append("sequences are preempted")
    if latency and latency[0] >= 1.5:
        consequences.append(f"{latency[1].replace('_', ' ')} is ×{latency[0]:.1f} its baseline")
    if consequences:
        parts.append("Meanwhile " + ", ".join(consequences) + ".")
    if demand:
        parts.append(f"The {demand.source} is ×{demand.ratio:.2f} its baseline.")
    if faults:
        parts.append(
            "But the serving side shows faults: " + "; ".join(w for _, w in faults[:3]) + "."
        )
    parts.append(f"First alert at {hhmm(facts.first_alert_at)}.")
    return " ".join(parts)


def _scale(facts: Facts, load: Load) -> Proposal:
    """More replicas in proportion to the demand the cache cannot hold (running + waiting)."""
    replicas = current_replicas(facts, load.deployment)
    factor, why = _load_factor(load)
    if replicas.count is None:
        return Proposal(
            action="scale-deployment",
            target=load.deployment,
            params={},
            rationale=f"Add replicas ({why}); the current replica count is not in the evidence.",
        )
    wanted = scaled(replicas.count, factor)
    return Proposal(
        action="scale-deployment",
        target=load.deployment,
        params={"replicas": wanted},
        rationale=(
            f"{replicas.count} replicas (from {replicas.source}) hold about 1/{factor:.2f} of the "
            f"requests offered ({why}); {wanted} replicas give every request KV-cache room."
        ),
    )


def _load_factor(load: Load) -> tuple[float, str]:
    running = total(load.of("vllm_requests_running"), "recent")
    waiting = total(load.of("vllm_requests_waiting"), "recent") or 0.0
    if running:
        return (running + waiting) / running, f"{running:g} running and {waiting:g} waiting"
    usage_ratio = max(
        (s.value("ratio") or 1.0 for s in load.of("vllm_kv_cache_usage")), default=1.0
    )
    return max(usage_ratio, 1.25), f"KV-cache usage ×{usage_ratio:.2f} its baseline"

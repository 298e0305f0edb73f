"""gpu-thermal-throttle: one node's GPUs run hot and slow down, and so do the pods on them.

A throttled GPU does not fail, it is slower: utilisation stays near 100% while the clocks drop,
so the workload's tail latency rises and its tokens per second fall on that node only. The
signature is a clock-event reason that means heat or a hardware slowdown (SW/HW thermal,
HW slowdown, power brake; reference §3) on the GPUs of one node. Power capping alone
(SwPowerCap) and a warm GPU without any such reason are normal under load and give nothing.
The rule is confident when the throttled node hosts pods of the incident and those pods do
measurably worse than the same workload's pods on other nodes, with the throttling first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from statistics import mean

from collectors.base import Entity

from ..base import Candidate, EvidenceItem, Facts, Proposal
from .infra_signals import (
    PodView,
    Series,
    cordon_then_drain,
    earliest,
    grace_seconds,
    hhmm,
    ids,
    node_rows,
    parse_time,
    pod_views,
    pods_on,
    precedes,
    profile_series,
)

CATEGORY = "gpu-thermal-throttle"

SLOWDOWN_FLAGS = frozenset({"thermal", "hw-slowdown", "power-brake"})
HOT_CELSIUS = 85.0
"""Data-centre GPUs start to slow down in the high 80s; above this a thermal reason is expected."""

CLOCK_DROP = 0.85
"""SM clock below this share of its maximum in the window counts as pulled down."""

WORSE = 0.85
"""Pods on the node do worse when their throughput ratio is below this share of their peers'."""

# (profile, True when higher is better): per-pod performance the comparison reads.
PERFORMANCE_PROFILES = (
    ("vllm_generation_throughput", True),
    ("vllm_e2e_latency_mean", False),
    ("vllm_ttft_p95", False),
    ("http_latency_p95", False),
)


@dataclass
class Throttle:
    node: str
    evidence_id: int
    gpus: list[str] = field(default_factory=list)
    reasons: set[str] = field(default_factory=set)
    hottest: float | None = None
    clock_drop: str = ""
    since: list[datetime] = field(default_factory=list)

    @property
    def first_seen(self) -> datetime | None:
        return earliest(self.since)


@dataclass
class Comparison:
    """How the pods on the node fare against the same workload elsewhere."""

    worse_than_peers: list[str] = field(default_factory=list)
    worse_than_before: list[str] = field(default_factory=list)
    evidence_ids: list[int] = field(default_factory=list)


def evaluate(facts: Facts) -> list[Candidate]:
    pods = pod_views(facts)
    candidates = []
    for node, row in node_rows(facts, "gpu_health").items():
        throttle = _throttle(node, row)
        if throttle is not None:
            candidates.append(_candidate(facts, throttle, pods))
    return candidates


def _throttle(node: str, row: EvidenceItem) -> Throttle | None:
    throttle = Throttle(node, row.id)
    for gpu in row.data.get("gpus") or []:
        flags = SLOWDOWN_FLAGS & set(gpu.get("flags") or [])
        if not flags:
            continue
        throttle.gpus.append(f"GPU {gpu.get('gpu')}")
        throttle.reasons |= set(gpu.get("throttle_reasons") or []) | {
            item.get("reason") for item in gpu.get("throttle_reasons_seen") or []
        }
        temperature = (gpu.get("temperature") or {}).get("max")
        if isinstance(temperature, int | float):
            throttle.hottest = max(throttle.hottest or temperature, temperature)
        clock = gpu.get("sm_clock") or {}
        if clock.get("last") and clock.get("max") and clock["last"] < CLOCK_DROP * clock["max"]:
            throttle.clock_drop = f"SM clock down from {clock['max']} to {clock['last']} MHz"
        throttle.since += [
            t
            for item in gpu.get("throttle_reasons_seen") or []
            if (t := parse_time(item.get("first_seen")))
        ]
    throttle.reasons.discard(None)
    return throttle if throttle.gpus else None


def _compare(facts: Facts, here: list[PodView], elsewhere: list[PodView]) -> Comparison:
    """Per-pod performance ratios (recent / baseline) on the node against the other nodes."""
    result = Comparison()
    here_names = {p.name for p in here}
    there_names = {p.name for p in elsewhere}
    for profile, higher_is_better in PERFORMANCE_PROFILES:
        series = profile_series(facts, profile)
        mine = _ratios(series, here_names)
        theirs = _ratios(series, there_names)
        if not mine:
            continue
        title = profile.replace("_", " ")
        ours = mean(mine.values())
        ids_used = [
            s.evidence_id for s in series if s.labels.get("pod") in here_names | there_names
        ]
        if theirs:
            peers = mean(theirs.values())
            worse = ours < WORSE * peers if higher_is_better else ours * WORSE > peers
            if worse:
                result.worse_than_peers.append(
                    f"{title} ×{ours:.2f} here against ×{peers:.2f} elsewhere"
                )
                result.evidence_ids += ids_used
        elif (ours < WORSE) if higher_is_better else (ours * WORSE > 1):
            result.worse_than_before.append(f"{title} ×{ours:.2f} of its baseline")
            result.evidence_ids += ids_used
    return result


def _ratios(series: list[Series], pods: set[str]) -> dict[str, float]:
    return {
        s.labels["pod"]: ratio
        for s in series
        if s.labels.get("pod") in pods and (ratio := s.value("ratio")) is not None
    }


def _candidate(facts: Facts, throttle: Throttle, pods: list[PodView]) -> Candidate:
    here = pods_on(pods, throttle.node)
    workloads = {p.workload for p in here if p.workload}
    elsewhere = [p for p in pods if p.node != throttle.node and p.workload in workloads]
    comparison = _compare(facts, here, elsewhere)
    before = precedes(throttle.first_seen, facts.first_alert_at)
    node = Entity("Node", None, throttle.node)
    return Candidate(
        category=CATEGORY,
        entity=node,
        confidence=_confidence(throttle, here, comparison, before),
        evidence_ids=ids(
            [throttle.evidence_id], [p.evidence_id for p in here], comparison.evidence_ids
        ),
        explanation=_explanation(facts, throttle, here, comparison, before),
        proposals=_proposals(node, grace_seconds(here)),
    )


def _confidence(
    throttle: Throttle, here: list[PodView], comparison: Comparison, before: bool | None
) -> float:
    if not here:
        return 0.2  # throttled, but nothing of this incident runs there
    score = 0.55
    if throttle.hottest is not None and throttle.hottest >= HOT_CELSIUS:
        score += 0.1
    if throttle.clock_drop:
        score += 0.05
    if comparison.worse_than_peers:
        score += 0.15
    elif comparison.worse_than_before:
        score += 0.05
    if before:
        score += 0.05
    elif before is False:
        score -= 0.15
    if not (comparison.worse_than_peers or comparison.worse_than_before):
        score = min(score, 0.6)  # a throttled GPU that nobody measured as slower
    return round(min(score, 0.93), 2)


def _explanation(
    facts: Facts,
    throttle: Throttle,
    here: list[PodView],
    comparison: Comparison,
    before: bool | None,
) -> str:
    parts = [
        f"Node {throttle.node}: {', '.join(throttle.gpus)} report the clock-event reason(s) "
        f"{', '.join(sorted(throttle.reasons)) or 'thermal'} since {hhmm(throttle.first_seen)}"
        + (f", up to {throttle.hottest:g} °C" if throttle.hottest is not None else "")
        + (f", {throttle.clock_drop}" if throttle.clock_drop else "")
        + "."
    ]
    if here:
        parts.append("It hosts " + ", ".join(f"{p.namespace}/{p.name}" for p in here) + ".")
    else:
        parts.append("No pod of this incident runs on it.")
    if comparison.worse_than_peers:
        parts.append(
            "Those pods do worse than the same workload on other nodes: "
            + "; ".join(comparison.worse_than_peers)
            + "."
        )
    elif comparison.worse_than_before:
        parts.append(
            "Those pods do worse than before: " + "; ".join(comparison.worse_than_before) + "."
        )
    if before is not None:
        relation = "before" if before else "after"
        parts.append(
            f"The throttling began {relation} the first alert at {hhmm(facts.first_alert_at)}."
        )
    return " ".join(parts)


def _proposals(node: Entity, grace: int) -> list[Proposal]:
    return cordon_then_drain(
        node,
        grace,
        cordon_why=f"Keep new pods off {node.name} until its cooling is repaired.",
        drain_why=f"Move the slowed pods off {node.name} so they run at full clocks elsewhere.",
    )

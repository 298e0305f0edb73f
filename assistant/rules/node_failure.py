"""node-failure: a node stopped working, and every pod on it went down with it.

What a node's failure looks like from the API: its Ready condition turns Unknown (the kubelet
stopped posting status) or False, the node controller taints it `unreachable`/`not-ready` and
writes NodeNotReady events, its pods are marked for deletion and hang Terminating; or the
kubelet reports memory, disk or PID pressure and evicts. The rule is confident when the node is
not Ready, that began before the first alert, and the incident's pods on that node are the ones
in trouble. A node that is Ready and under no pressure now (even if it was briefly, earlier)
gives nothing: it is fine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from collectors.base import Entity

from ..base import Candidate, EvidenceItem, Facts, Proposal
from .infra_signals import (
    PodView,
    cordon_then_drain,
    earliest,
    grace_seconds,
    hhmm,
    ids,
    node_events,
    node_rows,
    parse_time,
    pod_views,
    pods_on,
    precedes,
    series_of,
)

CATEGORY = "node-failure"

PRESSURES = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
FAILURE_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
NOT_READY_EVENTS = frozenset({"NodeNotReady", "NodeStatusUnknown", "TaintManagerEviction"})


@dataclass
class NodeState:
    node: str
    evidence_id: int
    not_ready: str = ""  # "Unknown (NodeStatusUnknown)"
    pressures: list[str] = field(default_factory=list)
    taints: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    since: list[datetime] = field(default_factory=list)
    evidence_ids: list[int] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.not_ready or self.pressures)

    @property
    def first_seen(self) -> datetime | None:
        return earliest(self.since)


def evaluate(facts: Facts) -> list[Candidate]:
    pods = pod_views(facts)
    candidates = []
    for node, row in node_rows(facts, "node_status").items():
        state = _state(facts, node, row, {p.name for p in pods_on(pods, node)})
        if state.failed:
            candidates.append(_candidate(facts, state, pods))
    return candidates


def _state(facts: Facts, node: str, row: EvidenceItem, pod_names: set[str]) -> NodeState:
    state = NodeState(node, row.id, evidence_ids=[row.id])
    for condition in row.data.get("conditions") or []:
        kind, status = condition.get("type"), condition.get("status")
        changed = parse_time(condition.get("lastTransitionTime"))
        if kind == "Ready" and status != "True":
            state.not_ready = f"{status} ({condition.get('reason') or 'no reason given'})"
        elif kind in PRESSURES and status == "True":
            state.pressures.append(kind)
        else:
            continue
        if changed:
            state.since.append(changed)
    if not state.not_ready and row.data.get("ready") not in (None, "True"):
        state.not_ready = str(row.data.get("ready"))
    for taint in row.data.get("taints") or []:
        if taint.get("key") in FAILURE_TAINTS:
            state.taints.append(f"{taint['key']}:{taint.get('effect')}")
            if added := parse_time(taint.get("timeAdded")):
                state.since.append(added)
    _read_events(facts, state, pod_names)
    _read_ready_metric(facts, state)
    return state


def _read_events(facts: Facts, state: NodeState, pod_names: set[str]) -> None:
    """NodeNotReady and taint evictions, on the node itself or on the pods it hosts."""
    on_pods = [
        (row.id, event)
        for row in facts.of_kind("k8s_events")
        for event in row.data.get("events") or []
        if event.get("kind") == "Pod" and event.get("name") in pod_names
    ]
    for evidence_id, event in node_events(facts, state.node) + on_pods:
        if event.get("reason") in NOT_READY_EVENTS:
            state.events.append(f"{event.get('reason')} at {hhmm(parse_time(event.get('first')))}")
            state.evidence_ids.append(evidence_id)
            if first := parse_time(event.get("first")):
                state.since.append(first)


def _read_ready_metric(facts: Facts, state: NodeState) -> None:
    """kube-state-metrics' Ready condition stepping down for this node corroborates the API."""
    rows = [
        row
        for row in facts.of_kind("metric")
        if "kube_node_status_condition" in (row.data.get("query") or "")
    ]
    for series in series_of(rows):
        if series.labels.get("node") == state.node and series.step_down_at:
            state.evidence_ids.append(series.evidence_id)
            state.since.append(series.step_down_at)


def _candidate(facts: Facts, state: NodeState, pods: list[PodView]) -> Candidate:
    here = pods_on(pods, state.node)
    troubled = [p for p in here if p.troubled]
    before = precedes(state.first_seen, facts.first_alert_at)
    node = Entity("Node", None, state.node)
    return Candidate(
        category=CATEGORY,
        entity=node,
        confidence=_confidence(state, here, troubled, before),
        evidence_ids=ids(state.evidence_ids, [p.evidence_id for p in here]),
        explanation=_explanation(facts, state, here, troubled, before),
        proposals=_proposals(node, grace_seconds(here)),
    )


def _confidence(
    state: NodeState, here: list[PodView], troubled: list[PodView], before: bool | None
) -> float:
    if state.not_ready:
        score = 0.7
        if state.taints or state.events:
            score += 0.1
    else:
        score = 0.45  # Ready, but under pressure: it may evict, it has not failed
        evicted = [p for p in troubled if "Evicted" in p.why]
        if len(evicted) >= 2:
            # It is evicting: pods of several workloads pushed off one node under pressure is a
            # node failure in all but the Ready condition.
            score = 0.75
    if troubled and len(troubled) * 2 >= len(here):
        score += 0.06
    if before:
        score += 0.07
    elif before is False:
        score -= 0.2
    if not troubled:
        score = min(score, 0.3)  # nothing of this incident suffers there
    return round(min(score, 0.95), 2)


def _explanation(
    facts: Facts,
    state: NodeState,
    here: list[PodView],
    troubled: list[PodView],
    before: bool | None,
) -> str:
    what = []
    if state.not_ready:
        what.append(f"Ready is {state.not_ready}")
    if state.pressures:
        what.append("it reports " + ", ".join(state.pressures))
    if state.taints:
        what.append("it is tainted " + ", ".join(dict.fromkeys(state.taints)))
    if state.events:
        what.append("events: " + ", ".join(dict.fromkeys(state.events)))
    parts = [f"Node {state.node} failed at {hhmm(state.first_seen)}: " + "; ".join(what) + "."]
    if troubled:
        parts.append(
            f"{len(troubled)} of the {len(here)} incident pod(s) on it are affected: "
            + ", ".join(f"{p.namespace}/{p.name} ({p.why})" for p in troubled)
            + "."
        )
    else:
        parts.append("None of the incident's pods on it is in trouble.")
    if before is not None:
        relation = "before" if before else "after"
        parts.append(f"The node failed {relation} the first alert at {hhmm(facts.first_alert_at)}.")
    return " ".join(parts)


def _proposals(node: Entity, grace: int) -> list[Proposal]:
    return cordon_then_drain(
        node,
        grace,
        cordon_why=f"Keep the scheduler from placing pods on {node.name} while it is unhealthy.",
        drain_why=(
            f"Evict what is left on {node.name} so its controllers recreate it on healthy "
            "nodes; then repair or replace the node."
        ),
    )

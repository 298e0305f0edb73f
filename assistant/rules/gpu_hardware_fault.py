"""gpu-hardware-fault: a GPU of one node failed, and the pods on that node fail with it.

A broken GPU looks like an application crash from everywhere else, so the rule starts from what
the GPU itself says (DCGM's last Xid, ECC double-bit errors, a failed row remap), what the kernel
said through node events ("NVRM: Xid … 79 … GPU has fallen off the bus") and what the pods'
logs say ("GPU is lost"). It is confident only when the fault sits on the node that hosts the
troubled pods, the same workload elsewhere is fine, and the fault came before the symptom. A
flagged GPU on a node that hosts none of the affected pods, or an Xid that predates the whole
window, is reported weakly: it is real, but it is not this incident's cause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
)

CATEGORY = "gpu-hardware-fault"

# Xids that mean the hardware (not the application) failed; reference §3.1.
SEVERE_XIDS = frozenset({48, 62, 64, 74, 79, 94, 95, 119, 120, 154})
# Xids that are a warning of failing memory rather than a failure.
WARNING_XIDS = frozenset({63, 92})

XID_IN_TEXT = re.compile(r"Xid \(([^)]*)\):\s*(\d+)")
GPU_LOST_WORDS = ("fallen off the bus", "gpu is lost", "gpuislost", "gpu lost")

OLD_FAULT = timedelta(minutes=2)
"""A fault first seen this close to the window's start was already there when it opened."""


@dataclass
class NodeFault:
    """Everything that says a GPU of one node is broken."""

    node: str
    severe: list[str] = field(default_factory=list)  # "GPU 3 (GPU-…): Xid 79 …"
    warnings: list[str] = field(default_factory=list)
    gpu_ids: list[str] = field(default_factory=list)
    since: list[datetime] = field(default_factory=list)
    evidence_ids: list[int] = field(default_factory=list)
    corroborations: list[str] = field(default_factory=list)
    window_start: datetime | None = None

    @property
    def first_seen(self) -> datetime | None:
        return earliest(self.since)

    @property
    def predates_window(self) -> bool:
        first = self.first_seen
        return bool(first and self.window_start and first <= self.window_start + OLD_FAULT)


def evaluate(facts: Facts) -> list[Candidate]:
    pods = pod_views(facts)
    faults = _faults_by_node(facts, pods)
    return [
        _candidate(facts, fault, pods)
        for fault in faults.values()
        if fault.severe or fault.warnings
    ]


# -- reading the faults ---------------------------------------------------------------------------


def _faults_by_node(facts: Facts, pods: list[PodView]) -> dict[str, NodeFault]:
    faults: dict[str, NodeFault] = {}
    for node, row in node_rows(facts, "gpu_health").items():
        _read_gpu_health(faults.setdefault(node, NodeFault(node)), row)
    nodes = set(faults) | {p.node for p in pods if p.node}
    for node in sorted(nodes):
        fault = faults.setdefault(node, NodeFault(node))
        _read_node_events(facts, fault)
        _read_pod_logs(facts, fault, pods_on(pods, node))
    return faults


def _read_gpu_health(fault: NodeFault, row: EvidenceItem) -> None:
    fault.window_start = parse_time(row.data.get("start"))
    for gpu in row.data.get("gpus") or []:
        label = f"GPU {gpu.get('gpu')}" + (f" ({gpu['uuid']})" if gpu.get("uuid") else "")
        found = _gpu_problems(gpu)
        if not found:
            continue
        severe, warnings, since = found
        fault.severe += [f"{label}: {text}" for text in severe]
        fault.warnings += [f"{label}: {text}" for text in warnings]
        if severe or warnings:
            fault.gpu_ids.append(label)
            fault.evidence_ids.append(row.id)
        fault.since += since


def _gpu_problems(gpu: dict) -> tuple[list[str], list[str], list[datetime]] | None:
    severe: list[str] = []
    warnings: list[str] = []
    since: list[datetime] = []
    xid = gpu.get("xid") or {}
    code = xid.get("code")
    if isinstance(code, int):
        text = f"Xid {code} ({xid.get('meaning') or 'no meaning known'})"
        if code in SEVERE_XIDS:
            severe.append(text)
        elif code in WARNING_XIDS:
            warnings.append(text)
        if first := parse_time(xid.get("first_seen")):
            since.append(first)
    if (gpu.get("ecc_dbe_increase") or 0) > 0 or (gpu.get("ecc_dbe") or 0) > 0:
        severe.append(f"{gpu.get('ecc_dbe')} double-bit ECC error(s)")
    if (gpu.get("row_remap_failure") or 0) >= 1:
        severe.append("row remapping failed")
    if not (severe or warnings):
        return None
    return severe, warnings, since


def _read_node_events(facts: Facts, fault: NodeFault) -> None:
    for evidence_id, event in node_events(facts, fault.node):
        message = event.get("message") or ""
        match = XID_IN_TEXT.search(message)
        lost = any(word in message.lower() for word in GPU_LOST_WORDS)
        if not (match or lost or event.get("reason") == "NVRMXidError"):
            continue
        code = int(match.group(2)) if match else None
        if code is not None and code not in SEVERE_XIDS | WARNING_XIDS and not lost:
            continue  # an application Xid (13, 31, 43…) is not the hardware's fault
        text = f"kernel reported Xid {code}" if code is not None else "kernel reported a GPU error"
        text += f" at {hhmm(parse_time(event.get('first')))} ({event.get('reason')})"
        if code in WARNING_XIDS:
            fault.warnings.append(text)
        else:
            fault.severe.append(text)
        fault.corroborations.append("node event")
        if match and not fault.gpu_ids:
            fault.gpu_ids.append(f"the GPU at {match.group(1)}")
        fault.evidence_ids.append(evidence_id)
        if first := parse_time(event.get("first")):
            fault.since.append(first)


def _read_pod_logs(facts: Facts, fault: NodeFault, pods: list[PodView]) -> None:
    names = {(p.namespace, p.name) for p in pods}
    for row in facts.of_kind("log_signatures"):
        if (row.data.get("namespace"), row.data.get("pod")) not in names:
            continue
        for signature in row.data.get("signatures") or []:
            text = signature.get("signature") or ""
            if signature.get("category") == "gpu-fault" or any(
                word in text.lower() for word in GPU_LOST_WORDS
            ):
                fault.corroborations.append(f"pod {row.data.get('pod')} logged {text!r}")
                fault.evidence_ids.append(row.id)
                break


# -- judging --------------------------------------------------------------------------------------


def _candidate(facts: Facts, fault: NodeFault, pods: list[PodView]) -> Candidate:
    here = pods_on(pods, fault.node)
    troubled_here = [p for p in here if p.troubled]
    peers = [
        p
        for p in pods
        if p.node != fault.node and p.workload in {t.workload for t in troubled_here}
    ]
    healthy_peers = [p for p in peers if not p.troubled]
    before = precedes(fault.first_seen, facts.first_alert_at)
    confidence = _confidence(fault, troubled_here, healthy_peers, before)
    node = Entity("Node", None, fault.node)
    return Candidate(
        category=CATEGORY,
        entity=node,
        confidence=confidence,
        evidence_ids=ids(
            fault.evidence_ids,
            [p.evidence_id for p in troubled_here],
            [p.evidence_id for p in healthy_peers],
        ),
        explanation=_explanation(facts, fault, troubled_here, healthy_peers, before),
        proposals=_proposals(node, fault, grace_seconds(here)),
    )


def _confidence(
    fault: NodeFault,
    troubled_here: list[PodView],
    healthy_peers: list[PodView],
    before: bool | None,
) -> float:
    """Specific signature, then topology, then time order; each missing piece costs."""
    if not troubled_here:
        return 0.25 if fault.severe else 0.1  # real, but on a node no affected pod runs on
    if fault.predates_window and not fault.corroborations:
        return 0.3  # an old Xid the gauge still repeats, with nothing recent beside it
    if not fault.severe:
        return 0.45  # warnings of failing memory (Xid 63, 92) on the affected node
    score = 0.75
    if before:
        score += 0.1
    elif before is False:
        score -= 0.2
    if healthy_peers:
        score += 0.05
    if fault.corroborations:
        score += 0.04
    return round(min(score, 0.95), 2)


def _explanation(
    facts: Facts,
    fault: NodeFault,
    troubled_here: list[PodView],
    healthy_peers: list[PodView],
    before: bool | None,
) -> str:
    problems = "; ".join(fault.severe or fault.warnings)
    parts = [
        f"Node {fault.node} has a failing GPU: {problems}; first seen at {hhmm(fault.first_seen)}."
    ]
    if troubled_here:
        parts.append(
            "On that node "
            + ", ".join(f"pod {p.namespace}/{p.name} is {p.why}" for p in troubled_here)
            + "."
        )
    else:
        parts.append(
            "None of the incident's troubled pods runs on that node, so it is probably not the cause."
        )
    if healthy_peers:
        parts.append(
            "Replicas of the same workload on other nodes ("
            + ", ".join(sorted({p.node or "?" for p in healthy_peers}))
            + ") serve normally."
        )
    if fault.corroborations:
        parts.append("Corroborated by: " + "; ".join(dict.fromkeys(fault.corroborations)) + ".")
    if before:
        parts.append(f"The fault came before the first alert at {hhmm(facts.first_alert_at)}.")
    elif before is False:
        parts.append(
            f"The fault was first seen after the first alert at {hhmm(facts.first_alert_at)}."
        )
    if fault.predates_window:
        parts.append("It was already present when the evidence window opened.")
    return " ".join(parts)


def _proposals(node: Entity, fault: NodeFault, grace: int) -> list[Proposal]:
    gpus = ", ".join(dict.fromkeys(fault.gpu_ids)) or "the GPU"
    return cordon_then_drain(
        node,
        grace,
        cordon_why=f"Stop new pods landing on {node.name} while {gpus} is broken.",
        drain_why=(
            f"Move the pods off {node.name} onto healthy GPUs; the GPU needs a reset, "
            "a reboot or replacement before the node is uncordoned."
        ),
    )

"""Small helpers the rules share: times, pods and workloads, changes, symptom onset, quantities.

Rules read the same evidence shapes (collectors/*.py docstrings) and ask the same questions of
it ("when did the symptom start?", "which workload owns this pod?", "did this workload change
just before?"); answering them once keeps the rules comparable and their explanations
consistent. Only add functions here; rules of both helpers import them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from collectors.base import Entity

from ..base import AlertItem, EvidenceItem, Facts, hhmm, parse_time  # noqa: F401 (re-exported to rules)

# A symptom that starts this long after a change is rarely caused by it; beyond, it fades.
CHANGE_TIGHT = timedelta(minutes=15)
CHANGE_LOOSE = timedelta(minutes=35)
# A log signature first seen this long before the symptom is old noise, not its cause.
OLD_NOISE = timedelta(minutes=30)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def ago(facts: Facts, moment: datetime | None) -> str:
    """`15:57 UTC (14 min before the incident opened)` for explanations."""
    if moment is None:
        return "an unknown time"
    minutes = round((facts.opened_at - moment).total_seconds() / 60)
    return f"{hhmm(moment)} ({minutes} min before the incident opened)"


def clamp(value: float, low: float = 0.02, high: float = 0.97) -> float:
    """Confidence in the range rules use: never 0 (it was considered) nor 1 (never certain)."""
    return round(max(low, min(high, value)), 2)


def earliest(moments: Iterable[datetime | None]) -> datetime | None:
    found = [m for m in moments if m is not None]
    return min(found) if found else None


# --- workloads and pods ------------------------------------------------------------------------


def workload_entity(data: dict[str, Any]) -> Entity | None:
    """The Deployment/StatefulSet of a pod_status row (its `workload`), if resolved."""
    workload = data.get("workload") or {}
    if workload.get("kind") and workload.get("name"):
        return Entity(
            workload["kind"], workload.get("namespace") or data.get("namespace"), workload["name"]
        )
    return None


def pods_by_workload(facts: Facts) -> dict[Entity, list[EvidenceItem]]:
    """pod_status rows grouped by the workload that owns them."""
    grouped: dict[Entity, list[EvidenceItem]] = {}
    for row in facts.of_kind("pod_status"):
        entity = workload_entity(row.data)
        if entity is not None:
            grouped.setdefault(entity, []).append(row)
    return grouped


def workload_of_pod(facts: Facts, namespace: str | None, pod: str) -> Entity | None:
    """The workload a pod belongs to: from its pod_status row, else by the pod-name hash suffix."""
    for row in facts.of_kind("pod_status"):
        if row.data.get("pod") == pod and row.data.get("namespace") == namespace:
            return workload_entity(row.data)
    for entity in known_workloads(facts):
        if entity.namespace == namespace and pod_belongs(pod, entity.name):
            return entity
    return None


def pod_belongs(pod: str, workload: str) -> bool:
    """Whether a pod name is one a Deployment (`name-<rs hash>-<id>`) or StatefulSet made."""
    rest = pod[len(workload) + 1 :] if pod.startswith(workload + "-") else None
    return rest is not None and re.fullmatch(r"([a-z0-9]{5,10}-)?[a-z0-9]{1,5}", rest) is not None


def known_workloads(facts: Facts) -> list[Entity]:
    """Every workload the evidence knows: scope, rollout histories and pods' owners."""
    found: list[Entity] = [
        *facts.scope.deployments,
        *facts.scope.statefulsets,
        *facts.scope.daemonsets,
    ]
    for row in facts.of_kind("rollout_history"):
        found.append(
            Entity("Deployment", row.data.get("namespace"), row.data.get("deployment", ""))
        )
    for row in facts.of_kind("pod_status"):
        entity = workload_entity(row.data)
        if entity:
            found.append(entity)
    return list(dict.fromkeys(e for e in found if e.name))


def containers(row: EvidenceItem) -> list[dict[str, Any]]:
    return list(row.data.get("containers") or [])


def waiting_reason(container: dict[str, Any]) -> str:
    return ((container.get("state") or {}).get("waiting") or {}).get("reason") or ""


def last_terminated(container: dict[str, Any]) -> dict[str, Any]:
    """How the container's last instance ended (lastState, else the current terminated state)."""
    return (
        (container.get("lastState") or {}).get("terminated")
        or (container.get("state") or {}).get("terminated")
        or {}
    )


def logs_of(facts: Facts, entity: Entity) -> list[EvidenceItem]:
    """log_signatures rows of the workload's pods."""
    return [
        row
        for row in facts.of_kind("log_signatures")
        if row.data.get("namespace") == entity.namespace
        and workload_of_pod(facts, entity.namespace, row.data.get("pod", "")) == entity
    ]


@dataclass(frozen=True)
class Signature:
    """One log signature with the row it came from (for citing) and its times parsed."""

    row: EvidenceItem
    text: str
    level: str
    category: str
    count: int
    first: datetime | None
    last: datetime | None
    examples: list[str]

    @property
    def pod(self) -> str:
        return self.row.data.get("pod", "")

    @property
    def full_text(self) -> str:
        """The signature and its raw examples: examples keep what normalisation removed."""
        return "\n".join([self.text, *self.examples])


def signatures(rows: Iterable[EvidenceItem]) -> Iterator[Signature]:
    for row in rows:
        for sig in row.data.get("signatures") or []:
            yield Signature(
                row=row,
                text=sig.get("signature", ""),
                level=sig.get("level", ""),
                category=sig.get("category", ""),
                count=int(sig.get("count") or 0),
                first=parse_time(sig.get("first")),
                last=parse_time(sig.get("last")),
                examples=list(sig.get("examples") or []),
            )


# --- alerts and the symptom's onset --------------------------------------------------------------


def alert_concerns(alert: AlertItem, entity: Entity) -> bool:
    """Whether an alert's labels name this workload (or one of its pods) in its namespace."""
    labels = alert.labels
    if entity.namespace and labels.get("namespace") not in (None, entity.namespace):
        return False
    if labels.get("pod") and pod_belongs(labels["pod"], entity.name):
        return True
    keys = (
        "deployment",
        "statefulset",
        "daemonset",
        "job",
        "service",
        "container",
        "app",
        "workload",
    )
    return any(labels.get(k) == entity.name for k in keys)


def symptom_start(facts: Facts, entity: Entity | None = None) -> datetime:
    """When the symptom of this workload began: its own alerts first, then its namespace's.

    `facts.first_alert_at` can be an unrelated alert that has fired for hours (a CPU throttling
    alert on the ingress), which would make every recent change look like it came after the
    symptom; the alerts that name the workload, or at least share its namespace, are the clock.
    """
    if entity is not None:
        own = [a.starts_at for a in facts.alerts if alert_concerns(a, entity)]
        if own:
            return min(own)
        same_ns = [
            a.starts_at for a in facts.alerts if a.labels.get("namespace") == entity.namespace
        ]
        if same_ns:
            return min(same_ns)
    return facts.first_alert_at


def metric_steps_up(facts: Facts, entity: Entity) -> list[tuple[EvidenceItem, datetime]]:
    """Metric rows about the workload (or its alerts) whose series stepped up, with when."""
    found = []
    for row in facts.of_kind("metric"):
        about = row.entity == entity or (
            row.data.get("alerts")
            and any(
                alert_concerns(a, entity)
                for a in facts.alerts
                if a.labels.get("alertname") in row.data["alerts"]
            )
        )
        if not about:
            continue
        for series in row.data.get("series") or []:
            summary = series.get("summary") or {}
            at = parse_time(summary.get("step_at"))
            if summary.get("step_direction") == "up" and at is not None:
                found.append((row, at))
    return found


# --- changes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """A new revision of a Deployment inside the window, and what it replaced."""

    entity: Entity
    revision: int | None
    at: datetime | None
    replicaset: str
    images: list[str]
    previous_revision: int | None
    previous_images: list[str]
    evidence_id: int


def rollouts(facts: Facts) -> list[Rollout]:
    """The latest in-window rollout of every Deployment with a rollout history."""
    found = []
    for row in facts.of_kind("rollout_history"):
        entity = Entity("Deployment", row.data.get("namespace"), row.data.get("deployment", ""))
        in_window = row.data.get("rolloutsInWindow") or []
        if not in_window:
            continue
        latest = max(
            in_window,
            key=lambda r: (
                parse_time(r.get("at")) or datetime.min.replace(tzinfo=facts.opened_at.tzinfo)
            ),
        )
        found.append(
            Rollout(
                entity=entity,
                revision=_int(latest.get("revision")),
                at=parse_time(latest.get("at")),
                replicaset=latest.get("replicaSet") or "",
                images=list(latest.get("images") or []),
                previous_revision=_int(latest.get("previousRevision")),
                previous_images=list(latest.get("previousImages") or []),
                evidence_id=row.id,
            )
        )
    return found


def rollout_of(facts: Facts, entity: Entity) -> Rollout | None:
    return next((r for r in rollouts(facts) if r.entity == entity), None)


def ci_changes(facts: Facts, entity: Entity) -> list[tuple[EvidenceItem, dict[str, Any]]]:
    """CI/CD deploy events reported for this workload (deploys evidence, source `ci`)."""
    found = []
    for row in facts.of_kind("deploys"):
        if row.entity != entity:
            continue
        for change in row.data.get("changes") or []:
            if change.get("source") == "ci":
                found.append((row, change))
    return found


def changed_in_window(facts: Facts, entity: Entity) -> bool:
    """Whether the workload got a new revision or a reported deploy inside the window."""
    return rollout_of(facts, entity) is not None or bool(ci_changes(facts, entity))


def rollout_history_row(facts: Facts, entity: Entity) -> EvidenceItem | None:
    return next(
        (
            r
            for r in facts.of_kind("rollout_history")
            if r.data.get("namespace") == entity.namespace
            and r.data.get("deployment") == entity.name
        ),
        None,
    )


def desired_replicas(facts: Facts, entity: Entity) -> int | None:
    """The Deployment's spec replicas, from its rollout history."""
    row = rollout_history_row(facts, entity)
    return _int(row.data.get("replicas")) if row else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- resource quantities -------------------------------------------------------------------------

_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "": 1,
}


def parse_bytes(quantity: Any) -> int | None:
    """A Kubernetes memory quantity (`4Gi`, `4096Mi`, `4G`, `4294967296`) in bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)([KMGT]i?|k)?\s*", str(quantity or ""))
    if not match:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


def format_memory(size: float) -> str:
    """Bytes as a quantity rounded UP to whole Gi (whole Mi under 1Gi), as people write limits."""
    if size >= 2**30:
        return f"{math.ceil(size / 2**30 - 1e-9)}Gi"
    return f"{math.ceil(size / 2**20 - 1e-9)}Mi"


# --- what log lines point at ----------------------------------------------------------------------

# A call to another component failed at the connection level: the fault is on the far side.
CONNECTION_FAILURE = re.compile(
    r"connection refused|ECONNREFUSED|ConnectionRefused|Connect call failed|connection reset by peer"
    r"|ECONNRESET|no route to host|EHOSTUNREACH|network is unreachable|could not connect"
    r"|(?:can ?not|unable to|failed to) connect|connection timed out|connect timeout|ConnectTimeout"
    r"|timed out (?:while )?connecting|timeout (?:while )?connecting|Name or service not known"
    r"|nodename nor servname|could not resolve host|no such host|NXDOMAIN|getaddrinfo"
    r"|server closed the connection unexpectedly|Connection to [\w.-]+ (?:closed|lost)",
    re.IGNORECASE,
)
# An upstream answered "too many requests" or a quota ran out.
RATE_LIMITED = re.compile(
    r"\b429\b|Too Many Requests|RateLimitError|rate[_ ]limit(?:ed|_exceeded| reached| exceeded)"
    r"|quota (?:exceeded|exhausted)|exceeded (?:your|the) (?:current )?quota|insufficient_quota"
    r"|tokens per min|requests per min|\bTPM\b|\bRPM\b|RESOURCE_EXHAUSTED|ThrottlingException",
    re.IGNORECASE,
)


def points_elsewhere(sig: Signature) -> bool:
    """Whether an error blames another component (connection failure, upstream rate limit)."""
    return sig.category == "http-429" or bool(CONNECTION_FAILURE.search(sig.full_text))

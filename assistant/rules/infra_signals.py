"""Readings of the evidence shared by the GPU, node and load rules.

The rules for gpu-hardware-fault, gpu-thermal-throttle, node-failure, kv-cache-saturation and
traffic-surge all ask the same few questions of the Evidence rows: which pods are in trouble and
on which node, what a metric profile's series did (baseline, recent, step), how many replicas a
Deployment runs. They are answered here once, so each rule reads like its own reasoning. Nothing
here decides a category; it only reads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from collectors.base import Entity

from ..base import EvidenceItem, Facts, Proposal, hhmm, parse_time  # noqa: F401 (re-exported to rules)

PRECEDENCE_SLACK = timedelta(minutes=2)
"""A fault may be recorded a scrape or two after the symptom's alert was computed."""

DEFAULT_GRACE_SECONDS = 30
"""Kubernetes' default terminationGracePeriodSeconds, used when the pod spec does not say."""


# -- times ----------------------------------------------------------------------------------------


def precedes(cause: datetime | None, symptom: datetime) -> bool | None:
    """Whether the cause came no later than the symptom (None when the cause's time is unknown)."""
    if cause is None:
        return None
    return cause <= symptom + PRECEDENCE_SLACK


def earliest(times: Iterable[datetime | None]) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


# -- pods and nodes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodView:
    """One pod_status row, reduced to what topology questions need."""

    evidence_id: int
    namespace: str
    name: str
    node: str | None
    workload: Entity | None
    troubled: bool
    why: str
    grace_seconds: int | None = None


def pod_views(facts: Facts) -> list[PodView]:
    return [_pod_view(row) for row in facts.of_kind("pod_status")]


def _pod_view(row: EvidenceItem) -> PodView:
    data = row.data
    workload = Entity.from_dict(data["workload"]) if data.get("workload") else None
    why = pod_trouble(data)
    return PodView(
        evidence_id=row.id,
        namespace=data.get("namespace") or "",
        name=data.get("pod") or (row.entity.name if row.entity else ""),
        node=data.get("node"),
        workload=workload,
        troubled=bool(why),
        why=why,
        grace_seconds=data.get("terminationGracePeriodSeconds"),
    )


def pod_trouble(data: dict[str, Any]) -> str:
    """Why a pod is not serving ("" when it looks healthy): the words an engineer would use."""
    if data.get("deletionTimestamp"):
        return "terminating" + (f" ({data['reason']})" if data.get("reason") else "")
    if data.get("phase") not in (None, "Running", "Succeeded"):
        return f"{data.get('phase')}" + (f" ({data['reason']})" if data.get("reason") else "")
    for container in data.get("containers") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return f"{container.get('name')}: {waiting['reason']}"
        if (container.get("restartCount") or 0) > 0 and (container.get("lastState") or {}).get(
            "terminated"
        ):
            reason = container["lastState"]["terminated"].get("reason") or "terminated"
            return f"{container.get('name')}: restarting ({reason})"
        if container.get("ready") is False:
            return f"{container.get('name')}: not ready"
    return ""


def node_rows(facts: Facts, kind: str) -> dict[str, EvidenceItem]:
    """node_status or gpu_health rows by node name."""
    return {row.entity.name: row for row in facts.of_kind(kind) if row.entity}


def node_events(facts: Facts, node: str) -> list[tuple[int, dict[str, Any]]]:
    """(evidence id, event) for every collected event about the node or raised on it."""
    found = []
    for row in facts.of_kind("k8s_events"):
        for event in row.data.get("events") or []:
            if (event.get("kind") == "Node" and event.get("name") == node) or event.get(
                "host"
            ) == node:
                found.append((row.id, event))
    return found


def pods_on(pods: list[PodView], node: str) -> list[PodView]:
    return [p for p in pods if p.node == node]


def grace_seconds(pods: Iterable[PodView]) -> int:
    """The longest termination grace period of these pods (their spec), else the default."""
    known = [p.grace_seconds for p in pods if isinstance(p.grace_seconds, int)]
    return max(known) if known else DEFAULT_GRACE_SECONDS


def workloads_of(pods: Iterable[PodView]) -> set[Entity]:
    return {p.workload for p in pods if p.workload}


# -- metric series --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One series of a metric row: its labels and the summary collectors/series.py computed."""

    evidence_id: int
    labels: dict[str, str]
    summary: dict[str, Any]

    def value(self, name: str) -> float | None:
        found = self.summary.get(name)
        return float(found) if isinstance(found, int | float) and math.isfinite(found) else None

    @property
    def step_up_at(self) -> datetime | None:
        if self.summary.get("step_direction") != "up":
            return None
        return parse_time(self.summary.get("step_at"))

    @property
    def step_down_at(self) -> datetime | None:
        if self.summary.get("step_direction") != "down":
            return None
        return parse_time(self.summary.get("step_at"))


def profile_rows(facts: Facts, profile: str, entity: Entity | None = None) -> list[EvidenceItem]:
    """Metric rows of one query profile (optionally for one entity)."""
    return [
        row
        for row in facts.of_kind("metric")
        if row.data.get("profile") == profile and (entity is None or row.entity == entity)
    ]


def series_of(rows: Iterable[EvidenceItem]) -> list[Series]:
    return [
        Series(row.id, dict(s.get("labels") or {}), dict(s.get("summary") or {}))
        for row in rows
        for s in row.data.get("series") or []
    ]


def profile_series(facts: Facts, profile: str, entity: Entity | None = None) -> list[Series]:
    return series_of(profile_rows(facts, profile, entity))


def metric_entities(facts: Facts, profiles: Iterable[str]) -> list[Entity]:
    """Deployments (in evidence order) that any of these profiles was bound to."""
    wanted = set(profiles)
    seen: list[Entity] = []
    for row in facts.of_kind("metric"):
        entity = row.entity
        bound = row.data.get("profile") in wanted and entity and entity.kind == "Deployment"
        if bound and entity not in seen:
            seen.append(entity)
    return seen


def total(series: Iterable[Series], name: str) -> float | None:
    """Sum of one summary field over series that have it (None when none has it)."""
    values = [v for s in series if (v := s.value(name)) is not None]
    return sum(values) if values else None


def ratio_of_totals(series: list[Series]) -> float | None:
    """recent / baseline summed over the series that have both (pods come and go)."""
    both = [s for s in series if s.value("baseline") is not None and s.value("recent") is not None]
    baseline = total(both, "baseline")
    recent = total(both, "recent")
    if not baseline or recent is None:
        return None
    return recent / baseline


def highest(series: Iterable[Series], name: str) -> float | None:
    values = [v for s in series if (v := s.value(name)) is not None]
    return max(values) if values else None


def first_step_up(series: Iterable[Series]) -> datetime | None:
    return earliest(s.step_up_at for s in series)


def ids(*groups: Iterable[int]) -> list[int]:
    """Evidence ids, deduplicated, in first-seen order."""
    seen: dict[int, None] = {}
    for group in groups:
        for item in group:
            seen.setdefault(item, None)
    return list(seen)


# -- workloads ------------------------------------------------------------------------------------


@dataclass
class Replicas:
    count: int | None
    evidence_ids: list[int] = field(default_factory=list)
    source: str = ""


def current_replicas(facts: Facts, deployment: Entity) -> Replicas:
    """Desired replicas from rollout_history (spec), else the pods seen for the workload."""
    for row in facts.of_kind("rollout_history"):
        if row.entity == deployment and isinstance(row.data.get("replicas"), int):
            return Replicas(row.data["replicas"], [row.id], "the Deployment's spec")
    pods = [p for p in pod_views(facts) if p.workload == deployment]
    if pods:
        return Replicas(len(pods), [p.evidence_id for p in pods], "the pods seen")
    return Replicas(None)


def scaled(current: int, factor: float, *, ceiling: int = 4) -> int:
    """Replicas for `factor` times the load: at least one more, at most `ceiling` times as many."""
    factor = min(max(factor, 1.0), float(ceiling))
    return max(current + 1, math.ceil(round(current * factor, 6)))


def serving_faults(facts: Facts, deployment: Entity) -> list[tuple[int, str]]:
    """Signs that the serving side itself is broken: troubled pods, fatal logs, a fresh rollout."""
    found: list[tuple[int, str]] = []
    pods = [p for p in pod_views(facts) if p.workload == deployment]
    found += [(p.evidence_id, f"pod {p.name} {p.why}") for p in pods if p.troubled]
    names = {p.name for p in pods}
    for row in facts.of_kind("log_signatures"):
        if row.data.get("pod") not in names:
            continue
        for signature in row.data.get("signatures") or []:
            if (
                signature.get("level") == "fatal"
                or signature.get("category") in FAULT_LOG_CATEGORIES
            ):
                found.append((row.id, f"log: {signature.get('signature')}"))
                break
    for row in facts.of_kind("rollout_history"):
        if row.entity == deployment and row.data.get("rolloutsInWindow"):
            found.append((row.id, "a rollout inside the window"))
    return found


FAULT_LOG_CATEGORIES = frozenset(
    {"cuda-oom", "gpu-fault", "cuda-error", "python-exception", "http-5xx", "http-429"}
)


# -- load on a serving Deployment -----------------------------------------------------------------

LOAD_PROFILES = (
    "vllm_kv_cache_usage",
    "vllm_requests_waiting",
    "vllm_requests_running",
    "vllm_preemptions",
    "vllm_ttft_p95",
    "vllm_e2e_latency_mean",
    "vllm_generation_throughput",
    "http_request_rate",
    "http_latency_p95",
)
REQUEST_RATE_PROFILES = ("http_request_rate", "vllm_request_rate")
LATENCY_PROFILES = ("vllm_ttft_p95", "vllm_e2e_latency_mean", "http_latency_p95")


@dataclass(frozen=True)
class Demand:
    """How far the load offered to a Deployment rose over its baseline, and what says so."""

    ratio: float
    source: str  # "request rate", "generation throughput", "requests running"
    explicit: bool  # a request-rate metric, not a proxy
    step_at: datetime | None
    evidence_ids: list[int]


@dataclass
class Load:
    """The load-related series of one Deployment, as the kv-cache and traffic rules read them."""

    deployment: Entity
    series: dict[str, list[Series]]

    def of(self, profile: str) -> list[Series]:
        return self.series.get(profile, [])

    def ids_of(self, *profiles: str) -> list[int]:
        return ids(s.evidence_id for p in profiles for s in self.of(p))

    def demand(self) -> Demand | None:
        """The request rate's ratio; without one, served tokens, then running requests, as proxies.

        Served throughput rises with the offered load until the engine saturates, so it
        understates a surge rather than inventing one; running requests are the weakest proxy
        (they also rise when each request holds its slot longer).
        """
        choices = [(p, "request rate", True) for p in REQUEST_RATE_PROFILES] + [
            ("vllm_generation_throughput", "generation throughput", False),
            ("vllm_requests_running", "requests running", False),
        ]
        for profile, source, explicit in choices:
            series = self.of(profile)
            ratio = ratio_of_totals(series)
            if ratio is not None:
                return Demand(ratio, source, explicit, first_step_up(series), self.ids_of(profile))
        return None

    def rising(self, profile: str) -> bool:
        """Whether the series went up: a step up, or recent clearly above a positive baseline."""
        series = self.of(profile)
        if any(s.step_up_at for s in series):
            return True
        recent, baseline = total(series, "recent"), total(series, "baseline")
        return bool(recent and (not baseline or recent >= 1.5 * baseline))

    def latency_ratio(self) -> tuple[float, str] | None:
        """The largest recent/baseline ratio among the latency profiles, and its profile."""
        found = [
            (ratio, profile)
            for profile in LATENCY_PROFILES
            if (ratio := highest(self.of(profile), "ratio")) is not None
        ]
        return max(found) if found else None

    def symptom_at(self) -> datetime | None:
        """When the queue or latency first stepped up."""
        return first_step_up(
            s for p in ("vllm_requests_waiting", *LATENCY_PROFILES) for s in self.of(p)
        )


def loads(facts: Facts) -> list[Load]:
    """One Load per Deployment that any load profile was bound to."""
    return [
        Load(
            deployment,
            {profile: profile_series(facts, profile, deployment) for profile in LOAD_PROFILES},
        )
        for deployment in metric_entities(facts, LOAD_PROFILES)
    ]


def cordon_then_drain(
    node: Entity, grace: int, *, cordon_why: str, drain_why: str
) -> list[Proposal]:
    """The node families' remedy: stop new pods landing there first, then move the rest off."""
    return [
        Proposal(action="cordon-node", target=node, rationale=cordon_why),
        Proposal(
            action="drain-node", target=node, params={"grace_seconds": grace}, rationale=drain_why
        ),
    ]

"""The collector contract: what a collector is given, what it returns, how it fails.

A collector is a module with `NAME` (its `collector` value in the API: prometheus, kubernetes,
logs, gpu, deploys) and `collect(ctx: CollectionContext) -> list[EvidenceDraft]`. It reads, never
writes: the runner (collectors/runner.py) applies the time limits, redacts secrets, caps sizes,
stores Evidence rows and turns a CollectorError or any crash into a "failed, because…" record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True, order=True)
class Entity:
    """A Kubernetes object an incident is about; `namespace` is None for cluster-scoped ones."""

    kind: str
    namespace: str | None
    name: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}

    @classmethod
    def from_dict(cls, data: dict) -> Entity:
        return cls(data["kind"], data.get("namespace") or None, data["name"])

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else f"{self.kind} {self.name}"
        )


@dataclass(frozen=True)
class Gpu:
    """One GPU named by an alert (DCGM labels: Hostname/node, gpu index, UUID)."""

    node: str
    index: str = ""
    uuid: str = ""


@dataclass
class Scope:
    """The entities an incident is about, resolved from its alerts' labels and the cluster."""

    namespaces: list[str] = field(default_factory=list)
    pods: list[Entity] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    replicasets: list[Entity] = field(default_factory=list)
    deployments: list[Entity] = field(default_factory=list)
    statefulsets: list[Entity] = field(default_factory=list)
    daemonsets: list[Entity] = field(default_factory=list)
    services: list[Entity] = field(default_factory=list)
    nodes: list[Entity] = field(default_factory=list)
    gpus: list[Gpu] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be resolved, and why

    ENTITY_FIELDS = (
        "pods",
        "replicasets",
        "deployments",
        "statefulsets",
        "daemonsets",
        "services",
        "nodes",
    )

    def entities(self) -> list[Entity]:
        return [e for name in self.ENTITY_FIELDS for e in getattr(self, name)]

    def workloads(self) -> list[Entity]:
        return self.deployments + self.statefulsets + self.daemonsets

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in self.ENTITY_FIELDS:
            data[name] = [e.as_dict() for e in getattr(self, name)]
        return data

    @classmethod
    def from_json(cls, data: dict | None) -> Scope:
        data = dict(data or {})
        kwargs: dict[str, Any] = {}
        for name in cls.ENTITY_FIELDS:
            kwargs[name] = [Entity.from_dict(e) for e in data.pop(name, [])]
        kwargs["gpus"] = [Gpu(**g) for g in data.pop("gpus", [])]
        known = {"namespaces", "containers", "jobs", "models", "notes"}
        kwargs.update({k: list(v) for k, v in data.items() if k in known})
        return cls(**kwargs)


# Alerts further apart than this belong to different stories (see symptom_start).
SYMPTOM_GAP = timedelta(minutes=45)


def symptom_start(starts: list[datetime]) -> datetime | None:
    """When the symptom began: the earliest start of the latest run of alerts.

    Alerts of one incident start within minutes of each other; one that has been firing for
    hours before the rest (a chronic CPU-throttling or disk warning grouped in) is background,
    not the start of this symptom. So walk back from the newest start while the gaps stay under
    SYMPTOM_GAP.
    """
    ordered = sorted(set(starts))
    if not ordered:
        return None
    first = ordered[-1]
    for earlier in reversed(ordered[:-1]):
        if first - earlier > SYMPTOM_GAP:
            break
        first = earlier
    return first


@dataclass(frozen=True)
class Window:
    """What to look at: from a lookback before the first alert, to now."""

    start: datetime
    end: datetime
    first_alert_at: datetime


@dataclass(frozen=True)
class ClusterSources:
    """Where a cluster's evidence lives (a plain copy of the Cluster row, safe to pass around)."""

    name: str
    prometheus_url: str = ""
    alertmanager_url: str = ""
    loki_url: str = ""
    kube_in_cluster: bool = False
    kubeconfig_path: str = ""
    kubeconfig: str = ""
    kube_context: str = ""

    @property
    def has_kubernetes(self) -> bool:
        return bool(self.kube_in_cluster or self.kubeconfig_path or self.kubeconfig)


@dataclass(frozen=True)
class AlertFacts:
    """What collectors may know of an alert: never the incident's analysis or anything else."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    status: str
    generator_url: str = ""


@dataclass(frozen=True)
class CollectionContext:
    incident_id: int
    cluster: ClusterSources
    scope: Scope
    window: Window
    alerts: tuple[AlertFacts, ...]
    timeout: float  # seconds this collector may spend on any one request
    # time.monotonic() by which the collector should stop starting requests and return what it
    # has, before its soft time limit throws everything away; None means no deadline
    deadline: float | None = None

    def out_of_time(self) -> bool:
        import time

        return self.deadline is not None and time.monotonic() >= self.deadline


@dataclass
class EvidenceDraft:
    """One piece of evidence before it is stored; `data` is JSON-serialisable."""

    kind: str
    title: str
    entity: Entity | None = None
    data: dict[str, Any] = field(default_factory=dict)


class CollectorError(Exception):
    """A source could not be read; `reason` is shown to the engineer as is, so make it specific."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable

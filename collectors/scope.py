"""Which Kubernetes objects an incident is about: from its alerts' labels, checked against the cluster.

Alerts name things in many ways: kube-state-metrics gives `namespace`/`pod`/`container` or
`deployment`; an application's own alert often only `service` or `job` (its scrape job, usually
the Deployment's name); DCGM gives `Hostname`/`gpu`/`UUID`; node alerts `node` or `instance`. The
collectors need the objects themselves, so each name is resolved through the official client:

- a pod → its ReplicaSet and Deployment (or StatefulSet, DaemonSet) via ownerReferences, and its node;
- a Deployment/StatefulSet/DaemonSet (named by label, or a `service`/`job` label equal to a
  Deployment's name) → its pods through `spec.selector`, and a Deployment's ReplicaSets (all
  revisions, for the rollout history);
- a Service → its pods through its selector, when no workload has its name;
- a node → the pods running on it (`spec.nodeName`);
- an `instance` "10.1.2.3:8000" → the pod with that podIP, else the node with that address.

Labels alone give a first scope, kept when the cluster cannot be asked; `scope.notes` says what
could not be resolved and why, so an engineer knows when the scope is a guess.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import AlertFacts, ClusterSources, CollectorError, Entity, Gpu, Scope
from .kubernetes import KubeReader, controller_of, is_not_found, label_selector

MAX_PODS = 50
MAX_NODE_PODS = 30  # a big node runs more; the first non-DaemonSet ones are the interesting ones
WORKLOAD_LABELS = {
    "deployment": "Deployment",
    "statefulset": "StatefulSet",
    "daemonset": "DaemonSet",
    "replicaset": "ReplicaSet",
}
SCOPE_FIELDS = {
    "Pod": "pods",
    "ReplicaSet": "replicasets",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "Service": "services",
    "Node": "nodes",
}
NODE_LABELS = ("node", "kubernetes_node", "Hostname", "nodename")
# Scrape jobs whose `instance` is the exporter's own address, not the thing the alert is about.
EXPORTER_JOBS = re.compile(
    r"kube-state-metrics|dcgm|node-exporter|kubelet|cadvisor|apiserver|blackbox|prometheus"
)


@dataclass
class _Named:
    """What the alerts' labels name, before anything is checked."""

    pods: list[tuple[str | None, str]] = field(default_factory=list)
    workloads: list[tuple[str, str | None, str]] = field(default_factory=list)
    services: list[tuple[str | None, str]] = field(default_factory=list)
    jobs: list[tuple[str | None, str]] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    instances: list[tuple[str | None, str]] = field(default_factory=list)


def resolve_scope(alerts: list[AlertFacts], cluster: ClusterSources, timeout: float) -> Scope:
    """The entities the alerts are about; see the module docstring. Never raises for the cluster:
    an unreachable or forbidding API leaves the label scope with a note saying so."""
    scope = Scope()
    named = _from_labels(alerts, scope)
    if not cluster.has_kubernetes:
        scope.notes.append(
            f"cluster {cluster.name} has no Kubernetes access configured: scope from alert labels only"
        )
        return scope
    try:
        with KubeReader(cluster, timeout) as kube:
            _Resolver(kube, scope).run(named)
    except CollectorError as exc:
        scope.notes.append(f"{exc.reason}: the rest of the scope comes from alert labels only")
    return scope


def _from_labels(alerts: list[AlertFacts], scope: Scope) -> _Named:
    """The label scope (what each label names, unchecked) and what is left to resolve."""
    named = _Named()
    for alert in alerts:
        labels = {k: v for k, v in alert.labels.items() if v}
        # Scraped without honor_labels, the exporter's own namespace/pod win the plain names
        # and the subject's move to exported_*: the subject is what the alert is about.
        labels.update(
            {k[len("exported_") :]: v for k, v in labels.items() if k.startswith("exported_")}
        )
        namespace = labels.get("namespace")
        for key, values in (
            ("namespace", scope.namespaces),
            ("container", scope.containers),
            ("model_name", scope.models),
            ("job", scope.jobs),
        ):
            if labels.get(key):
                _add(values, labels[key])
        _object_labels(labels, namespace, scope, named)
        _node_labels(labels, scope, named)
    return named


def _object_labels(
    labels: dict[str, str], namespace: str | None, scope: Scope, named: _Named
) -> None:
    """pod, deployment/statefulset/daemonset/replicaset, service, job, instance."""
    kinds = {"pod": "Pod", **WORKLOAD_LABELS, "service": "Service"}
    for label, kind in kinds.items():
        if not labels.get(label):
            continue
        if kind == "Pod":
            _add(named.pods, (namespace, labels[label]))
        elif kind == "Service":
            _add(named.services, (namespace, labels[label]))
        else:
            _add(named.workloads, (kind, namespace, labels[label]))
        if namespace:
            _add(getattr(scope, SCOPE_FIELDS[kind]), Entity(kind, namespace, labels[label]))
    job = labels.get("job", "")
    exporter = bool(job and EXPORTER_JOBS.search(job))
    if job and not exporter:
        _add(named.jobs, (namespace, job))
    if labels.get("instance") and not labels.get("pod") and not exporter:
        _add(named.instances, (namespace, labels["instance"]))


def _node_labels(labels: dict[str, str], scope: Scope, named: _Named) -> None:
    """node / kubernetes_node / Hostname (DCGM) / nodename, and the GPU DCGM names on it."""
    node = next((labels[k] for k in NODE_LABELS if labels.get(k)), None)
    if not node or _is_ip(node):
        return
    _add(named.nodes, node)
    _add(scope.nodes, Entity("Node", None, node))
    if labels.get("gpu") or labels.get("UUID"):
        gpu = Gpu(node=node, index=labels.get("gpu", ""), uuid=labels.get("UUID", ""))
        _add(scope.gpus, gpu)


class _Resolver:
    """Checks each name against the cluster and follows owners, selectors and nodes."""

    def __init__(self, kube: KubeReader, scope: Scope) -> None:
        self.kube = kube
        self.scope = scope
        self.objects: dict[tuple[str, str, str], dict | None] = {}
        self.capped = False

    def run(self, named: _Named) -> None:
        for namespace, name in named.pods:
            self._named_pod(namespace, name)
        for kind, namespace, name in named.workloads:
            self._named_workload(kind, namespace, name)
        for namespace, name in named.services:
            self._named_service(namespace, name)
        for namespace, name in named.jobs:
            if (namespace, name) not in named.services:
                self._workload_by_name(namespace, name)
        for namespace, instance in named.instances:
            self._instance(namespace, instance)
        for name in named.nodes:
            self._named_node(name)
        for deployment in list(self.scope.deployments):
            self._replicasets_of(deployment)

    # --- reads that a refusal must not stop ----------------------------------------------------

    def _try(self, read: Callable[[], Any], what: str) -> Any:
        """Run a read; a 403 or 404 becomes a note and None. An outage propagates (it stops all)."""
        try:
            return read()
        except CollectorError as exc:
            if exc.retryable:
                raise
            self.scope.notes.append(f"{what}: {exc.reason}")
            return None

    def _get(self, kind: str, namespace: str, name: str) -> dict | None:
        """A cached read; None when the object does not exist (404), raising on anything else."""
        key = (kind, namespace, name)
        if key not in self.objects:
            try:
                if kind == "Pod":
                    self.objects[key] = self.kube.pod(namespace, name)
                elif kind == "Service":
                    self.objects[key] = self.kube.service(namespace, name)
                elif kind == "Node":
                    self.objects[key] = self.kube.node(name)
                else:
                    self.objects[key] = self.kube.workload(kind, namespace, name)
            except CollectorError as exc:
                if not is_not_found(exc):
                    raise
                self.objects[key] = None
        return self.objects[key]

    # --- what the labels name ------------------------------------------------------------------

    def _named_pod(self, namespace: str | None, name: str) -> None:
        if namespace is None:
            found = self._try(
                lambda: self.kube.pods(None, field_selector=f"metadata.name={name}"),
                f"pod {name}",
            )
            if found:
                self._add_pod(found[0])
            elif found is not None:
                self.scope.notes.append(f"pod {name} (no namespace label): no pod of that name")
            return
        pod = self._try(lambda: self._get("Pod", namespace, name), f"pod {namespace}/{name}")
        if pod is not None:
            self._add_pod(pod)
        elif ("Pod", namespace, name) in self.objects:  # read, and not there
            _remove(self.scope.pods, Entity("Pod", namespace, name))
            self.scope.notes.append(
                f"pod {namespace}/{name} named by an alert no longer exists (deleted or replaced)"
            )

    def _named_workload(self, kind: str, namespace: str | None, name: str) -> None:
        if namespace is None:
            self.scope.notes.append(
                f"{kind.lower()} {name} named without a namespace: not resolved"
            )
            return
        obj = self._try(
            lambda: self._get(kind, namespace, name), f"{kind.lower()} {namespace}/{name}"
        )
        if obj is not None:
            self._add_workload(obj, kind)
        elif (kind, namespace, name) in self.objects:
            _remove(getattr(self.scope, SCOPE_FIELDS[kind]), Entity(kind, namespace, name))
            self.scope.notes.append(
                f"{kind.lower()} {namespace}/{name} named by an alert does not exist"
            )

    def _workload_by_name(self, namespace: str | None, name: str) -> bool:
        """A `service`/`job` label that is a Deployment's (or StatefulSet's) name: that workload."""
        for kind in ("Deployment", "StatefulSet"):
            if namespace is None:
                found = self._try(
                    lambda k=kind: self.kube.workloads_named(k, name), f"{kind} {name}"
                )
                obj = found[0] if found else None
            else:
                obj = self._try(
                    lambda k=kind: self._get(k, namespace, name),
                    f"{kind.lower()} {namespace}/{name}",
                )
            if obj is not None:
                self._add_workload(obj, kind)
                return True
        return False

    def _named_service(self, namespace: str | None, name: str) -> None:
        matched = self._workload_by_name(namespace, name)
        if namespace is None:
            if not matched:
                self.scope.notes.append(
                    f"service {name} (no namespace label): no Deployment or StatefulSet of that name"
                )
            return
        service = self._try(
            lambda: self._get("Service", namespace, name), f"service {namespace}/{name}"
        )
        entity = Entity("Service", namespace, name)
        if service is None:
            if ("Service", namespace, name) in self.objects:
                _remove(self.scope.services, entity)
                if not matched:
                    self.scope.notes.append(
                        f"service {namespace}/{name}: no Service, Deployment or StatefulSet of that name"
                    )
            return
        selector = (service.get("spec") or {}).get("selector") or {}
        if matched or not selector:
            return
        selector_text = label_selector({"matchLabels": selector})
        pods = self._try(
            lambda: self.kube.pods(namespace, label_selector=selector_text),
            f"pods of service {namespace}/{name}",
        )
        for pod in pods or []:
            self._add_pod(pod)

    def _instance(self, namespace: str | None, instance: str) -> None:
        host = _host_of(instance)
        if not _is_ip(host):
            node = self._try(lambda: self._get("Node", "", host), f"instance {instance}")
            if node is not None:
                _add(self.scope.nodes, Entity("Node", None, host))
            elif ("Node", "", host) in self.objects:
                self.scope.notes.append(f"instance {instance}: no node named {host}")
            return
        pods = self._try(
            lambda: self.kube.pods(None, field_selector=f"status.podIP={host}"),
            f"instance {instance}",
        )
        if pods is None:
            return
        # Host-network pods share the node's IP; a pod of the alert's namespace is the better guess.
        pods.sort(key=lambda p: p["metadata"].get("namespace") != namespace)
        if pods:
            self._add_pod(pods[0])
            return
        nodes = self._try(self.kube.nodes, f"instance {instance}") or []
        for node in nodes:
            addresses = {
                a.get("address") for a in (node.get("status") or {}).get("addresses") or []
            }
            if host in addresses:
                _add(self.scope.nodes, Entity("Node", None, node["metadata"]["name"]))
                return
        self.scope.notes.append(f"instance {instance}: no pod or node has the address {host}")

    def _named_node(self, name: str) -> None:
        node = self._try(lambda: self._get("Node", "", name), f"node {name}")
        if node is None:
            if ("Node", "", name) in self.objects:  # read, and not there
                _remove(self.scope.nodes, Entity("Node", None, name))
                self.scope.notes.append(f"node {name} named by an alert does not exist")
            return
        pods = self._try(
            lambda: self.kube.pods(None, field_selector=f"spec.nodeName={name}"),
            f"pods on node {name}",
        )
        if pods is None:
            return
        # DaemonSet pods (exporters, CNI, kube-proxy) run everywhere; the workloads come first.
        pods.sort(key=lambda p: (controller_of(p) or {}).get("kind") == "DaemonSet")
        for pod in pods[:MAX_NODE_PODS]:
            self._add_pod(pod)
        if len(pods) > MAX_NODE_PODS:
            self.scope.notes.append(
                f"node {name} runs {len(pods)} pods: {MAX_NODE_PODS} kept in scope, workloads first"
            )

    # --- adding what was found -----------------------------------------------------------------

    def _add_pod(self, pod: dict) -> None:
        """A pod, its namespace, its node and its owners."""
        metadata = pod["metadata"]
        namespace = metadata.get("namespace") or "default"
        entity = Entity("Pod", namespace, metadata["name"])
        if entity not in self.scope.pods:
            if len(self.scope.pods) >= MAX_PODS:
                if not self.capped:
                    self.capped = True
                    self.scope.notes.append(f"more than {MAX_PODS} pods: the first {MAX_PODS} kept")
                return
            self.scope.pods.append(entity)
        self.objects[("Pod", namespace, metadata["name"])] = pod
        _add(self.scope.namespaces, namespace)
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            _add(self.scope.nodes, Entity("Node", None, node))
        self._add_owners(pod, namespace)

    def _add_owners(self, obj: dict, namespace: str) -> None:
        owner = controller_of(obj)
        if owner is None:
            return
        kind, name = owner.get("kind"), owner.get("name")
        if kind not in ("ReplicaSet", "Deployment", "StatefulSet", "DaemonSet"):
            return
        _add(getattr(self.scope, SCOPE_FIELDS[kind]), Entity(kind, namespace, name))
        if kind == "ReplicaSet":
            replicaset = self._try(
                lambda: self._get("ReplicaSet", namespace, name), f"replicaset {namespace}/{name}"
            )
            if replicaset is not None:
                self._add_owners(replicaset, namespace)

    def _add_workload(self, obj: dict, kind: str) -> None:
        """A workload an alert named, and its pods (through its selector)."""
        namespace = obj["metadata"].get("namespace") or "default"
        name = obj["metadata"]["name"]
        self.objects[(kind, namespace, name)] = obj
        _add(getattr(self.scope, SCOPE_FIELDS[kind]), Entity(kind, namespace, name))
        _add(self.scope.namespaces, namespace)
        if kind == "ReplicaSet":
            self._add_owners(obj, namespace)
        selector = label_selector((obj.get("spec") or {}).get("selector"))
        if not selector:
            return
        pods = self._try(
            lambda: self.kube.pods(namespace, label_selector=selector),
            f"pods of {kind.lower()} {namespace}/{name}",
        )
        for pod in pods or []:
            self._add_pod(pod)

    def _replicasets_of(self, deployment: Entity) -> None:
        """Every revision of a Deployment: its ReplicaSets, scaled down ones included."""
        namespace = deployment.namespace or "default"
        obj = self._try(
            lambda: self._get("Deployment", namespace, deployment.name),
            f"deployment {namespace}/{deployment.name}",
        )
        if obj is None:
            return
        selector = label_selector((obj.get("spec") or {}).get("selector"))
        listed = self._try(
            lambda: self.kube.replicasets(namespace, selector),
            f"replicasets of deployment {namespace}/{deployment.name}",
        )
        uid = obj["metadata"].get("uid")
        for rs in listed or []:
            owner = controller_of(rs) or {}
            if owner.get("kind") == "Deployment" and (
                owner.get("uid") == uid
                if uid and owner.get("uid")
                else owner.get("name") == deployment.name
            ):
                _add(
                    self.scope.replicasets, Entity("ReplicaSet", namespace, rs["metadata"]["name"])
                )


def _add(items: list, item: Any) -> None:
    if item not in items:
        items.append(item)


def _remove(items: list, item: Any) -> None:
    if item in items:
        items.remove(item)


def _host_of(instance: str) -> str:
    """`10.1.2.3:8000` → `10.1.2.3`; `[fd00::1]:9100` → `fd00::1`; `gpu-7:9400` → `gpu-7`."""
    if instance.startswith("["):
        return instance[1:].split("]", 1)[0]
    if instance.count(":") == 1:
        return instance.split(":", 1)[0]
    return instance


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True

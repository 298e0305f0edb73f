"""Kubernetes state around an incident: pod status, events, rollout history, nodes.

What an engineer would run first (`kubectl get pods`, `describe`, `get events`, `rollout
history`, `describe node`), read once through the official client and kept as evidence:

- `pod_status`, one per pod in scope: phase, node, conditions, and per container the state,
  restarts and how the last instance ended (OOMKilled 137, Error 1…), image and resources.
- `k8s_events`, one per workload (Deployment, StatefulSet, DaemonSet; the events of its
  ReplicaSets and pods included), per bare pod and per node: Warning events and the Normal ones
  that tell a rollout or a node's story, inside the window, merged and sorted by time.
- `rollout_history`, one per Deployment: its ReplicaSets by revision with images and
  change-cause, which one is current, and the rollouts that happened inside the window.
- `node_status`, one per node in scope or running a pod in scope: conditions, taints,
  cordon, GPUs, versions, and the pods on it.

A read that fails for one object (a pod deleted since the alert, RBAC that forbids nodes) is
reported in a `collection_note` and the rest is still collected; CollectorError is raised only
when nothing could be read, or at once when the API is unreachable or too slow (every further
request would wait as long).

`KubeReader` is the one way Vigil's collectors read Kubernetes (scope, logs, this module): JSON
answers as the API sends them (`_preload_content=False`), because the evidence should show the
API's own field names and because client 37's models reject answers a real server does send
(a null `eventTime`); no retries; `_request_timeout` on every call.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .base import ClusterSources, CollectionContext, CollectorError, Entity, EvidenceDraft, Window
from .sources import kubernetes_api_client, kubernetes_error

NAME = "kubernetes"

PAGE = 500
MAX_LISTED = 2000  # objects read from one list, across pages
MAX_EVENTS = 100  # per evidence item, the most recent kept
MAX_NODE_PODS = 100
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915")
# Normal events that matter to an incident: a rollout, a restart, an eviction, a node's health.
NORMAL_REASONS = frozenset(
    {
        "ScalingReplicaSet",
        "SuccessfulCreate",
        "SuccessfulDelete",
        "Killing",
        "Preempting",
        "Preempted",
        "Evicted",
        "BackOff",
        "Pulling",
        "Pulled",
        "TaintManagerEviction",
        "NodeNotReady",
        "NodeReady",
        "NodeNotSchedulable",
        "NodeSchedulable",
        "Rebooted",
        "RemovingNode",
        "DeletingNode",
        "RegisteredNode",
        "Starting",
        "NodeHasDiskPressure",
        "NodeHasInsufficientMemory",
        "NodeHasInsufficientPID",
        "DeploymentRollback",
        "SuccessfulRescale",
    }
)
POD_HASH_LABEL = "pod-template-hash"
OUT_OF_TIME = "out of time: stopped before reading everything (the rest was kept)"


# --- reading Kubernetes ------------------------------------------------------------------------


def open_api(cluster: ClusterSources, timeout: float) -> client.ApiClient:
    """An ApiClient making exactly one attempt per request (see sources.kubernetes_api_client)."""
    return kubernetes_api_client(cluster, timeout)


class KubeReader:
    """Reads through the official client: JSON dicts, one timeout, errors as CollectorError.

    `doing` phrases are RBAC verbs and resources ("list pods in llm"), so a 403 reads
    "Kubernetes API forbids list pods in llm (RBAC)".
    """

    def __init__(self, cluster: ClusterSources, timeout: float) -> None:
        self.timeout = timeout
        self.api = open_api(cluster, timeout)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)

    def __enter__(self) -> KubeReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.api.close()

    def call(self, method: Callable[..., Any], *args: Any, doing: str, **kwargs: Any) -> Any:
        """One request; the raw urllib3 response (or CollectorError)."""
        try:
            return method(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise kubernetes_error(exc, doing) from exc

    def json(self, method: Callable[..., Any], *args: Any, doing: str, **kwargs: Any) -> dict:
        response = self.call(method, *args, doing=doing, **kwargs)
        try:
            return json.loads(response.data)
        except ValueError as exc:
            raise CollectorError(
                f"Kubernetes API sent something that is not JSON to {doing}"
            ) from exc

    def items(
        self, method: Callable[..., Any], *args: Any, doing: str, **kwargs: Any
    ) -> list[dict]:
        """Every item of a list, page by page, up to MAX_LISTED."""
        items: list[dict] = []
        token = None
        while True:
            page = self.json(method, *args, doing=doing, limit=PAGE, _continue=token, **kwargs)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token or len(items) >= MAX_LISTED:
                return items[:MAX_LISTED]

    # The reads the collectors make.

    def pod(self, namespace: str, name: str) -> dict:
        return self.json(
            self.core.read_namespaced_pod, name, namespace, doing=f"get pod {namespace}/{name}"
        )

    def pods(self, namespace: str | None = None, **selectors: str) -> list[dict]:
        if namespace is None:
            return self.items(
                self.core.list_pod_for_all_namespaces,
                doing="list pods in all namespaces",
                **selectors,
            )
        return self.items(
            self.core.list_namespaced_pod, namespace, doing=f"list pods in {namespace}", **selectors
        )

    def node(self, name: str) -> dict:
        return self.json(self.core.read_node, name, doing=f"get node {name}")

    def nodes(self) -> list[dict]:
        return self.items(self.core.list_node, doing="list nodes")

    def workload(self, kind: str, namespace: str, name: str) -> dict:
        method = {
            "Deployment": self.apps.read_namespaced_deployment,
            "StatefulSet": self.apps.read_namespaced_stateful_set,
            "DaemonSet": self.apps.read_namespaced_daemon_set,
            "ReplicaSet": self.apps.read_namespaced_replica_set,
        }[kind]
        return self.json(method, name, namespace, doing=f"get {kind.lower()} {namespace}/{name}")

    def workloads_named(self, kind: str, name: str) -> list[dict]:
        """Deployments/StatefulSets of that name in any namespace (for alerts without one)."""
        method = {
            "Deployment": self.apps.list_deployment_for_all_namespaces,
            "StatefulSet": self.apps.list_stateful_set_for_all_namespaces,
        }[kind]
        return self.items(
            method,
            doing=f"list {kind.lower()}s in all namespaces",
            field_selector=f"metadata.name={name}",
        )

    def replicasets(self, namespace: str, label_selector: str) -> list[dict]:
        return self.items(
            self.apps.list_namespaced_replica_set,
            namespace,
            doing=f"list replicasets in {namespace}",
            label_selector=label_selector,
        )

    def service(self, namespace: str, name: str) -> dict:
        return self.json(
            self.core.read_namespaced_service,
            name,
            namespace,
            doing=f"get service {namespace}/{name}",
        )

    def events(self, namespace: str | None = None, field_selector: str = "") -> list[dict]:
        if namespace is None:
            return self.items(
                self.core.list_event_for_all_namespaces,
                doing="list events in all namespaces",
                field_selector=field_selector or None,
            )
        return self.items(
            self.core.list_namespaced_event,
            namespace,
            doing=f"list events in {namespace}",
            field_selector=field_selector or None,
        )

    def log(self, namespace: str, pod: str, container: str, **options: Any) -> str:
        previous = " (previous)" if options.get("previous") else ""
        response = self.call(
            self.core.read_namespaced_pod_log,
            pod,
            namespace,
            container=container,
            doing=f"get pods/log {namespace}/{pod} container {container}{previous}",
            **options,
        )
        return response.data.decode("utf-8", errors="replace")


def is_not_found(exc: CollectorError) -> bool:
    """Whether the API answered 404: the object does not exist (as opposed to a refusal)."""
    cause = exc.__cause__
    return isinstance(cause, ApiException) and cause.status == 404


def label_selector(selector: dict | None) -> str:
    """A LabelSelector object in the query-string syntax (`a=b,c in (x,y)`)."""
    selector = selector or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = ",".join(sorted(expression.get("values") or []))
        terms.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": f"{key}",
                "DoesNotExist": f"!{key}",
            }.get(operator, "")
        )
    return ",".join(t for t in terms if t)


def controller_of(obj: dict) -> dict | None:
    """The ownerReference with `controller: true` (the first one when none says so)."""
    references = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next(
        (r for r in references if r.get("controller")), references[0] if references else None
    )


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def in_window(value: str | None, window: Window) -> bool:
    moment = parse_time(value)
    return moment is not None and window.start <= moment <= window.end


# --- the collector -----------------------------------------------------------------------------


def collect(ctx: CollectionContext) -> list[EvidenceDraft]:
    """Pod status, events, rollout history and node status for the scope; see the module doc."""
    with KubeReader(ctx.cluster, ctx.timeout) as kube:
        return _Collection(kube, ctx).run()


@dataclass
class _Collection:
    kube: KubeReader
    ctx: CollectionContext
    errors: list[CollectorError] = field(default_factory=list)
    pods: dict[tuple[str, str], dict] = field(default_factory=dict)
    replicasets: dict[tuple[str, str], dict] = field(default_factory=dict)
    deployments: dict[tuple[str, str], dict] = field(default_factory=dict)

    def run(self) -> list[EvidenceDraft]:
        drafts: list[EvidenceDraft] = []
        outage: CollectorError | None = None
        sections = (self._read_pods, self._rollouts, self._pod_status, self._events, self._nodes)
        for section in sections:
            try:
                drafts.extend(section())
            except CollectorError as exc:  # only an outage gets here: see _guarded
                outage = exc
                break
        failures = self.errors + ([outage] if outage else [])
        if failures and not drafts:
            raise outage or failures[0]  # nothing read at all: the collector failed, say why
        if failures:
            drafts.append(collection_note("kubernetes", [e.reason for e in failures]))
        return drafts

    def _guarded(self, read: Callable[[], Any]) -> Any:
        """One read: a refusal (403, 404…) is noted and skipped; an outage stops the collector,
        and so does the runner's deadline (what was read by then is kept)."""
        if self.ctx.out_of_time():
            raise CollectorError(OUT_OF_TIME, retryable=True)
        try:
            return read()
        except CollectorError as exc:
            if exc.retryable:
                raise
            self.errors.append(exc)
            return None

    # pods

    def _read_pods(self) -> list[EvidenceDraft]:
        for entity in self.ctx.scope.pods:
            namespace = entity.namespace or "default"
            pod = self._guarded(lambda ns=namespace, e=entity: self.kube.pod(ns, e.name))
            if pod is not None:
                self.pods[(namespace, entity.name)] = pod
        return []

    def _pod_status(self) -> list[EvidenceDraft]:
        drafts = []
        for (namespace, name), pod in self.pods.items():
            data = pod_summary(pod)
            data["workload"] = self._workload_of(pod)
            drafts.append(
                EvidenceDraft(
                    kind="pod_status",
                    title=_pod_title(data),
                    entity=Entity("Pod", namespace, name),
                    data=data,
                )
            )
        return drafts

    def _workload_of(self, pod: dict) -> dict | None:
        """The Deployment/StatefulSet/DaemonSet/Job behind a pod, via its ReplicaSet if any."""
        owner = controller_of(pod)
        if owner is None:
            return None
        namespace = pod["metadata"].get("namespace") or "default"
        if owner.get("kind") != "ReplicaSet":
            return {"kind": owner.get("kind"), "namespace": namespace, "name": owner.get("name")}
        replicaset = self.replicasets.get((namespace, owner["name"]))
        if replicaset is None:
            replicaset = self._guarded(
                lambda: self.kube.workload("ReplicaSet", namespace, owner["name"])
            )
            if replicaset is None:
                return {"kind": "ReplicaSet", "namespace": namespace, "name": owner["name"]}
            self.replicasets[(namespace, owner["name"])] = replicaset
        parent = controller_of(replicaset)
        if parent is None:
            return {"kind": "ReplicaSet", "namespace": namespace, "name": owner["name"]}
        return {"kind": parent.get("kind"), "namespace": namespace, "name": parent.get("name")}

    # rollouts

    def _rollouts(self) -> list[EvidenceDraft]:
        drafts = []
        for entity in self.ctx.scope.deployments:
            namespace = entity.namespace or "default"
            deployment = self._guarded(
                lambda e=entity, ns=namespace: self.kube.workload("Deployment", ns, e.name)
            )
            if deployment is None:
                continue
            self.deployments[(namespace, entity.name)] = deployment
            selector = label_selector((deployment.get("spec") or {}).get("selector"))
            listed = self._guarded(
                lambda ns=namespace, s=selector: self.kube.replicasets(ns, s) if s else []
            )
            if listed is None:
                continue
            uid = deployment["metadata"].get("uid")
            owned = [
                rs
                for rs in listed
                if any(
                    ref.get("kind") == "Deployment"
                    and (
                        ref.get("uid") == uid
                        if uid and ref.get("uid")
                        else ref.get("name") == entity.name
                    )
                    for ref in rs["metadata"].get("ownerReferences") or []
                )
            ]
            for rs in owned:
                self.replicasets[(namespace, rs["metadata"]["name"])] = rs
            data = rollout_history(deployment, owned, self.ctx.window)
            drafts.append(
                EvidenceDraft(
                    kind="rollout_history",
                    title=_rollout_title(data),
                    entity=Entity("Deployment", namespace, entity.name),
                    data=data,
                )
            )
        return drafts

    # events

    def _events(self) -> list[EvidenceDraft]:
        groups = _EventGroups(self)
        for namespace in sorted(groups.namespaces()):
            for event in self._guarded(lambda ns=namespace: self.kube.events(ns)) or []:
                groups.add(event)
        for node in self._node_names():
            selector = f"involvedObject.kind=Node,involvedObject.name={node}"
            listed = self._guarded(lambda s=selector: self.kube.events(None, s))
            for event in listed or []:
                groups.add(event)
        return groups.drafts(self.ctx.window)

    # nodes

    def _node_names(self) -> list[str]:
        names = [e.name for e in self.ctx.scope.nodes]
        for pod in self.pods.values():
            node = (pod.get("spec") or {}).get("nodeName")
            if node and node not in names:
                names.append(node)
        return names

    def _nodes(self) -> list[EvidenceDraft]:
        drafts = []
        for name in self._node_names():
            node = self._guarded(lambda n=name: self.kube.node(n))
            if node is None:
                continue
            pods = self._guarded(
                lambda n=name: self.kube.pods(None, field_selector=f"spec.nodeName={n}")
            )
            data = node_summary(node, pods)
            drafts.append(
                EvidenceDraft(
                    kind="node_status",
                    title=_node_title(data),
                    entity=Entity("Node", None, name),
                    data=data,
                )
            )
        return drafts


def collection_note(source: str, problems: list[str]) -> EvidenceDraft:
    """What could not be read, so an engineer knows what the evidence is missing."""
    unique = list(dict.fromkeys(problems))
    return EvidenceDraft(
        kind="collection_note",
        title=f"{source}: {len(unique)} read(s) failed: {unique[0]}",
        data={"source": source, "problems": unique},
    )


# --- pod status --------------------------------------------------------------------------------


def pod_summary(pod: dict) -> dict[str, Any]:
    """What `kubectl describe pod` shows first, in the API's own field names."""
    metadata, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    owner = controller_of(pod)
    specs = {
        c["name"]: c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
    }
    return {
        "namespace": metadata.get("namespace"),
        "pod": metadata["name"],
        "phase": status.get("phase"),
        "reason": status.get("reason"),
        "message": status.get("message"),
        "node": spec.get("nodeName"),
        "podIP": status.get("podIP"),
        "startTime": status.get("startTime"),
        "createdAt": metadata.get("creationTimestamp"),
        "deletionTimestamp": metadata.get("deletionTimestamp"),
        "owner": {"kind": owner.get("kind"), "name": owner.get("name")} if owner else None,
        "qosClass": status.get("qosClass"),
        "conditions": [
            _pick(c, "type", "status", "reason", "message", "lastTransitionTime")
            for c in status.get("conditions") or []
        ],
        "containers": [
            _container(s, specs.get(s.get("name"), {}))
            for s in status.get("containerStatuses") or []
        ],
        "initContainers": [
            _container(s, specs.get(s.get("name"), {}))
            for s in status.get("initContainerStatuses") or []
        ],
    }


def _container(status: dict, spec: dict) -> dict[str, Any]:
    state = {
        name: _pick(
            value or {}, "reason", "message", "exitCode", "signal", "startedAt", "finishedAt"
        )
        for name, value in (status.get("state") or {}).items()
        if value is not None
    }
    last = {
        name: _pick(
            value or {}, "reason", "message", "exitCode", "signal", "startedAt", "finishedAt"
        )
        for name, value in (status.get("lastState") or {}).items()
        if value is not None
    }
    return {
        "name": status.get("name"),
        "image": status.get("image") or spec.get("image"),
        "imageID": status.get("imageID") or None,
        "ready": bool(status.get("ready")),
        "started": status.get("started"),
        "restartCount": status.get("restartCount", 0),
        "state": state,
        "lastState": last,
        "resources": spec.get("resources") or {},
    }


def _pick(source: dict, *keys: str) -> dict[str, Any]:
    return {k: source[k] for k in keys if source.get(k) is not None}


def _pod_title(data: dict) -> str:
    """`Pod ns/x: Running, terminating; Ready=False (ContainersNotReady); vllm: CrashLoopBackOff…`"""
    head = f"Pod {data['namespace']}/{data['pod']}: {data['phase'] or 'no phase'}"
    if data.get("reason"):
        head += f" ({data['reason']})"
    if data.get("deletionTimestamp"):
        head += ", terminating"
    parts = [head]
    for condition in data["conditions"]:
        if condition.get("status") != "True" and condition.get("type") != "DisruptionTarget":
            reason = f" ({condition['reason']})" if condition.get("reason") else ""
            parts.append(f"{condition['type']}={condition.get('status')}{reason}")
    for container in data["containers"]:
        notes = [] if container["ready"] else ["not ready"]
        waiting = container["state"].get("waiting") or {}
        terminated = container["state"].get("terminated") or {}
        if waiting.get("reason"):
            notes.append(waiting["reason"])
        if terminated.get("reason"):
            notes.append(f"terminated {terminated['reason']}")
        if container["restartCount"]:
            notes.append(f"{container['restartCount']} restarts")
        last = container["lastState"].get("terminated") or {}
        if last.get("reason") or last.get("exitCode") is not None:
            notes.append(f"last exit {last.get('reason', '')} {last.get('exitCode', '')}".strip())
        if notes:
            parts.append(f"{container['name']}: {', '.join(notes)}")
    if data.get("node"):
        parts.append(f"on {data['node']}")
    return "; ".join(parts)[:300]


# --- rollout history ---------------------------------------------------------------------------


def rollout_history(deployment: dict, replicasets: list[dict], window: Window) -> dict[str, Any]:
    """The Deployment's revisions (its ReplicaSets), newest first, and what changed in the window."""
    metadata, spec, status = (
        deployment["metadata"],
        deployment.get("spec") or {},
        deployment.get("status") or {},
    )
    revision = _int((metadata.get("annotations") or {}).get("deployment.kubernetes.io/revision"))
    revisions = sorted(
        (_revision(rs, window) for rs in replicasets),
        key=lambda r: (r["revision"] is not None, r["revision"] or 0, r["createdAt"] or ""),
        reverse=True,
    )
    current = next(
        (r for r in revisions if revision is not None and r["revision"] == revision), None
    )
    current = current or _matching_template(deployment, replicasets, revisions)
    for item in revisions:
        item["current"] = item is current
    templates = {
        rs["metadata"]["name"]: (rs.get("spec") or {}).get("template") or {} for rs in replicasets
    }
    for newer, older in zip(revisions, revisions[1:], strict=False):
        newer["changesFromPrevious"] = template_changes(
            templates[older["name"]], templates[newer["name"]]
        )
    return {
        "namespace": metadata.get("namespace"),
        "deployment": metadata["name"],
        "revision": revision,
        "generation": metadata.get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "paused": bool(spec.get("paused")),
        "strategy": (spec.get("strategy") or {}).get("type"),
        "images": _images((spec.get("template") or {}).get("spec")),
        "replicas": spec.get("replicas"),
        "status": _pick(
            status,
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ),
        "conditions": [
            _pick(c, "type", "status", "reason", "message", "lastUpdateTime", "lastTransitionTime")
            for c in status.get("conditions") or []
        ],
        "replicaSets": revisions,
        "rolloutsInWindow": _rollouts_in_window(revisions, deployment, window),
    }


def _revision(rs: dict, window: Window) -> dict[str, Any]:
    metadata, spec, status = rs["metadata"], rs.get("spec") or {}, rs.get("status") or {}
    annotations = metadata.get("annotations") or {}
    return {
        "name": metadata["name"],
        "revision": _int(annotations.get("deployment.kubernetes.io/revision")),
        "images": _images((spec.get("template") or {}).get("spec")),
        "changeCause": annotations.get("kubernetes.io/change-cause"),
        "createdAt": metadata.get("creationTimestamp"),
        "createdInWindow": in_window(metadata.get("creationTimestamp"), window),
        "podTemplateHash": (metadata.get("labels") or {}).get(POD_HASH_LABEL),
        "replicas": spec.get("replicas", 0),
        "readyReplicas": status.get("readyReplicas", 0),
        "availableReplicas": status.get("availableReplicas", 0),
    }


def template_changes(old: dict, new: dict) -> list[str]:
    """What a revision changed in the pod template, container by container, in kubectl's words.

    Two revisions with the same image can still differ (an env flag, args, resources); a human
    looking for "what changed?" needs those lines, not only the image list.
    """
    old_containers = {c.get("name"): c for c in ((old.get("spec") or {}).get("containers") or [])}
    changes = []
    for container in (new.get("spec") or {}).get("containers") or []:
        name = container.get("name")
        before = old_containers.get(name)
        if before is None:
            changes.append(f"container {name} added")
            continue
        for key in ("image", "command", "args", "resources"):
            if before.get(key) != container.get(key):
                changes.append(f"{name}.{key}: {before.get(key)!r} → {container.get(key)!r}")
        changes.extend(_env_changes(name, before.get("env") or [], container.get("env") or []))
    removed = set(old_containers) - {
        c.get("name") for c in (new.get("spec") or {}).get("containers") or []
    }
    changes.extend(f"container {name} removed" for name in sorted(removed, key=str))
    return changes[:30]


def _env_changes(container: str, before: list[dict], after: list[dict]) -> list[str]:
    """Env vars by name; values from Secrets/ConfigMaps are shown as their reference, never read."""

    def value(item: dict) -> str:
        if "valueFrom" in item:
            return f"<from {sorted(item['valueFrom'])[0]}>"
        return repr(item.get("value", ""))

    old = {e.get("name"): value(e) for e in before}
    new = {e.get("name"): value(e) for e in after}
    lines = []
    for name in sorted(set(old) | set(new), key=str):
        if old.get(name) != new.get(name):
            lines.append(
                f"{container}.env.{name}: {old.get(name, '(unset)')} → {new.get(name, '(unset)')}"
            )
    return lines


def _matching_template(
    deployment: dict, replicasets: list[dict], revisions: list[dict]
) -> dict | None:
    """The ReplicaSet whose pod template is the Deployment's (its hash label aside)."""
    wanted = _template_without_hash((deployment.get("spec") or {}).get("template"))
    for rs in replicasets:
        if _template_without_hash((rs.get("spec") or {}).get("template")) == wanted:
            return next(r for r in revisions if r["name"] == rs["metadata"]["name"])
    return None


def _template_without_hash(template: dict | None) -> Any:
    template = copy.deepcopy(template or {})
    (template.get("metadata") or {}).get("labels", {}).pop(POD_HASH_LABEL, None)
    return template


def _rollouts_in_window(revisions: list[dict], deployment: dict, window: Window) -> list[dict]:
    """Revisions that started inside the window, each with the one it replaced.

    A new ReplicaSet's creation time is its rollout time. A rollback reuses an old ReplicaSet,
    so for the current one the Deployment's Progressing condition (last updated when the
    rollout started or finished) is the better clock when the ReplicaSet is old.
    """
    found = []
    ordered = [r for r in revisions if r["revision"] is not None]
    for index, item in enumerate(ordered):
        at = item["createdAt"] if item["createdInWindow"] else None
        if at is None and item.get("current"):
            at = _progressing_change(deployment, window)
        if at is None:
            continue
        previous = ordered[index + 1] if index + 1 < len(ordered) else None
        found.append(
            {
                "revision": item["revision"],
                "replicaSet": item["name"],
                "at": at,
                "images": item["images"],
                "previousRevision": previous["revision"] if previous else None,
                "previousImages": previous["images"] if previous else None,
            }
        )
    return found


def _progressing_change(deployment: dict, window: Window) -> str | None:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") in (
            "ReplicaSetUpdated",
            "NewReplicaSetCreated",
            "FoundNewReplicaSet",
        ):
            for key in ("lastTransitionTime", "lastUpdateTime"):
                if in_window(condition.get(key), window):
                    return condition[key]
    return None


def _images(pod_spec: dict | None) -> list[str]:
    return [c.get("image", "") for c in (pod_spec or {}).get("containers") or []]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _rollout_title(data: dict) -> str:
    name = f"Deployment {data['namespace']}/{data['deployment']}"
    current = next((r for r in data["replicaSets"] if r["current"]), None)
    head = f"{name}: revision {data['revision']}"
    if current:
        head += f" ({', '.join(current['images'])})"
    if not data["rolloutsInWindow"]:
        return f"{head}; no rollout in the window"
    latest = data["rolloutsInWindow"][0]
    text = f"{head}; revision {latest['revision']} rolled out at {latest['at']}, inside the window"
    if latest["previousRevision"] is not None:
        text += f", replacing revision {latest['previousRevision']} ({', '.join(latest['previousImages'])})"
    return text


# --- events ------------------------------------------------------------------------------------


class _EventGroups:
    """Events of the objects in scope, grouped by the workload, bare pod or node they concern."""

    def __init__(self, collection: _Collection) -> None:
        self.collection = collection
        scope = collection.ctx.scope
        self.roots: dict[tuple[str, str | None, str], Entity] = {}
        for entity in scope.workloads() + scope.services:
            self.roots[(entity.kind, entity.namespace, entity.name)] = entity
        for (namespace, name), rs in collection.replicasets.items():
            self.roots[("ReplicaSet", namespace, name)] = self._root_of(rs, "ReplicaSet")
        for entity in scope.replicasets:
            self.roots.setdefault(
                (entity.kind, entity.namespace, entity.name), self._owner_root(entity)
            )
        for (namespace, name), pod in collection.pods.items():
            self.roots[("Pod", namespace, name)] = self._root_of(pod, "Pod")
        for entity in scope.pods:
            self.roots.setdefault(("Pod", entity.namespace, entity.name), entity)
        self.events: dict[Entity, dict[tuple, dict]] = {}
        self.seen: set[str] = set()  # Event uids: a node's events may be listed twice

    def _owner_root(self, entity: Entity) -> Entity:
        owner = self.collection.replicasets.get((entity.namespace or "default", entity.name))
        return self._root_of(owner, "ReplicaSet") if owner else entity

    def _root_of(self, obj: dict, kind: str) -> Entity:
        namespace = obj["metadata"].get("namespace")
        entity = Entity(kind, namespace, obj["metadata"]["name"])
        owner = controller_of(obj)
        if owner is None:
            return entity
        if owner.get("kind") == "ReplicaSet":
            rs = self.collection.replicasets.get((namespace or "default", owner.get("name")))
            parent = controller_of(rs) if rs else None
            if parent is not None:
                return Entity(parent.get("kind", "Deployment"), namespace, parent.get("name"))
            return Entity("ReplicaSet", namespace, owner.get("name"))
        if owner.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            return Entity(owner["kind"], namespace, owner.get("name"))
        return entity

    def namespaces(self) -> set[str]:
        return {ns for (_, ns, _) in self.roots if ns}

    def _root_for(self, involved: dict) -> Entity | None:
        kind, name = involved.get("kind"), involved.get("name")
        namespace = involved.get("namespace") or None
        if kind == "Node":
            return Entity("Node", None, name)
        root = self.roots.get((kind, namespace, name))
        if root is not None or kind != "Pod":
            return root
        # A pod gone since (replaced in a rollout, evicted): recognise it by its owner's name.
        for (root_kind, root_ns, root_name), entity in self.roots.items():
            if root_ns != namespace or root_kind not in ("ReplicaSet", "StatefulSet", "DaemonSet"):
                continue
            suffix = name[len(root_name) + 1 :] if name.startswith(f"{root_name}-") else None
            if suffix and (suffix.isdigit() if root_kind == "StatefulSet" else len(suffix) == 5):
                return entity
        return None

    def add(self, event: dict) -> None:
        kind = event.get("type") or "Normal"
        if kind != "Warning" and event.get("reason") not in NORMAL_REASONS:
            return
        uid = (event.get("metadata") or {}).get("uid")
        if uid:
            if uid in self.seen:
                return
            self.seen.add(uid)
        involved = event.get("involvedObject") or {}
        root = self._root_for(involved)
        if root is None:
            return
        item = _event_item(event)
        key = (
            item["kind"],
            item["namespace"],
            item["name"],
            item["type"],
            item["reason"],
            item["message"],
        )
        merged = self.events.setdefault(root, {})
        if key in merged:
            _merge(merged[key], item)
        else:
            merged[key] = item

    def drafts(self, window: Window) -> list[EvidenceDraft]:
        drafts = []
        for root, merged in sorted(self.events.items(), key=lambda item: _entity_key(item[0])):
            events = [e for e in merged.values() if _event_in_window(e, window)]
            if not events:
                continue
            events.sort(key=lambda e: (e["last"] or e["first"] or "", e["first"] or ""))
            kept = events[-MAX_EVENTS:]
            warnings = sum(1 for e in kept if e["type"] == "Warning")
            reasons = ", ".join(dict.fromkeys(e["reason"] for e in reversed(kept)))
            drafts.append(
                EvidenceDraft(
                    kind="k8s_events",
                    title=f"{len(kept)} events for {root} ({warnings} warnings): {reasons}"[:300],
                    entity=root,
                    data={
                        "object": root.as_dict(),
                        "events": kept,
                        "truncated": len(events) > len(kept),
                    },
                )
            )
        return drafts


def _entity_key(entity: Entity) -> tuple[str, str, str]:
    return entity.kind, entity.namespace or "", entity.name


def _event_item(event: dict) -> dict[str, Any]:
    involved = event.get("involvedObject") or {}
    metadata = event.get("metadata") or {}
    series = event.get("series") or {}
    first = (
        event.get("firstTimestamp") or event.get("eventTime") or metadata.get("creationTimestamp")
    )
    last = (
        series.get("lastObservedTime")
        or event.get("lastTimestamp")
        or event.get("eventTime")
        or metadata.get("creationTimestamp")
    )
    source = event.get("source") or {}
    return {
        "kind": involved.get("kind"),
        "namespace": involved.get("namespace") or None,
        "name": involved.get("name"),
        "fieldPath": involved.get("fieldPath"),
        "type": event.get("type") or "Normal",
        "reason": event.get("reason") or "",
        "message": (event.get("message") or "").strip(),
        "count": max(int(series.get("count") or event.get("count") or 1), 1),
        "first": _normal_time(first),
        "last": _normal_time(last),
        "source": source.get("component") or event.get("reportingComponent") or None,
        "host": source.get("host") or None,
    }


def _normal_time(value: str | None) -> str | None:
    moment = parse_time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _merge(into: dict, item: dict) -> None:
    """The same event recorded twice (two Event objects): one entry, counts added."""
    into["count"] += item["count"]
    firsts = [t for t in (into["first"], item["first"]) if t]
    lasts = [t for t in (into["last"], item["last"]) if t]
    into["first"] = min(firsts) if firsts else None
    into["last"] = max(lasts) if lasts else None


def _event_in_window(event: dict, window: Window) -> bool:
    last = parse_time(event["last"] or event["first"])
    first = parse_time(event["first"] or event["last"])
    if last is None:
        return True  # no time at all: keep it, the engineer can judge
    return last >= window.start and (first is None or first <= window.end)


# --- nodes -------------------------------------------------------------------------------------


def node_summary(node: dict, pods: list[dict] | None) -> dict[str, Any]:
    """What `kubectl describe node` shows that matters in an incident."""
    metadata, spec, status = node["metadata"], node.get("spec") or {}, node.get("status") or {}
    labels = metadata.get("labels") or {}
    conditions = [
        _pick(c, "type", "status", "reason", "message", "lastHeartbeatTime", "lastTransitionTime")
        for c in status.get("conditions") or []
    ]
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
    capacity, allocatable = status.get("capacity") or {}, status.get("allocatable") or {}
    gpus = {
        resource: {"capacity": capacity.get(resource), "allocatable": allocatable.get(resource)}
        for resource in GPU_RESOURCES
        if resource in capacity or resource in allocatable
    }
    info = status.get("nodeInfo") or {}
    summary = {
        "node": metadata["name"],
        "ready": ready,
        "conditions": conditions,
        "unschedulable": bool(spec.get("unschedulable")),
        "taints": [
            _pick(t, "key", "value", "effect", "timeAdded") for t in spec.get("taints") or []
        ],
        "gpus": gpus,
        "gpuProduct": labels.get("nvidia.com/gpu.product"),
        "instanceType": labels.get("node.kubernetes.io/instance-type"),
        "zone": labels.get("topology.kubernetes.io/zone"),
        "allocatable": _pick(allocatable, "cpu", "memory", "pods"),
        "kubeletVersion": info.get("kubeletVersion"),
        "containerRuntimeVersion": info.get("containerRuntimeVersion"),
        "kernelVersion": info.get("kernelVersion"),
        "osImage": info.get("osImage"),
        "addresses": [
            a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"
        ],
        "pods": None if pods is None else [_node_pod(p) for p in pods[:MAX_NODE_PODS]],
        "podsTruncated": bool(pods and len(pods) > MAX_NODE_PODS),
    }
    return summary


def _node_pod(pod: dict) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    owner = controller_of(pod)
    return {
        "namespace": pod["metadata"].get("namespace"),
        "name": pod["metadata"]["name"],
        "phase": (pod.get("status") or {}).get("phase"),
        "reason": (pod.get("status") or {}).get("reason"),
        "ready": f"{sum(1 for s in statuses if s.get('ready'))}/{len(statuses)}",
        "restarts": sum(s.get("restartCount", 0) for s in statuses),
        "owner": f"{owner.get('kind')}/{owner.get('name')}" if owner else None,
        "deleting": bool(pod["metadata"].get("deletionTimestamp")),
    }


def _node_title(data: dict) -> str:
    parts = [f"Node {data['node']}: Ready={data['ready']}"]
    ready = next((c for c in data["conditions"] if c.get("type") == "Ready"), None)
    if ready and ready.get("status") != "True":
        parts[0] += f" ({ready.get('reason', '')} since {ready.get('lastTransitionTime', '?')})"
    pressure = [
        c["type"]
        for c in data["conditions"]
        if c.get("type") != "Ready" and c.get("status") == "True"
    ]
    if pressure:
        parts.append(", ".join(pressure))
    if data["unschedulable"]:
        parts.append("cordoned")
    if data["taints"]:
        parts.append(
            "taints " + ", ".join(f"{t.get('key')}:{t.get('effect')}" for t in data["taints"])
        )
    for resource, counts in data["gpus"].items():
        parts.append(f"{resource} {counts['allocatable']}/{counts['capacity']} allocatable")
    if data["pods"] is not None:
        parts.append(f"{len(data['pods'])} pods")
    return "; ".join(parts)

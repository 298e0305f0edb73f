"""What the Kubernetes stand-in serves: its resource table and objects completed as an API server would.

A scenario writes objects the way a person reads `kubectl get -o yaml`: the fields that tell the
story, nothing else. A real API server always sends more (uids, resourceVersions, defaulted spec
fields, every container status field), and the official client (`kubernetes` 37, pydantic v2)
refuses an answer that lacks a field its OpenAPI schema marks required. `complete_objects` fills
those fields, deriving them from the rest of the world where it can (a ReplicaSet's
`status.replicas` from the pods it owns, a Node's InternalIP from its pods' `hostIP`) and otherwise
with the value a real cluster would most likely show. `DEFAULTED_FIELDS` lists every one.

It also converts core/v1 Events to events.k8s.io/v1, renders times, and parses label and field
selectors, so that `replay.kube` only routes requests and applies writes.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SERVER_VERSION = {
    "major": "1",
    "minor": "36",
    "emulationMajor": "1",
    "emulationMinor": "36",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "35",
    "gitVersion": "v1.36.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-04-22T00:00:00Z",
    "goVersion": "go1.25.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# Every field `complete_objects` may fill, for the documentation and the report of a replay.
DEFAULTED_FIELDS = (
    "metadata.namespace (namespaced kinds): default",
    "metadata.uid: a UUID derived from kind, namespace and name (stable across replays)",
    "metadata.resourceVersion: a counter shared by all objects, as etcd's revision",
    "metadata.creationTimestamp: Event first/last/eventTime, Pod status.startTime, else load time",
    "metadata.generation: 1 (Deployment, ReplicaSet, StatefulSet, DaemonSet, PodDisruptionBudget)",
    "metadata.labels/annotations values: coerced to strings",
    "resource quantities (limits, requests, capacity, allocatable): numbers coerced to strings",
    "conditions[].status: booleans coerced to 'True'/'False'",
    "Pod spec.restartPolicy Always, terminationGracePeriodSeconds 30, schedulerName, dnsPolicy, serviceAccountName",
    "Pod status.phase: Running when every container runs, else Pending",
    "Pod status.qosClass: computed from container resources",
    "Pod status.podIPs/hostIPs: from podIP/hostIP",
    "containerStatuses[].name (single container), image (from spec), imageID '', restartCount 0, "
    "started and ready (running and the pod not unready), lastState {}",
    "containerStatuses[].state/lastState.terminated.exitCode: 137 OOMKilled, 0 Completed, else 1",
    "Node status.nodeInfo: every required field (linux/amd64, containerd, kubelet = server version)",
    "Node status.addresses: InternalIP from its pods' hostIP, Hostname = name",
    "Node status.daemonEndpoints: kubelet port 10250",
    "Node status.capacity/allocatable: each from the other when only one is given",
    "Node status.conditions: Ready True (and no pressure) when none are given",
    "Event count 1, type Normal, source {}, eventTime null, first/lastTimestamp "
    "from each other or eventTime, reportingComponent/Instance from source",
    "events.k8s.io Event eventTime: from eventTime, firstTimestamp, lastTimestamp or creation "
    "(a real server may send null, which client 37 cannot parse)",
    "Deployment spec.replicas 1, strategy RollingUpdate 25%/25%, revisionHistoryLimit 10, "
    "progressDeadlineSeconds 600",
    "ReplicaSet/StatefulSet spec.replicas 1; status.replicas: pods they own",
    "DaemonSet status counts: from pods they own",
    "Service spec.type ClusterIP, sessionAffinity None, ports[].protocol TCP, targetPort = port, "
    "status.loadBalancer {}",
    "Namespace objects for default, kube-system, kube-public, kube-node-lease and every namespace used",
)


# --- the resource table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """One REST resource the stand-in serves (a row of `/api/v1` or `/apis/<group>/<version>`)."""

    plural: str
    kind: str
    group: str
    version: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    # Field selector labels besides metadata.name and metadata.namespace (what the real server
    # registers for the kind; anything else is a 400, as there).
    field_labels: tuple[str, ...] = ()
    # Subresources: name -> (group, version, kind, verbs) as discovery lists them.
    subresources: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = ()
    # The stored kind this resource is a view of (events.k8s.io Events are core Events converted).
    view_of: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`pods`, `deployments.apps`: how the API server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def stored_kind(self) -> str:
        return self.view_of or self.kind


_SCALE = ("scale", "autoscaling", "v1", "Scale", ("get", "patch"))
_READ = ("get", "list")
_READ_PATCH = ("get", "list", "patch")
_REFERENCE = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")

RESOURCES: tuple[Resource, ...] = (
    Resource("namespaces", "Namespace", "", "v1", False, _READ, ("ns",), ("status.phase",)),
    Resource("nodes", "Node", "", "v1", False, _READ_PATCH, ("no",), ("spec.unschedulable",)),
    Resource(
        "pods",
        "Pod",
        "",
        "v1",
        namespaced=True,
        verbs=("delete", "get", "list"),
        short_names=("po",),
        field_labels=(
            *("spec.nodeName", "spec.restartPolicy", "spec.schedulerName"),
            *("spec.serviceAccountName", "spec.hostNetwork"),
            *("status.phase", "status.podIP", "status.nominatedNodeName"),
        ),
        subresources=(
            ("log", "", "v1", "Pod", ("get",)),
            ("eviction", "policy", "v1", "Eviction", ("create",)),
        ),
    ),
    Resource(
        "events",
        "Event",
        "",
        "v1",
        namespaced=True,
        verbs=_READ,
        short_names=("ev",),
        field_labels=(
            *(f"involvedObject.{f}" for f in _REFERENCE),
            *("reason", "type", "reportingComponent", "source"),
        ),
    ),
    Resource(
        "services", "Service", "", "v1", True, _READ, ("svc",), ("spec.clusterIP", "spec.type")
    ),
    Resource(
        "deployments", "Deployment", "apps", "v1", True, _READ_PATCH, ("deploy",), (), (_SCALE,)
    ),
    Resource(
        "replicasets",
        "ReplicaSet",
        "apps",
        "v1",
        namespaced=True,
        verbs=_READ_PATCH,
        short_names=("rs",),
        field_labels=("status.replicas",),
        subresources=(_SCALE,),
    ),
    Resource(
        "statefulsets", "StatefulSet", "apps", "v1", True, _READ_PATCH, ("sts",), (), (_SCALE,)
    ),
    Resource("daemonsets", "DaemonSet", "apps", "v1", True, _READ_PATCH, ("ds",)),
    Resource(
        "events",
        "Event",
        "events.k8s.io",
        "v1",
        namespaced=True,
        verbs=_READ,
        short_names=("ev",),
        field_labels=(
            *(f"regarding.{f}" for f in _REFERENCE),
            *("reason", "type", "reportingController"),
        ),
        view_of="Event",
    ),
    Resource("poddisruptionbudgets", "PodDisruptionBudget", "policy", "v1", True, _READ, ("pdb",)),
)

# The resource that stores each kind a scenario may contain.
STORED: dict[str, Resource] = {r.kind: r for r in RESOURCES if r.view_of is None}
GROUP_VERSIONS: dict[str, tuple[str, ...]] = {
    "": ("v1",),
    "apps": ("v1",),
    "events.k8s.io": ("v1",),
    "policy": ("v1",),
}
_GENERATION_KINDS = frozenset(
    {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "PodDisruptionBudget"}
)
_QUANTITY_MAPS = frozenset(
    {"limits", "requests", "capacity", "allocatable", "allocatedResources", "hard", "used"}
)
_MICRO_TIME_FIELDS = frozenset({"eventTime", "lastObservedTime", "renewTime", "acquireTime"})


def has_generation(kind: str) -> bool:
    """Whether the API server keeps `metadata.generation` (bumped on spec changes) for the kind."""
    return kind in _GENERATION_KINDS


def find_resource(group: str, version: str, plural: str) -> Resource | None:
    return next(
        (r for r in RESOURCES if (r.group, r.version, r.plural) == (group, version, plural)), None
    )


def stored_resource(kind_or_plural: str) -> Resource:
    """The stored resource for `Pod`, `pod`, `pods` or `deployments.apps`; KeyError if none."""
    wanted = kind_or_plural.lower().split(".", 1)[0]
    for resource in STORED.values():
        if wanted in (resource.kind.lower(), resource.plural, *resource.short_names):
            return resource
    raise KeyError(f"the Kubernetes stand-in serves no kind {kind_or_plural!r}")


# --- times ---------------------------------------------------------------------------------------


def rfc3339(moment: datetime, *, micro: bool = False) -> str:
    """`metav1.Time` (seconds) or `metav1.MicroTime` (microseconds), in UTC with a `Z`."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(moment: datetime) -> str:
    """The kubelet's log timestamp layout (`2006-01-02T15:04:05.000000000Z07:00`): nine digits."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


def parse_time(value: str | datetime) -> datetime:
    """An RFC 3339 string (or a datetime) as an aware UTC datetime; naive means UTC."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def jsonable(value: Any, key: str = "") -> Any:
    """A deep copy with datetimes rendered as the API server renders them; all else as is."""
    if isinstance(value, dict):
        return {k: jsonable(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, key) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value, micro=key in _MICRO_TIME_FIELDS)
    return value


# --- completing the objects of a scenario --------------------------------------------------------


@dataclass
class _World:
    """What the defaults of one object may look at: the others, and the load time."""

    now: datetime
    objects: list[dict]

    def of_kind(self, kind: str) -> Iterable[dict]:
        return (o for o in self.objects if o["kind"] == kind)

    def owned_pods(self, owner: dict) -> list[dict]:
        uid = owner["metadata"]["uid"]
        return [
            p
            for p in self.of_kind("Pod")
            if any(ref.get("uid") == uid for ref in p["metadata"].get("ownerReferences") or [])
        ]


def object_uid(kind: str, namespace: str | None, name: str) -> str:
    """A UUID that is the same every time the same object is replayed."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vigil-standin:{kind}/{namespace or ''}/{name}"))


def complete_objects(
    objects: list[dict], now: datetime, next_revision: Callable[[], int]
) -> list[dict]:
    """Copies of `objects`, checked and completed with the fields a real API server sends.

    Raises ValueError for what no API server could hold: an unknown kind or apiVersion, an object
    without a name, a duplicate, a Pod without containers, an Event without `involvedObject`.
    Synthesized Namespace objects are appended for every namespace in use.
    """
    completed: list[dict] = []
    seen: set[tuple[str, str | None, str]] = set()
    for index, original in enumerate(objects):
        obj = _coerce(jsonable(original))
        where = f"kubernetes object {index}"
        kind = obj.get("kind")
        if kind not in STORED:
            raise ValueError(
                f"{where}: the stand-in serves no kind {kind!r} (it serves {sorted(STORED)})"
            )
        resource = STORED[kind]
        if obj.get("apiVersion") != resource.api_version:
            raise ValueError(
                f"{where}: a {kind} has apiVersion {resource.api_version}, not {obj.get('apiVersion')!r}"
            )
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name"):
            raise ValueError(f"{where}: {kind} without metadata.name")
        if resource.namespaced:
            metadata.setdefault("namespace", "default")
        else:
            metadata.pop("namespace", None)
        key = (kind, metadata.get("namespace"), metadata["name"])
        if key in seen:
            raise ValueError(f"{where}: duplicate {kind} {'/'.join(p for p in key[1:] if p)}")
        seen.add(key)
        metadata.setdefault("uid", object_uid(*key))
        metadata.setdefault("creationTimestamp", _creation_fallback(obj) or rfc3339(now))
        if has_generation(kind):
            metadata.setdefault("generation", 1)
        completed.append(obj)

    world = _World(now=now, objects=completed)
    for obj in completed:
        _DEFAULTS.get(obj["kind"], lambda o, w: None)(obj, world)
        obj["metadata"]["resourceVersion"] = str(next_revision())
        # Key order as the API server writes it: apiVersion, kind, metadata, then the rest.
        obj_in_order = {
            "apiVersion": obj.pop("apiVersion"),
            "kind": obj.pop("kind"),
            "metadata": obj.pop("metadata"),
        }
        obj_in_order.update(obj)
        obj.clear()
        obj.update(obj_in_order)

    completed.extend(_namespaces(completed, now, next_revision))
    return completed


def _coerce(value: Any, key: str = "") -> Any:
    """Fix the scalars YAML types differently from the API: quantities, label values, condition status."""
    if isinstance(value, dict):
        if key in _QUANTITY_MAPS or key in ("labels", "annotations", "matchLabels", "nodeSelector"):
            return {
                k: _scalar_string(v) if not isinstance(v, dict | list) else _coerce(v, k)
                for k, v in value.items()
            }
        return {k: _coerce(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if key == "conditions":
            return [
                {**c, "status": "True" if c["status"] else "False"}
                if isinstance(c, dict) and isinstance(c.get("status"), bool)
                else _coerce(c)
                for c in value
            ]
        return [_coerce(v, key) for v in value]
    return value


def _scalar_string(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _creation_fallback(obj: dict) -> str | None:
    if obj["kind"] == "Event":
        return (
            obj.get("firstTimestamp")
            or _micro_to_time(obj.get("eventTime"))
            or obj.get("lastTimestamp")
        )
    if obj["kind"] == "Pod":
        return (obj.get("status") or {}).get("startTime")
    return None


def _exit_code(reason: str | None) -> int:
    return {"OOMKilled": 137, "Completed": 0}.get(reason or "", 1)


def _complete_container_statuses(pod: dict, statuses: list[dict], containers: list[dict]) -> None:
    by_name = {c.get("name"): c for c in containers}
    ready_condition = next(
        (
            c.get("status")
            for c in pod["status"].get("conditions") or []
            if c.get("type") == "Ready"
        ),
        None,
    )
    for status in statuses:
        if "name" not in status and len(statuses) == 1 and len(containers) == 1:
            status["name"] = containers[0]["name"]
        status.setdefault("image", (by_name.get(status.get("name")) or {}).get("image", ""))
        status.setdefault("imageID", "")
        status.setdefault("restartCount", 0)
        running = "running" in (status.get("state") or {})
        status.setdefault("started", running)
        status.setdefault("ready", running and ready_condition != "False")
        status.setdefault("lastState", {})
        for state in (status.get("state"), status.get("lastState")):
            terminated = (state or {}).get("terminated")
            if isinstance(terminated, dict):
                terminated.setdefault("exitCode", _exit_code(terminated.get("reason")))


def _qos_class(containers: list[dict]) -> str:
    """BestEffort, Burstable or Guaranteed, by the rules of `kubectl describe`'s QoS Class."""
    guaranteed, anything = True, False
    for container in containers:
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        if any(r in limits or r in requests for r in ("cpu", "memory")):
            anything = True
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                guaranteed = False
    if not anything:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _default_pod(pod: dict, world: _World) -> None:
    spec = pod.setdefault("spec", {})
    containers = spec.get("containers")
    if not containers:
        raise ValueError(f"Pod {pod['metadata']['name']} has no spec.containers")
    for field, value in (
        ("restartPolicy", "Always"),
        ("terminationGracePeriodSeconds", 30),
        ("dnsPolicy", "ClusterFirst"),
        ("schedulerName", "default-scheduler"),
        ("serviceAccountName", "default"),
    ):
        spec.setdefault(field, value)
    status = pod.setdefault("status", {})
    _complete_container_statuses(pod, status.get("containerStatuses") or [], containers)
    _complete_container_statuses(
        pod, status.get("initContainerStatuses") or [], spec.get("initContainers") or []
    )
    if "phase" not in status:
        statuses = status.get("containerStatuses") or []
        running = statuses and all("running" in (s.get("state") or {}) for s in statuses)
        status["phase"] = "Running" if running else "Pending"
    status.setdefault("qosClass", _qos_class(containers + (spec.get("initContainers") or [])))
    if status.get("podIP"):
        status.setdefault("podIPs", [{"ip": status["podIP"]}])
    if status.get("hostIP"):
        status.setdefault("hostIPs", [{"ip": status["hostIP"]}])


def _default_node(node: dict, world: _World) -> None:
    name = node["metadata"]["name"]
    status = node.setdefault("status", {})
    info = status.setdefault("nodeInfo", {})
    machine = uuid.UUID(object_uid("Machine", None, name))
    for field, value in (
        ("architecture", "amd64"),
        ("operatingSystem", "linux"),
        ("osImage", "Ubuntu 22.04.5 LTS"),
        ("kernelVersion", "5.15.0-1071-aws"),
        ("containerRuntimeVersion", "containerd://1.7.27"),
        ("kubeletVersion", SERVER_VERSION["gitVersion"]),
        ("kubeProxyVersion", ""),  # deprecated; kubelets since 1.31 leave it empty
        ("machineID", machine.hex),
        ("systemUUID", str(machine)),
        ("bootID", object_uid("Boot", None, name)),
    ):
        info.setdefault(field, value)
    if "addresses" not in status:
        host_ips = [
            p["status"]["hostIP"]
            for p in world.of_kind("Pod")
            if p["spec"].get("nodeName") == name and p["status"].get("hostIP")
        ]
        status["addresses"] = [{"type": "InternalIP", "address": host_ips[0]}] if host_ips else []
        status["addresses"].append({"type": "Hostname", "address": name})
    status.setdefault("daemonEndpoints", {"kubeletEndpoint": {"Port": 10250}})
    if "capacity" in status or "allocatable" in status:
        status.setdefault("capacity", copy.deepcopy(status.get("allocatable")))
        status.setdefault("allocatable", copy.deepcopy(status["capacity"]))
    if "conditions" not in status:
        since = node["metadata"]["creationTimestamp"]
        heartbeat = rfc3339(world.now)
        healthy = [
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ]
        status["conditions"] = [
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": since,
            }
            for type_, value, reason, message in healthy
        ]


def _default_event(event: dict, world: _World) -> None:
    involved = event.get("involvedObject")
    if not isinstance(involved, dict) or not involved.get("name"):
        raise ValueError(f"Event {event['metadata']['name']} has no involvedObject")
    event.setdefault("count", 1)
    event.setdefault("type", "Normal")
    source = event.setdefault("source", {})
    first = (
        event.get("firstTimestamp")
        or event.get("lastTimestamp")
        or _micro_to_time(event.get("eventTime"))
    )
    if first:
        event.setdefault("firstTimestamp", first)
        event.setdefault("lastTimestamp", event["firstTimestamp"])
    event.setdefault("eventTime", None)
    event.setdefault("reportingComponent", source.get("component", ""))
    event.setdefault("reportingInstance", source.get("host", ""))


def _micro_to_time(value: str | None) -> str | None:
    return rfc3339(parse_time(value)) if value else None


def _default_deployment(deployment: dict, world: _World) -> None:
    spec = deployment.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault(
        "strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
    )
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    deployment.setdefault("status", {})


def _default_replicated(workload: dict, world: _World) -> None:
    """ReplicaSet and StatefulSet: `status.replicas` is required; count the pods they own."""
    workload.setdefault("spec", {}).setdefault("replicas", 1)
    workload.setdefault("status", {}).setdefault("replicas", len(world.owned_pods(workload)))


def _default_daemonset(daemonset: dict, world: _World) -> None:
    pods = world.owned_pods(daemonset)
    ready = sum(
        1 for p in pods if all(s.get("ready") for s in p["status"].get("containerStatuses") or [{}])
    )
    status = daemonset.setdefault("status", {})
    for field, value in (
        ("currentNumberScheduled", len(pods)),
        ("desiredNumberScheduled", len(pods)),
        ("numberMisscheduled", 0),
        ("numberReady", ready),
    ):
        status.setdefault(field, value)


def _default_service(service: dict, world: _World) -> None:
    spec = service.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    if spec["type"] != "ExternalName":
        spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        if "port" in port:
            port.setdefault("targetPort", port["port"])
    service.setdefault("status", {"loadBalancer": {}})


_DEFAULTS: dict[str, Callable[[dict, _World], None]] = {
    "Pod": _default_pod,
    "Node": _default_node,
    "Event": _default_event,
    "Deployment": _default_deployment,
    "ReplicaSet": _default_replicated,
    "StatefulSet": _default_replicated,
    "DaemonSet": _default_daemonset,
    "Service": _default_service,
}


def _namespaces(objects: list[dict], now: datetime, next_revision: Callable[[], int]) -> list[dict]:
    """Namespace objects for every namespace in use that the scenario did not define itself."""
    defined = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    used: dict[str, list[str]] = {
        name: [] for name in ("default", "kube-node-lease", "kube-public", "kube-system")
    }
    for obj in objects:
        if namespace := obj["metadata"].get("namespace"):
            used.setdefault(namespace, []).append(obj["metadata"]["creationTimestamp"])
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": object_uid("Namespace", None, name),
                "resourceVersion": str(next_revision()),
                # As old as the oldest object in it: nothing in a namespace predates it.
                "creationTimestamp": min(created, key=parse_time) if created else rfc3339(now),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        for name, created in sorted(used.items())
        if name not in defined
    ]


# --- events.k8s.io/v1 ----------------------------------------------------------------------------


def to_events_v1(event: dict) -> dict:
    """A core/v1 Event as events.k8s.io/v1 serves it (the API server converts stored Events).

    `eventTime` is required by client 37; old-style Events carry only first/lastTimestamp, so it
    falls back to those (a real server may send null there). `series` comes from the Event's own
    series, or from `count` > 1 (what the new-style recorder would have written).
    """
    first = event.get("firstTimestamp")
    last = event.get("lastTimestamp")
    event_time = (
        event.get("eventTime") or first or last or event["metadata"].get("creationTimestamp")
    )
    converted: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": copy.deepcopy(event["metadata"]),
        "eventTime": rfc3339(parse_time(event_time), micro=True),
        "reportingController": event.get("reportingComponent")
        or (event.get("source") or {}).get("component", ""),
        "reportingInstance": event.get("reportingInstance")
        or (event.get("source") or {}).get("host", ""),
        "action": event.get("action", ""),
        "reason": event.get("reason", ""),
        "regarding": copy.deepcopy(event["involvedObject"]),
        "note": event.get("message", ""),
        "type": event.get("type", ""),
        "deprecatedSource": copy.deepcopy(event.get("source") or {}),
        "deprecatedFirstTimestamp": first,
        "deprecatedLastTimestamp": last,
        "deprecatedCount": event.get("count", 0),
    }
    if event.get("related"):
        converted["related"] = copy.deepcopy(event["related"])
    series = event.get("series")
    if series:
        converted["series"] = {
            "count": series.get("count", event.get("count", 1)),
            "lastObservedTime": rfc3339(
                parse_time(series.get("lastObservedTime") or last or event_time), micro=True
            ),
        }
    elif event.get("count", 1) > 1:
        converted["series"] = {
            "count": event["count"],
            "lastObservedTime": rfc3339(parse_time(last or event_time), micro=True),
        }
    return converted


# --- selectors -----------------------------------------------------------------------------------


class SelectorError(ValueError):
    """A label or field selector the API server would answer 400 Bad Request to."""


_KEY = r"[A-Za-z0-9][A-Za-z0-9._/-]*"
_VALUE = r"[A-Za-z0-9._-]*"
_SET_RE = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_NOT_EXISTS_RE = re.compile(rf"^!\s*(?P<key>{_KEY})$")
_EQUALITY_RE = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})$")
_EXISTS_RE = re.compile(rf"^(?P<key>{_KEY})$")


@dataclass(frozen=True)
class Requirement:
    """One comma-separated term of a label selector."""

    key: str
    operator: str  # "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!exists":
            return self.key not in labels
        if self.operator == "in":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


def _split_terms(selector: str) -> list[str]:
    """Split on the commas that separate terms, not those inside `in (a,b)`."""
    terms, depth, current = [], 0, []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    terms.append("".join(current).strip())
    return terms


def parse_label_selector(selector: str) -> list[Requirement]:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`; an empty selector matches everything."""
    if not selector.strip():
        return []
    requirements = []
    for term in _split_terms(selector):
        if match := _SET_RE.match(term):
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(Requirement(match["key"], match["op"], values))
        elif match := _NOT_EXISTS_RE.match(term):
            requirements.append(Requirement(match["key"], "!exists"))
        elif match := _EQUALITY_RE.match(term):
            operator = "notin" if match["op"] == "!=" else "in"
            requirements.append(Requirement(match["key"], operator, frozenset({match["value"]})))
        elif match := _EXISTS_RE.match(term):
            requirements.append(Requirement(match["key"], "exists"))
        else:
            raise SelectorError(
                f"unable to parse requirement: {term!r} in label selector {selector!r}"
            )
    return requirements


def label_selector_string(selector: dict | None) -> str:
    """A LabelSelector object (`matchLabels`, `matchExpressions`) in the string syntax, sorted by key."""
    selector = selector or {}
    terms = [(k, f"{k}={v}") for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = (
            expression["key"],
            expression["operator"],
            expression.get("values") or [],
        )
        rendered = {
            "In": f"{key} in ({','.join(sorted(values))})",
            "NotIn": f"{key} notin ({','.join(sorted(values))})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }[operator]
        terms.append((key, rendered))
    return ",".join(text for _, text in sorted(terms))


def selector_matches(selector: dict | None, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector object selects these labels (an empty selector selects all)."""
    return all(r.matches(labels) for r in parse_label_selector(label_selector_string(selector)))


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    value: str
    equal: bool

    def matches(self, obj: dict) -> bool:
        return (field_value(obj, self.path) == self.value) == self.equal


def parse_field_selector(selector: str, resource: Resource) -> list[FieldRequirement]:
    """Parse `spec.nodeName=gpu-3,status.phase!=Running` against the labels the kind supports."""
    if not selector.strip():
        return []
    supported = {"metadata.name", "metadata.namespace", *resource.field_labels}
    requirements = []
    for term in selector.split(","):
        match = re.match(r"^\s*(?P<path>[^=!\s]+)\s*(?P<op>==|=|!=)(?P<value>.*)$", term)
        if not match:
            raise SelectorError(f"invalid selector: {selector!r}; can't understand {term!r}")
        if match["path"] not in supported:
            raise SelectorError(f"field label not supported: {match['path']}")
        requirements.append(
            FieldRequirement(match["path"], match["value"].strip(), match["op"] != "!=")
        )
    return requirements


def field_value(obj: dict, path: str) -> str:
    """The string a field selector compares: booleans as true/false, absent as the empty string."""
    if path == "source":  # core Events register `source` for source.component
        path = "source.component"
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)

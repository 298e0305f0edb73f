"""A Kubernetes API server stand-in that speaks the REST paths the official Python client uses.

Vigil's collectors and remediation actions talk to Kubernetes only through the official client
(`kubernetes` 37). To replay a scenario, run the tests or show the demo without a cluster, this
module serves a scenario's objects and container logs on loopback, with the paths, query
parameters, list envelopes, error `Status` bodies and status codes of a real API server, so the
same code path runs against it as against production. It is deliberately not a mock: requests go
over HTTP through the real client, which validates every answer against the OpenAPI schema.

    with KubernetesStandIn(objects, logs) as kube:
        core = kubernetes.client.CoreV1Api(kube.api_client())
        core.list_namespaced_pod("llm", label_selector="app=chat-api")

What it serves (see `kube_objects.RESOURCES`): pods (with `log`, `eviction`), events (core/v1 and
events.k8s.io/v1), nodes, namespaces, services, deployments, replicasets, statefulsets, daemonsets
(with `scale`), poddisruptionbudgets; `/version` and discovery. Lists honour `labelSelector`,
`fieldSelector`, `limit` and `continue`.

Writes (PATCH of workloads and nodes in all three patch flavours, scale, eviction, pod deletion)
are validated as the API server validates them, recorded in `requests`, and applied to the state
unless `dryRun=All`. No controllers run: a scaled Deployment gets a new `spec.replicas` and
`metadata.generation`, not new pods, and a cordon sets `spec.unschedulable` without adding the
`node.kubernetes.io/unschedulable` taint. Watches are not served (400).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import kubernetes

from .kube_objects import (
    GROUP_VERSIONS,
    RESOURCES,
    SERVER_VERSION,
    Resource,
    SelectorError,
    complete_objects,
    find_resource,
    has_generation,
    label_selector_string,
    parse_field_selector,
    parse_label_selector,
    parse_time,
    rfc3339,
    rfc3339_nano,
    selector_matches,
    stored_resource,
    to_events_v1,
)
from .kube_patch import PatchError, json_patch, merge_patch, strategic_merge_patch

__all__ = ["ApiError", "KubernetesStandIn", "RecordedRequest"]

logger = logging.getLogger(__name__)

_PATCHERS: dict[str, Callable[[Any, Any], Any]] = {
    "application/json-patch+json": json_patch,
    "application/merge-patch+json": merge_patch,
    "application/strategic-merge-patch+json": strategic_merge_patch,
}
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False", ""})


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ApiError(Exception):
    """An answer other than success, rendered as the API server's `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(resource: Resource, name: str, **extra: Any) -> dict:
    details: dict[str, Any] = {"name": name}
    if resource.group:
        details["group"] = resource.group
    details["kind"] = resource.plural
    details.update(extra)
    return details


def _not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{resource.group_resource} "{name}" not found', _details(resource, name)
    )


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _invalid(resource: Resource, name: str, field: str, message: str) -> ApiError:
    """422 as the API server words a failed validation: `Deployment.apps "x" is invalid: …`."""
    qualified = f"{resource.kind}.{resource.group}" if resource.group else resource.kind
    cause = {"reason": "FieldValueInvalid", "message": message, "field": field}
    return ApiError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {field}: {message}',
        _details(resource, name, kind=resource.kind, causes=[cause]),
    )


def _conflict(resource: Resource, name: str, message: str) -> ApiError:
    return ApiError(409, "Conflict", message, _details(resource, name))


@dataclass(frozen=True)
class RecordedRequest:
    """One write the stand-in received, and what it answered.

    `body` is the parsed JSON body (the raw text when it was not JSON, None when empty);
    `applied` is true when the write changed the state (a success that was not a dry run).
    """

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any
    dry_run: bool
    applied: bool
    status: int
    response: Any


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str


def _int_param(query: dict[str, str], name: str, minimum: int | None = None) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise _bad_request(f"{name}: invalid value {raw!r}: not an integer") from None
    if minimum is not None and value < minimum:
        raise ApiError(
            422,
            "Invalid",
            f"{name}: Invalid value: {value}: must be greater than or equal to {minimum}",
        )
    return value


def _bool_param(query: dict[str, str], name: str) -> bool:
    raw = query.get(name, "")
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise _bad_request(f"{name}: invalid value {raw!r}: not a boolean")


def _encode_continue(revision: str, last_key: tuple[str, str]) -> str:
    """An opaque continue token that, as etcd's, resumes after the last key served."""
    token = {"v": "standin.k8s.io/v1", "rv": revision, "after": list(last_key)}
    return base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _bad_request(
            "continue key is not valid: it is not a token this server issued"
        ) from None
    return str(namespace), str(name)


def _scale_of(obj: dict) -> dict:
    """The `autoscaling/v1` Scale view of a Deployment, ReplicaSet or StatefulSet."""
    metadata = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in metadata
        },
        "spec": {"replicas": obj["spec"].get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": label_selector_string(obj["spec"].get("selector")),
        },
    }


def _apply_patch(content_type: str | None, target: dict, patch: Any) -> Any:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    patcher = _PATCHERS.get(media_type)
    if patcher is None:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: {', '.join(_PATCHERS)}",
        )
    try:
        return patcher(target, patch)
    except PatchError as exc:
        if exc.malformed:
            raise _bad_request(str(exc)) from None
        raise ApiError(422, "Invalid", str(exc)) from None


def _list_key(obj: dict) -> tuple[str, str]:
    """Where an object sorts in a list: by namespace, then name, as etcd's keys do."""
    return obj["metadata"].get("namespace") or "", obj["metadata"]["name"]


class _Cluster:
    """The state of one stand-in and the operations its REST paths map to.

    The HTTP server answers each request on its own thread, so every operation holds the lock
    for its whole read-modify-write: two concurrent patches cannot lose one another's change.
    Objects handed out are copies; the stored ones never leave the lock.
    """

    def __init__(
        self, objects: list[dict], logs: list[dict], clock: Callable[[], datetime]
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._revision = 0
        self._objects: dict[tuple[str, str, str], dict] = {}
        for obj in complete_objects(objects, clock(), self._next_revision):
            self._objects[self._key(obj)] = obj
        self._logs = self._load_logs(logs)

    # --- bookkeeping ---------------------------------------------------------------------------

    def _next_revision(self) -> int:
        self._revision += 1
        return self._revision

    @staticmethod
    def _key(obj: dict) -> tuple[str, str, str]:
        metadata = obj["metadata"]
        return obj["kind"], metadata.get("namespace") or "", metadata["name"]

    def _load_logs(
        self, logs: list[dict]
    ) -> dict[tuple[str, str, str, bool], list[tuple[datetime, str]]]:
        table: dict[tuple[str, str, str, bool], list[tuple[datetime, str]]] = {}
        for index, entry in enumerate(logs):
            namespace, pod_name, container = entry["namespace"], entry["pod"], entry["container"]
            pod = self._objects.get(("Pod", namespace, pod_name))
            if pod is None:
                raise ValueError(f"kubernetes log {index}: no Pod {namespace}/{pod_name}")
            if container not in self._container_names(pod):
                raise ValueError(
                    f"kubernetes log {index}: Pod {namespace}/{pod_name} has no container {container!r}"
                )
            key = (namespace, pod_name, container, bool(entry.get("previous", False)))
            if key in table:
                raise ValueError(
                    f"kubernetes log {index}: a second log for {namespace}/{pod_name}/{container}"
                )
            lines = [
                (parse_time(line["at"]), str(line["text"])) for line in entry.get("lines") or []
            ]
            # A stable sort: lines with the same time keep the scenario's order.
            table[key] = sorted(lines, key=lambda line: line[0])
        return table

    @staticmethod
    def _container_names(pod: dict) -> list[str]:
        spec = pod["spec"]
        return [
            c["name"] for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
        ]

    def _require(self, resource: Resource, namespace: str | None, name: str) -> dict:
        obj = self._objects.get((resource.stored_kind, namespace or "", name))
        if obj is None:
            raise _not_found(resource, name)
        return obj

    @staticmethod
    def _view(resource: Resource, obj: dict) -> dict:
        return to_events_v1(obj) if resource.group == "events.k8s.io" else copy.deepcopy(obj)

    def _store(self, obj: dict) -> dict:
        obj["metadata"]["resourceVersion"] = str(self._next_revision())
        self._objects[self._key(obj)] = obj
        return copy.deepcopy(obj)

    # --- reads ---------------------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None) -> dict | None:
        resource = stored_resource(kind)
        with self._lock:
            obj = self._objects.get(
                (resource.kind, (namespace or "default") if resource.namespaced else "", name)
            )
            return copy.deepcopy(obj) if obj is not None else None

    def all_of(self, kind: str, namespace: str | None) -> list[dict]:
        resource = stored_resource(kind)
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (k, ns, _), obj in sorted(self._objects.items())
                if k == resource.kind and (namespace is None or ns == namespace)
            ]

    def read(self, resource: Resource, namespace: str | None, name: str) -> dict:
        with self._lock:
            return self._view(resource, self._require(resource, namespace, name))

    def list(self, resource: Resource, namespace: str | None, query: dict[str, str]) -> dict:
        if _bool_param(query, "watch"):
            raise _bad_request("the Kubernetes stand-in does not serve watches; list instead")
        try:
            labels = parse_label_selector(query.get("labelSelector", ""))
            fields = parse_field_selector(query.get("fieldSelector", ""), resource)
        except SelectorError as exc:
            raise _bad_request(str(exc)) from None
        limit = _int_param(query, "limit", minimum=0) or 0
        after = _decode_continue(query["continue"]) if query.get("continue") else None
        with self._lock:
            revision = str(self._revision)
            stored = [
                obj
                for (kind, ns, _), obj in sorted(self._objects.items())
                if kind == resource.stored_kind and (namespace is None or ns == namespace)
            ]
            items = [self._view(resource, obj) for obj in stored]
        items = [
            item
            for item in items
            if (after is None or _list_key(item) > after)
            and all(r.matches(item["metadata"].get("labels") or {}) for r in labels)
            and all(f.matches(item) for f in fields)
        ]
        page = items[:limit] if limit else items
        metadata: dict[str, Any] = {"resourceVersion": revision}
        if len(page) < len(items):
            metadata["continue"] = _encode_continue(revision, _list_key(page[-1]))
            metadata["remainingItemCount"] = len(items) - len(page)
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": metadata,
            "items": page,
        }

    def read_scale(self, resource: Resource, namespace: str, name: str) -> dict:
        with self._lock:
            return _scale_of(self._require(resource, namespace, name))

    def read_log(self, namespace: str, name: str, query: dict[str, str]) -> str:
        """The pod log endpoint: which container instance, then sinceSeconds, tailLines, limitBytes."""
        resource = stored_resource("Pod")
        previous = _bool_param(query, "previous")
        timestamps = _bool_param(query, "timestamps")
        tail = _int_param(query, "tailLines", minimum=0)
        since_seconds = _int_param(query, "sinceSeconds", minimum=1)
        limit_bytes = _int_param(query, "limitBytes", minimum=1)
        since_time = query.get("sinceTime")
        if since_seconds is not None and since_time:
            raise ApiError(
                422, "Invalid", "at most one of `sinceTime` or `sinceSeconds` may be specified"
            )
        with self._lock:
            pod = self._require(resource, namespace, name)
            container = self._log_container(pod, query.get("container"))
            lines = list(self._log_lines(pod, container, previous))
        cutoff = None
        if since_seconds is not None:
            cutoff = self._clock() - timedelta(seconds=since_seconds)
        elif since_time:
            try:
                cutoff = parse_time(since_time)
            except ValueError:
                raise _bad_request(f"sinceTime: invalid value {since_time!r}") from None
        if cutoff is not None:
            lines = [line for line in lines if line[0] >= cutoff]
        if tail is not None:
            lines = lines[-tail:] if tail else []
        text = "".join(
            f"{rfc3339_nano(at)} {line}\n" if timestamps else f"{line}\n" for at, line in lines
        )
        if limit_bytes is not None:
            text = text.encode()[:limit_bytes].decode(errors="ignore")
        return text

    @staticmethod
    def _log_container(pod: dict, requested: str | None) -> str:
        name = pod["metadata"]["name"]
        containers = [c["name"] for c in pod["spec"]["containers"]]
        init = [c["name"] for c in pod["spec"].get("initContainers") or []]
        if not requested:
            if len(containers) == 1:
                return containers[0]
            message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
            if init:
                message += f" or one of the init containers: [{' '.join(init)}]"
            raise _bad_request(message)
        if requested not in containers + init:
            raise _bad_request(f"container {requested} is not valid for pod {name}")
        return requested

    def _log_lines(self, pod: dict, container: str, previous: bool) -> list[tuple[datetime, str]]:
        """The log of the requested container instance, decided as the kubelet decides.

        A log the scenario gives for that instance is served. Otherwise the container status
        rules, as in kubelet's `validateContainerLogStatus`: an unscheduled pod has an empty log;
        `previous` needs a terminated previous instance; a container waiting after a crash
        (CrashLoopBackOff) serves its last run's log; one that never started is a 400 saying why.
        """
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        log = self._logs.get((namespace, name, container, previous))
        if log is not None:
            return log
        if not pod["spec"].get("nodeName"):
            return []
        status = pod.get("status") or {}
        statuses = (status.get("containerStatuses") or []) + (
            status.get("initContainerStatuses") or []
        )
        container_status = next((s for s in statuses if s.get("name") == container), None)
        if container_status is None:
            raise _bad_request(f'container "{container}" in pod "{name}" is not available')
        state = container_status.get("state") or {}
        last_terminated = (container_status.get("lastState") or {}).get("terminated")
        if previous:
            if last_terminated:
                return []
            raise _bad_request(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        if "running" in state or "terminated" in state:
            return []
        if last_terminated:
            return self._logs.get((namespace, name, container, True), [])
        waiting = state.get("waiting")
        if waiting is not None:
            reason = waiting.get("reason") or ""
            why = {
                "ErrImagePull": "image can't be pulled",
                "ImagePullBackOff": "trying and failing to pull image",
            }
            raise _bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {why.get(reason, reason)}'
            )
        raise _bad_request(
            f'container "{container}" in pod "{name}" is waiting to start - no logs yet'
        )

    # --- writes --------------------------------------------------------------------------------

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        content_type: str | None,
        patch: Any,
        dry_run: bool,
    ) -> dict:
        with self._lock:
            current = self._require(resource, namespace, name)
            patched = _apply_patch(content_type, current, patch)
            if not isinstance(patched, dict):
                raise ApiError(422, "Invalid", "the patched object is not a JSON object")
            self._check_update(resource, current, patched)
            return self._commit(current, patched, dry_run)

    def patch_scale(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        content_type: str | None,
        patch: Any,
        dry_run: bool,
    ) -> dict:
        with self._lock:
            current = self._require(resource, namespace, name)
            scale = _scale_of(current)
            patched = _apply_patch(content_type, scale, patch)
            metadata = patched.get("metadata") if isinstance(patched, dict) else None
            if (
                not isinstance(metadata, dict)
                or metadata.get("resourceVersion") != scale["metadata"]["resourceVersion"]
            ):
                raise self._modified(resource, name)
            replicas = (patched.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise ApiError(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0',
                    {"name": name, "group": "autoscaling", "kind": "Scale"},
                )
            updated = copy.deepcopy(current)
            updated["spec"]["replicas"] = replicas
            return _scale_of(self._commit(current, updated, dry_run))

    def delete_pod(
        self, namespace: str, name: str, grace: int | None, options: dict, dry_run: bool
    ) -> dict:
        resource = stored_resource("Pod")
        with self._lock:
            pod = self._require(resource, namespace, name)
            metadata = pod["metadata"]
            preconditions = options.get("preconditions") or {}
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted = preconditions.get(field)
                if wanted is not None and wanted != metadata.get(field):
                    raise _conflict(
                        resource,
                        name,
                        f"Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {metadata.get(field)}",
                    )
            if grace is None:
                grace = options.get("gracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            deleted = copy.deepcopy(pod)
            if grace > 0:
                deleted["metadata"]["deletionTimestamp"] = rfc3339(
                    self._clock() + timedelta(seconds=grace)
                )
                deleted["metadata"]["deletionGracePeriodSeconds"] = grace
            if not dry_run:
                del self._objects[self._key(pod)]
                deleted["metadata"]["resourceVersion"] = str(self._next_revision())
            return deleted

    def evict(self, namespace: str, name: str, eviction: dict, dry_run: bool) -> dict:
        """policy/v1 Eviction: delete the pod unless a PodDisruptionBudget forbids it now (429)."""
        resource = stored_resource("Pod")
        with self._lock:
            pod = self._require(resource, namespace, name)
            named = (eviction.get("metadata") or {}).get("name")
            if named and named != name:
                raise _bad_request("name in URL does not match name in Eviction object")
            labels = pod["metadata"].get("labels") or {}
            budgets = [
                pdb
                for (kind, ns, _), pdb in sorted(self._objects.items())
                if kind == "PodDisruptionBudget"
                and ns == namespace
                and selector_matches(pdb.get("spec", {}).get("selector"), labels)
            ]
            if len(budgets) > 1:
                raise ApiError(
                    500,
                    "InternalError",
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                )
            # As the API server does, a budget guards only running pods: evicting a pending or
            # finished one never reduces availability.
            if budgets and (pod.get("status") or {}).get("phase") == "Running":
                budget = budgets[0]
                status = budget.get("status") or {}
                if status.get("disruptionsAllowed", 0) <= 0:
                    cause = {
                        "reason": "DisruptionBudget",
                        "message": f"The disruption budget {budget['metadata']['name']} needs {status.get('desiredHealthy', 0)} healthy pods and has {status.get('currentHealthy', 0)} currently",
                    }
                    raise ApiError(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        {"causes": [cause]},
                    )
                if not dry_run:
                    updated = copy.deepcopy(budget)
                    updated.setdefault("status", {})["disruptionsAllowed"] = (
                        status["disruptionsAllowed"] - 1
                    )
                    self._store(updated)
            if not dry_run:
                del self._objects[self._key(pod)]
                self._next_revision()
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            }

    def _modified(self, resource: Resource, name: str) -> ApiError:
        return _conflict(
            resource,
            name,
            f'Operation cannot be fulfilled on {resource.group_resource} "{name}": the object has been modified; please apply your changes to the latest version and try again',
        )

    def _check_update(self, resource: Resource, current: dict, patched: dict) -> None:
        """Refuse what the API server refuses in an update, and keep what it does not let change.

        Identity must not change; a resourceVersion in the patch is an optimistic-concurrency
        precondition; server-set metadata and the status (a subresource) keep their values.
        """
        name = current["metadata"]["name"]
        metadata = patched.get("metadata")
        if not isinstance(metadata, dict):
            raise _invalid(resource, name, "metadata", "Required value")
        if (patched.get("apiVersion"), patched.get("kind")) != (
            current["apiVersion"],
            current["kind"],
        ):
            raise _bad_request("the apiVersion and kind of an object cannot be changed by a patch")
        if metadata.get("name") != name:
            raise _bad_request(
                f"the name of the object ({metadata.get('name')}) does not match the name on the URL ({name})"
            )
        if metadata.get("namespace") != current["metadata"].get("namespace"):
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if metadata.get("uid") != current["metadata"]["uid"]:
            raise _conflict(
                resource,
                name,
                f"Precondition failed: UID in precondition: {metadata.get('uid')}, UID in object meta: {current['metadata']['uid']}",
            )
        if metadata.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise self._modified(resource, name)
        for field in ("creationTimestamp", "generation"):
            if field in current["metadata"]:
                metadata[field] = current["metadata"][field]
        if "status" in current:
            patched["status"] = copy.deepcopy(current["status"])
        else:
            patched.pop("status", None)
        if resource.kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
            self._check_workload(resource, current, patched)
        elif resource.kind == "Node":
            unschedulable = (patched.get("spec") or {}).get("unschedulable")
            if unschedulable is not None and not isinstance(unschedulable, bool):
                raise _invalid(
                    resource,
                    name,
                    "spec.unschedulable",
                    f"Invalid value: {json.dumps(unschedulable)}: must be a boolean",
                )

    @staticmethod
    def _check_workload(resource: Resource, current: dict, patched: dict) -> None:
        name = current["metadata"]["name"]
        spec = patched.get("spec")
        if not isinstance(spec, dict):
            raise _invalid(resource, name, "spec", "Required value")
        replicas = spec.get("replicas")
        if replicas is not None and (
            not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0
        ):
            raise _invalid(
                resource,
                name,
                "spec.replicas",
                f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0",
            )
        if spec.get("selector") != current["spec"].get("selector"):
            raise _invalid(
                resource,
                name,
                "spec.selector",
                f"Invalid value: {json.dumps(spec.get('selector'))}: field is immutable",
            )
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if resource.kind != "ReplicaSet" or "template" in spec:
            if not selector_matches(spec.get("selector"), labels):
                raise _invalid(
                    resource,
                    name,
                    "spec.template.metadata.labels",
                    f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`",
                )
            containers = (template.get("spec") or {}).get("containers")
            if not containers or not all(
                isinstance(c, dict) and c.get("name") and c.get("image") for c in containers
            ):
                raise _invalid(
                    resource,
                    name,
                    "spec.template.spec.containers",
                    "Required value: every container needs a name and an image",
                )

    def _commit(self, current: dict, updated: dict, dry_run: bool) -> dict:
        """Store an update (unless a dry run): resourceVersion moves, generation on spec changes."""
        if updated == current:
            return copy.deepcopy(current)  # a no-op patch writes nothing, as with etcd
        if has_generation(current["kind"]) and updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        if dry_run:
            return copy.deepcopy(updated)
        return self._store(updated)


class _Server(ThreadingHTTPServer):
    """Tracks its open connections, so that stopping also ends the client's pooled keep-alives.

    Without that, a connection kept alive by the client's pool would still be answered by its
    handler thread after `stop()`, and a test of "the cluster went away" would pass by accident.
    """

    daemon_threads = True
    standin: KubernetesStandIn

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the stand-in; HTTP/1.1 so the client's connection pool is reused."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's
    # delayed ACK (40 ms a request on Linux).
    disable_nagle_algorithm = True
    server_version = "vigil-kube-standin"
    timeout = 30  # an idle keep-alive connection frees its thread after this long
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply = self.server.standin._handle(
            self.command, self.path, self.headers.get("Content-Type"), raw
        )
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        logger.debug("kube stand-in: " + format, *args)


class KubernetesStandIn:
    """A Kubernetes API server on loopback serving fixed objects and logs; see the module docstring.

    `objects` are Kubernetes objects as the API returns them, with absolute RFC 3339 times; the
    fields a real server always sends are filled in (`kube_objects.DEFAULTED_FIELDS`). `logs` are
    `{"namespace", "pod", "container", "previous", "lines": [{"at": datetime, "text"}]}`.
    Impossible input (an unknown kind, a log for a missing pod) raises ValueError here, not later
    as a puzzling answer. `clock` (default: the wall clock) is the "now" of `sinceSeconds` and of
    deletion timestamps.
    """

    def __init__(
        self,
        objects: list[dict],
        logs: list[dict] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._cluster = _Cluster(objects, logs or [], clock or _utc_now)
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._requests_lock = threading.Lock()
        self.requests: list[RecordedRequest] = []

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> KubernetesStandIn:
        """Bind and serve in a daemon thread. Returns self, for `kube = KubernetesStandIn(…).start()`."""
        if self._server is None:
            server = _Server(self._address)
            server.standin = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"kube-standin-{server.server_address[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> KubernetesStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`; the port is known once started."""
        if self._server is None:
            raise RuntimeError(
                "start() the Kubernetes stand-in first: its port is chosen when it binds"
            )
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- client configuration ------------------------------------------------------------------

    def kubeconfig(self) -> dict:
        """A kubeconfig for this server, as `kubernetes.config.new_client_from_config_dict` takes it."""
        name = "vigil-standin"
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": name, "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": name, "user": {"token": "vigil-standin"}}],
            "contexts": [
                {"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}
            ],
            "current-context": name,
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | Path) -> Path:
        """Write `kubeconfig()` to `path` (as JSON, which is YAML) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.kubeconfig(), indent=2) + "\n")
        return path

    def api_client(self) -> kubernetes.client.ApiClient:
        """An official-client ApiClient for this server, built from `kubeconfig()` (no global state)."""
        return kubernetes.config.new_client_from_config_dict(
            self.kubeconfig(), persist_config=False
        )

    # --- state ---------------------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The current object (after applied writes), or None. `kind`: `Deployment`, `deployments`…

        A namespaced kind without `namespace` looks in `default`, as kubectl does.
        """
        return self._cluster.get(kind, name, namespace)

    def list_objects(self, kind: str, namespace: str | None = None) -> list[dict]:
        """Every current object of a kind (in a namespace, or all), sorted by namespace and name."""
        return self._cluster.all_of(kind, namespace)

    # --- HTTP ----------------------------------------------------------------------------------

    def _handle(self, method: str, target: str, content_type: str | None, raw: bytes) -> _Reply:
        split = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        body: Any = None
        malformed = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body, malformed = raw.decode(errors="replace"), True
        dry_run = False
        try:
            dry_run = self._dry_run(query, body)
            if malformed and method in _WRITE_METHODS:
                raise _bad_request("the request body is not valid JSON")
            status, payload = self._route(method, split.path, query, content_type, body, dry_run)
        except ApiError as exc:
            status, payload = exc.code, exc.status()
        # A bug in the stand-in must reach the client as a 500, not as a dropped connection.
        except Exception as exc:
            logger.exception("kube stand-in failed on %s %s", method, target)
            status, payload = (
                500,
                ApiError(500, "InternalError", f"stand-in error: {exc!r}").status(),
            )
        if method in _WRITE_METHODS:
            record = RecordedRequest(
                method=method,
                path=split.path,
                query=query,
                content_type=content_type,
                body=body,
                dry_run=dry_run,
                applied=200 <= status < 300 and not dry_run,
                status=status,
                response=payload,
            )
            with self._requests_lock:
                self.requests.append(record)
        if isinstance(payload, str):
            return _Reply(status, payload.encode(), "text/plain")
        return _Reply(
            status, json.dumps(payload, separators=(",", ":")).encode(), "application/json"
        )

    @staticmethod
    def _dry_run(query: dict[str, str], body: Any) -> bool:
        """`dryRun=All` on the query, or in DeleteOptions (alone or inside an Eviction)."""
        values = [query["dryRun"]] if query.get("dryRun") else []
        if isinstance(body, dict):
            for options in (body, body.get("deleteOptions")):
                if isinstance(options, dict) and isinstance(options.get("dryRun"), list):
                    values.extend(options["dryRun"])
        for value in values:
            if value != "All":
                raise ApiError(
                    400, "BadRequest", f'Invalid value: "{value}": supported values: "All"'
                )
        return bool(values)

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        content_type: str | None,
        body: Any,
        dry_run: bool,
    ) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if method == "GET" and parts in (["version"], ["healthz"], ["livez"], ["readyz"]):
            return 200, dict(SERVER_VERSION) if parts == ["version"] else "ok"
        if parts[:1] == ["api"]:
            group, rest = "", parts[1:]
            if not rest:
                return self._get_only(method), self._api_versions()
        elif parts[:1] == ["apis"]:
            if len(parts) == 1:
                return self._get_only(method), {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [_group(g) for g in GROUP_VERSIONS if g],
                }
            group, rest = parts[1], parts[2:]
            if group not in GROUP_VERSIONS or not group:
                raise self._no_such_path()
            if not rest:
                return self._get_only(method), {
                    "kind": "APIGroup",
                    "apiVersion": "v1",
                    **_group(group),
                }
        else:
            raise self._no_such_path()
        version, rest = rest[0], rest[1:]
        if version not in GROUP_VERSIONS.get(group, ()):
            raise self._no_such_path()
        if not rest:
            return self._get_only(method), _resource_list(group, version)
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise self._no_such_path()
        resource = find_resource(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if (
            resource is None
            or (namespace is not None and not resource.namespaced)
            or (namespace is None and resource.namespaced and name is not None)
        ):
            raise self._no_such_path()
        return self._dispatch(
            method, resource, namespace, name, subresource, query, content_type, body, dry_run
        )

    def _dispatch(
        self,
        method: str,
        resource: Resource,
        namespace: str | None,
        name: str | None,
        subresource: str | None,
        query: dict[str, str],
        content_type: str | None,
        body: Any,
        dry_run: bool,
    ) -> tuple[int, Any]:
        cluster = self._cluster
        if subresource is None:
            if name is None:
                if method == "GET":
                    return 200, cluster.list(resource, namespace, query)
            elif method == "GET":
                return 200, cluster.read(resource, namespace, name)
            elif method == "PATCH" and "patch" in resource.verbs:
                return 200, cluster.patch(resource, namespace, name, content_type, body, dry_run)
            elif method == "DELETE" and "delete" in resource.verbs:
                grace = _int_param(query, "gracePeriodSeconds", minimum=0)
                options = body if isinstance(body, dict) else {}
                return 200, cluster.delete_pod(namespace or "", name, grace, options, dry_run)
            raise self._not_allowed()
        assert name is not None  # a subresource path always names the object
        if subresource not in {s[0] for s in resource.subresources}:
            raise self._no_such_path()
        if subresource == "log" and method == "GET":
            return 200, cluster.read_log(namespace or "", name, query)
        if subresource == "scale" and method == "GET":
            return 200, cluster.read_scale(resource, namespace or "", name)
        if subresource == "scale" and method == "PATCH":
            return 200, cluster.patch_scale(
                resource, namespace or "", name, content_type, body, dry_run
            )
        if subresource == "eviction" and method == "POST":
            if not isinstance(body, dict):
                raise _bad_request("an Eviction object is required")
            return 201, cluster.evict(namespace or "", name, body, dry_run)
        raise self._not_allowed()

    def _api_versions(self) -> dict:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.removeprefix("http://")}
            ],
        }

    @staticmethod
    def _get_only(method: str) -> int:
        if method != "GET":
            raise KubernetesStandIn._not_allowed()
        return 200

    @staticmethod
    def _no_such_path() -> ApiError:
        return ApiError(404, "NotFound", "the server could not find the requested resource", {})

    @staticmethod
    def _not_allowed() -> ApiError:
        return ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            {},
        )


def _group(group: str) -> dict:
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in GROUP_VERSIONS[group]]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def _resource_list(group: str, version: str) -> dict:
    """Discovery: the resources of one group version, with the verbs the stand-in really serves."""
    resources: list[dict] = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.kind.lower(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        resources.append(entry)
        for sub, sub_group, sub_version, sub_kind, verbs in r.subresources:
            sub_entry: dict[str, Any] = {
                "name": f"{r.plural}/{sub}",
                "singularName": "",
                "namespaced": r.namespaced,
            }
            if (sub_group, sub_version) != (group, version):
                sub_entry.update(group=sub_group, version=sub_version)
            sub_entry.update(kind=sub_kind, verbs=list(verbs))
            resources.append(sub_entry)
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }

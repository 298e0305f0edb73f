"""A small cluster for the remediation actions, served by the Kubernetes stand-in.

llm/chat-api has two revisions: 11 (ReplicaSet chat-api-7c9f8d6b54, image v2.3.9, 8k context,
slow tokenizer) and 12 (chat-api-6f4d9b8c7d, v2.4.0, the current one). A canary Deployment's
ReplicaSet matches chat-api's selector too but belongs to another owner. gpu-node-2 runs both
chat-api pods (a PodDisruptionBudget lets one of them go at a time), a DaemonSet pod, a mirror
pod and a bare debug pod; gpu-node-1 runs the reranker; gpu-node-3 is already cordoned.
The actions talk to it through the official client, exactly as to a cluster.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes import client

from assistant.actions.base import ActionContext
from collectors.base import ClusterSources, Entity
from replay.kube import KubernetesStandIn, RecordedRequest

NS = "llm"
DEPLOYMENT_UID = "0b7e2f10-5c1a-4d7e-9a51-2f3c8d9e1a01"
CANARY_UID = "0b7e2f10-5c1a-4d7e-9a51-2f3c8d9e1a99"
RS11, RS12 = "chat-api-7c9f8d6b54", "chat-api-6f4d9b8c7d"
RS11_UID = "6a0c1d22-3b4e-4f50-8a61-7c8d9e0f1a11"
RS12_UID = "9d3f4e55-6a7b-4c8d-9e0f-1a2b3c4d5e21"
IMAGE_11 = "registry.acme.internal/ml/chat-api:v2.3.9"
IMAGE_12 = "registry.acme.internal/ml/chat-api:v2.4.0"
POD_A, POD_B = "chat-api-6f4d9b8c7d-4kq2v", "chat-api-6f4d9b8c7d-h7xwp"

CHAT_API = Entity("Deployment", NS, "chat-api")
RERANKER = Entity("Deployment", "search", "reranker")
NODE = Entity("Node", None, "gpu-node-2")
OTHER_NODE = Entity("Node", None, "gpu-node-1")
CORDONED_NODE = Entity("Node", None, "gpu-node-3")
POD = Entity("Pod", NS, POD_A)
BARE_POD = Entity("Pod", NS, "debug-shell")

ALERTS = [
    {
        "alertname": "ChatAPIHighErrorRate",
        "namespace": NS,
        "job": "chat-api",
        "severity": "critical",
    },
    {"alertname": "VLLMTimeToFirstTokenHigh", "namespace": NS, "job": "chat-api"},
]
SCOPE = {CHAT_API, NODE, CORDONED_NODE, POD, Entity("Pod", NS, POD_B), BARE_POD}

RESOURCES = {
    "limits": {"nvidia.com/gpu": "1", "memory": "48Gi"},
    "requests": {"cpu": "6", "memory": "40Gi"},
}


def container(image: str, context: str, tokenizer: str) -> dict:
    return {
        "name": "vllm",
        "image": image,
        "args": ["--model", "/models/llama-3.1-8b", "--max-model-len", context],
        "env": [{"name": "TOKENIZER_MODE", "value": tokenizer}],
        "resources": copy.deepcopy(RESOURCES),
    }


def template(image: str, context: str, tokenizer: str, pod_hash: str | None = None) -> dict:
    labels = {"app": "chat-api"}
    if pod_hash:
        labels["pod-template-hash"] = pod_hash
    return {
        "metadata": {"labels": labels},
        "spec": {"containers": [container(image, context, tokenizer)]},
    }


def owner(kind: str, name: str, uid: str, api_version: str = "apps/v1") -> list[dict]:
    return [
        {
            "apiVersion": api_version,
            "kind": kind,
            "name": name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def pod(name: str, namespace: str, node: str, *, owners: list[dict] | None = None, **meta) -> dict:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, **meta}
    if owners:
        metadata["ownerReferences"] = owners
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": f"registry.acme.internal/{name}:1"}],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "main",
                    "ready": True,
                    "state": {"running": {"startedAt": "2026-11-23T09:00:00Z"}},
                }
            ],
        },
    }


def node(name: str, **spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"providerID": f"aws:///eu-west-1a/{name}", **spec},
        "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8"}},
    }


def objects(disruptions_allowed: int = 1) -> list[dict]:
    chat_pod = {"labels": {"app": "chat-api", "pod-template-hash": "6f4d9b8c7d"}}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "chat-api",
                "namespace": NS,
                "uid": DEPLOYMENT_UID,
                "generation": 14,
                "labels": {"app": "chat-api"},
                "annotations": {
                    "deployment.kubernetes.io/revision": "12",
                    "kubernetes.io/change-cause": "argocd sync v2.4.0",
                    "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"Deployment"}',
                    "argocd.argoproj.io/tracking-id": "llm-chat-api:apps/Deployment:llm/chat-api",
                },
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "chat-api"}},
                "template": template(IMAGE_12, "16384", "fast"),
            },
            "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "chat-api-canary", "namespace": NS, "uid": CANARY_UID},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "chat-api", "track": "canary"}},
                "template": {
                    "metadata": {"labels": {"app": "chat-api", "track": "canary"}},
                    "spec": {"containers": [container(IMAGE_12, "4096", "fast")]},
                },
            },
        },
        replicaset(RS11, RS11_UID, "11", template(IMAGE_11, "8192", "slow", "7c9f8d6b54"), 0),
        replicaset(RS12, RS12_UID, "12", template(IMAGE_12, "16384", "fast", "6f4d9b8c7d"), 2),
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "chat-api-canary-5d6b7c8d9f",
                "namespace": NS,
                "labels": {"app": "chat-api", "track": "canary", "pod-template-hash": "5d6b7c8d9f"},
                "annotations": {"deployment.kubernetes.io/revision": "10"},
                "ownerReferences": owner("Deployment", "chat-api-canary", CANARY_UID),
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "chat-api", "track": "canary"}},
                "template": {
                    "metadata": {
                        "labels": {
                            "app": "chat-api",
                            "track": "canary",
                            "pod-template-hash": "5d6b7c8d9f",
                        }
                    },
                    "spec": {
                        "containers": [
                            container("registry.acme.internal/ml/chat-api:v1.0.0", "4096", "fast")
                        ]
                    },
                },
            },
        },
        pod(POD_A, NS, "gpu-node-2", owners=owner("ReplicaSet", RS12, RS12_UID), **chat_pod),
        pod(POD_B, NS, "gpu-node-2", owners=owner("ReplicaSet", RS12, RS12_UID), **chat_pod),
        pod("debug-shell", NS, "gpu-node-2"),
        pod(
            "dcgm-exporter-x8k2p",
            "gpu-operator",
            "gpu-node-2",
            owners=owner("DaemonSet", "dcgm-exporter", "5b1f7c3e-0d2a-4e6b-9c8d-7a6b5c4d3e2f"),
        ),
        pod(
            "kube-proxy-gpu-node-2",
            "kube-system",
            "gpu-node-2",
            owners=owner("Node", "gpu-node-2", "11111111-2222-4333-8444-555555555555", "v1"),
            annotations={"kubernetes.io/config.mirror": "3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f"},
        ),
        pod(
            "reranker-84c6d7f9b-t5vnk",
            "search",
            "gpu-node-1",
            owners=owner(
                "ReplicaSet", "reranker-84c6d7f9b", "7e6d5c4b-3a2f-4e1d-8c0b-9a8f7e6d5c4b"
            ),
        ),
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {
                "name": "dcgm-exporter",
                "namespace": "gpu-operator",
                "uid": "5b1f7c3e-0d2a-4e6b-9c8d-7a6b5c4d3e2f",
            },
            "spec": {
                "selector": {"matchLabels": {"app": "dcgm-exporter"}},
                "template": {
                    "metadata": {"labels": {"app": "dcgm-exporter"}},
                    "spec": {"containers": [{"name": "main", "image": "nvcr.io/dcgm-exporter:3"}]},
                },
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "chat-api", "namespace": NS},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "chat-api"}}},
            "status": {
                "currentHealthy": 2,
                "desiredHealthy": 1,
                "disruptionsAllowed": disruptions_allowed,
                "expectedPods": 2,
            },
        },
        node("gpu-node-1"),
        node("gpu-node-2"),
        node("gpu-node-3", unschedulable=True),
    ]


def replicaset(name: str, uid: str, revision: str, pod_template: dict, replicas: int) -> dict:
    image = pod_template["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": uid,
            "labels": dict(pod_template["metadata"]["labels"]),
            "annotations": {
                "deployment.kubernetes.io/revision": revision,
                "deployment.kubernetes.io/desired-replicas": "2",
                "deployment.kubernetes.io/max-replicas": "3",
                "kubernetes.io/change-cause": f"argocd sync {image}",
            },
            "ownerReferences": owner("Deployment", "chat-api", DEPLOYMENT_UID),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(pod_template["metadata"]["labels"])},
            "template": pod_template,
        },
    }


STATE_KINDS = ("Deployment", "ReplicaSet", "Pod", "Node", "PodDisruptionBudget", "DaemonSet")


@dataclass
class World:
    kube: KubernetesStandIn
    api: client.ApiClient
    alerts: list[dict[str, str]] = field(default_factory=lambda: copy.deepcopy(ALERTS))

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def cluster(self) -> ClusterSources:
        return ClusterSources(name="actions", kubeconfig=yaml.safe_dump(self.kube.kubeconfig()))

    def ctx(self, scope: set[Entity] | None = None, **kwargs: Any) -> ActionContext:
        return ActionContext(
            cluster=kwargs.pop("cluster", self.cluster),
            scope_entities=set(SCOPE if scope is None else scope),
            alert_labels=kwargs.pop("alert_labels", self.alerts),
            timeout=5.0,
            actor=kwargs.pop("actor", "vigil:alice"),
            **kwargs,
        )

    def state(self) -> dict[str, list[dict]]:
        """Every object the actions could touch, as stored now."""
        return {kind: self.kube.list_objects(kind) for kind in STATE_KINDS}

    def allow_disruptions(self, allowed: int, budget: str = "chat-api") -> None:
        """What the disruption controller does once evicted pods' replacements are ready."""
        pdb = self.kube.get("PodDisruptionBudget", budget, NS)
        pdb["status"]["disruptionsAllowed"] = allowed
        with self.kube._cluster._lock:
            self.kube._cluster._store(pdb)

    def writes(self) -> list[RecordedRequest]:
        return list(self.kube.requests)

    def forget_requests(self) -> None:
        self.kube.requests.clear()

    def deployment(self) -> dict:
        """chat-api read back through the official client, as its JSON."""
        return self.api.sanitize_for_serialization(
            self.apps.read_namespaced_deployment("chat-api", NS)
        )


@contextmanager
def open_world(extra: list[dict] | None = None, *, disruptions_allowed: int = 1) -> Iterator[World]:
    kube = KubernetesStandIn(objects(disruptions_allowed) + list(extra or [])).start()
    api = kube.api_client()
    try:
        yield World(kube=kube, api=api)
    finally:
        api.close()
        kube.stop()


def wire(request: RecordedRequest) -> tuple[str, str, dict, str | None, Any]:
    """(method, path, query, content type, body) of a request the stand-in received."""
    return (request.method, request.path, request.query, request.content_type, request.body)


def preview_request(request: dict) -> tuple[str, str, dict, str | None, Any]:
    return (
        request["method"],
        request["path"],
        request["query"],
        request["content_type"],
        request["body"],
    )

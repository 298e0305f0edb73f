"""Scope resolution: alert labels → the Kubernetes objects an incident is about, via the real client."""

from __future__ import annotations

from datetime import timedelta

from collectors.base import ClusterSources, Entity, Gpu
from collectors.scope import resolve_scope
from tests.collectors.conftest import alert, forbidden


def names(entities: list[Entity]) -> set[str]:
    return {e.name for e in entities}


def test_a_service_and_job_label_resolve_the_deployment_its_replicasets_and_pods(open_world):
    world = open_world("01-bad-deploy")
    scope = resolve_scope(world.alerts, world.cluster, timeout=5)
    assert scope.deployments == [Entity("Deployment", "llm", "chat-api")]
    assert names(scope.replicasets) == {"chat-api-6f4d9b8c7d", "chat-api-7c9f8d6b54"}
    assert names(scope.pods) == {"chat-api-6f4d9b8c7d-4kq2v", "chat-api-6f4d9b8c7d-h7xwp"}
    assert names(scope.nodes) == {"gpu-node-2", "gpu-node-4"}
    assert scope.models == ["llama-3.1-8b-chat"]
    assert "chat-api" in scope.jobs and "llm" in scope.namespaces
    # the distractor alert names a pod the cluster does not have: said, and left out
    assert not any(p.name.startswith("ingress-nginx") for p in scope.pods)
    assert any("ingress-nginx-controller-6b9d8c7f5-2xkzp" in note for note in scope.notes)


def test_named_pods_resolve_their_owner_chain_and_nodes(open_world):
    world = open_world("05-crash-loop")
    scope = resolve_scope(world.alerts, world.cluster, timeout=5)
    assert names(scope.pods) == {"ingest-worker-7d9c8b6f5-nq4wz", "ingest-worker-7d9c8b6f5-b8rtc"}
    assert scope.replicasets == [Entity("ReplicaSet", "rag", "ingest-worker-7d9c8b6f5")]
    assert scope.deployments == [Entity("Deployment", "rag", "ingest-worker")]
    assert names(scope.nodes) == {"cpu-node-2", "cpu-node-6"}
    assert scope.containers == ["worker"]


def test_a_node_label_brings_the_pods_on_that_node_and_their_workloads(open_world):
    world = open_world("06-node-failure")
    scope = resolve_scope(world.alerts, world.cluster, timeout=5)
    assert Entity("Node", None, "cpu-node-2") in scope.nodes
    on_node = {
        "checkout-api-5c8d7b9f6-k2x7m",
        "query-router-6b7c8d9e5-p4w2n",
        "guardrails-7f6d5c4b8-r9t3v",
    }
    assert on_node <= names(scope.pods)
    assert {"checkout-api", "query-router", "guardrails"} <= names(scope.deployments)
    assert {"web", "search", "llm"} <= set(scope.namespaces)
    # a scrape target's service that is no object in the cluster
    assert any("kube-prometheus-stack-kubelet" in note for note in scope.notes)


def test_dcgm_labels_give_the_gpu_and_its_node(open_world):
    world = open_world("07-gpu-memory-exhaustion")
    scope = resolve_scope(world.alerts, world.cluster, timeout=5)
    assert Gpu(node="gpu-l40s-2", index="0") in scope.gpus
    assert Entity("Node", None, "gpu-l40s-2") in scope.nodes
    assert "vision-captioner-6d8b7c9f45-w7mzn" in names(scope.pods)
    # modelName is the GPU's model, not a served model
    assert "NVIDIA L40S" not in scope.models


def test_an_instance_address_resolves_to_the_pod_with_that_ip(open_world):
    world = open_world("01-bad-deploy")
    alerts = [alert({"alertname": "TargetSlow", "job": "vllm-pods", "instance": "10.42.3.21:8000"})]
    scope = resolve_scope(alerts, world.cluster, timeout=5)
    assert scope.pods == [Entity("Pod", "llm", "chat-api-6f4d9b8c7d-4kq2v")]
    assert scope.deployments == [Entity("Deployment", "llm", "chat-api")]


def test_an_instance_address_of_a_node_resolves_to_the_node(open_world):
    world = open_world("06-node-failure")
    alerts = [alert({"alertname": "HostDown", "job": "node-agent", "instance": "10.0.4.2:9100"})]
    scope = resolve_scope(alerts, world.cluster, timeout=5)
    assert scope.nodes == [Entity("Node", None, "cpu-node-2")]
    unknown = [alert({"alertname": "HostDown", "job": "node-agent", "instance": "10.9.9.9:9100"})]
    assert any("10.9.9.9" in note for note in resolve_scope(unknown, world.cluster, 5).notes)


STS_WORLD = [
    {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "vllm-tp", "namespace": "llm", "uid": "sts-uid"},
        "spec": {
            "replicas": 2,
            "serviceName": "vllm-tp",
            "selector": {"matchLabels": {"app": "vllm-tp"}},
            "template": {
                "metadata": {"labels": {"app": "vllm-tp"}},
                "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.6.3"}]},
            },
        },
    },
    *[
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"vllm-tp-{i}",
                "namespace": "llm",
                "labels": {"app": "vllm-tp"},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "StatefulSet",
                        "name": "vllm-tp",
                        "uid": "sts-uid",
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "nodeName": f"gpu-{i}",
                "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.6.3"}],
            },
            "status": {
                "podIP": f"10.42.9.{i}",
                "containerStatuses": [
                    {"state": {"running": {"startedAt": "2026-11-23T09:00:00Z"}}}
                ],
            },
        }
        for i in range(2)
    ],
    {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "dcgm-exporter", "namespace": "gpu-operator", "uid": "ds-uid"},
        "spec": {
            "selector": {"matchLabels": {"app": "dcgm-exporter"}},
            "template": {
                "metadata": {"labels": {"app": "dcgm-exporter"}},
                "spec": {
                    "containers": [
                        {"name": "exporter", "image": "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.5"}
                    ]
                },
            },
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "dcgm-exporter-x7k2p",
            "namespace": "gpu-operator",
            "labels": {"app": "dcgm-exporter"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "name": "dcgm-exporter",
                    "uid": "ds-uid",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "nodeName": "gpu-1",
            "containers": [{"name": "exporter", "image": "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.5"}],
        },
        "status": {
            "containerStatuses": [{"state": {"running": {"startedAt": "2026-11-23T09:00:00Z"}}}]
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "frontend", "namespace": "llm"},
        "spec": {"selector": {"app": "vllm-tp"}, "ports": [{"port": 8000}]},
    },
]


def test_statefulset_and_daemonset_owners_and_selectors_resolve(open_world):
    world = open_world(objects=STS_WORLD)
    scope = resolve_scope(
        [
            alert({"alertname": "A", "namespace": "llm", "statefulset": "vllm-tp"}),
            alert({"alertname": "B", "namespace": "gpu-operator", "pod": "dcgm-exporter-x7k2p"}),
        ],
        world.cluster,
        timeout=5,
    )
    assert scope.statefulsets == [Entity("StatefulSet", "llm", "vllm-tp")]
    assert scope.daemonsets == [Entity("DaemonSet", "gpu-operator", "dcgm-exporter")]
    assert names(scope.pods) == {"vllm-tp-0", "vllm-tp-1", "dcgm-exporter-x7k2p"}
    assert names(scope.nodes) == {"gpu-0", "gpu-1"}
    assert scope.notes == []


def test_a_service_label_that_is_no_workload_name_resolves_through_the_service_selector(open_world):
    world = open_world(objects=STS_WORLD)
    scope = resolve_scope(
        [alert({"alertname": "Slow", "namespace": "llm", "service": "frontend"})], world.cluster, 5
    )
    assert scope.services == [Entity("Service", "llm", "frontend")]
    assert names(scope.pods) == {"vllm-tp-0", "vllm-tp-1"}
    assert scope.statefulsets == [Entity("StatefulSet", "llm", "vllm-tp")]


def test_names_without_a_namespace_are_looked_up_or_noted(open_world):
    world = open_world("05-crash-loop")
    scope = resolve_scope(
        [
            alert({"alertname": "A", "pod": "ingest-worker-7d9c8b6f5-nq4wz"}),
            alert({"alertname": "B", "deployment": "ingest-worker"}),
        ],
        world.cluster,
        timeout=5,
    )
    assert Entity("Pod", "rag", "ingest-worker-7d9c8b6f5-nq4wz") in scope.pods
    assert scope.deployments == [Entity("Deployment", "rag", "ingest-worker")]
    assert any("deployment ingest-worker named without a namespace" in n for n in scope.notes)


def test_an_unreachable_cluster_leaves_the_label_scope_with_a_note(open_world, closed_port_cluster):
    world = open_world("05-crash-loop")
    scope = resolve_scope(world.alerts, closed_port_cluster, timeout=2)
    assert names(scope.pods) == {"ingest-worker-7d9c8b6f5-nq4wz", "ingest-worker-7d9c8b6f5-b8rtc"}
    assert scope.deployments == []  # only a cluster could tell the owner
    assert len(scope.notes) == 1
    assert "unreachable" in scope.notes[0] and "alert labels only" in scope.notes[0]


def test_no_kubernetes_access_is_noted():
    scope = resolve_scope(
        [alert({"alertname": "A", "namespace": "llm", "deployment": "chat-api"})],
        ClusterSources(name="metrics-only", prometheus_url="http://prom:9090"),
        timeout=2,
    )
    assert scope.deployments == [Entity("Deployment", "llm", "chat-api")]
    assert scope.notes == [
        "cluster metrics-only has no Kubernetes access configured: scope from alert labels only"
    ]


def test_rbac_refusals_are_noted_and_the_label_scope_kept(fake_server):
    server = fake_server(forbidden)
    scope = resolve_scope(
        [
            alert(
                {
                    "alertname": "A",
                    "namespace": "llm",
                    "pod": "chat-api-6f4d9b8c7d-4kq2v",
                    "node": "gpu-node-2",
                }
            )
        ],
        server.cluster(),
        timeout=2,
    )
    assert scope.pods == [Entity("Pod", "llm", "chat-api-6f4d9b8c7d-4kq2v")]
    assert scope.nodes == [Entity("Node", None, "gpu-node-2")]
    assert any("forbids get pod llm/chat-api-6f4d9b8c7d-4kq2v (RBAC)" in n for n in scope.notes)
    assert any("forbids get node gpu-node-2 (RBAC)" in n for n in scope.notes)


def test_a_slow_cluster_stops_resolution_at_the_first_timeout(fake_server):
    server = fake_server(forbidden, delay=3)
    scope = resolve_scope(
        [
            alert(
                {"alertname": "A", "namespace": "llm", "pod": "p-1", "node": "n-1"},
                ago=timedelta(0),
            )
        ],
        server.cluster(),
        timeout=0.5,
    )
    assert len(server.paths) == 1  # one attempt, then no more asking
    assert "timed out" in scope.notes[0]


def test_exported_labels_name_the_subject_rather_than_the_exporter(open_world):
    world = open_world("05-crash-loop")
    scraped = alert(
        {
            "alertname": "KubePodCrashLooping",
            "namespace": "monitoring",
            "pod": "kube-state-metrics-6d5f8b7c9-abcde",
            "exported_namespace": "rag",
            "exported_pod": "ingest-worker-7d9c8b6f5-nq4wz",
            "job": "kube-state-metrics",
        }
    )
    scope = resolve_scope([scraped], world.cluster, timeout=5)
    assert scope.pods == [Entity("Pod", "rag", "ingest-worker-7d9c8b6f5-nq4wz")]
    assert scope.notes == []


def test_a_job_label_without_a_namespace_finds_the_deployment_of_that_name(open_world):
    world = open_world("05-crash-loop")
    scope = resolve_scope([alert({"alertname": "Lag", "job": "ingest-worker"})], world.cluster, 5)
    assert scope.deployments == [Entity("Deployment", "rag", "ingest-worker")]
    assert len(scope.pods) == 3 and scope.namespaces == ["rag"]

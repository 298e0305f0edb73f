"""The Kubernetes stand-in, exercised only through the official client, as Vigil uses it.

Every answer goes through `kubernetes` 37's pydantic models, so a field a real API server always
sends and the stand-in forgot fails here as a validation error, not later in a collector.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from replay.kube import KubernetesStandIn
from replay.kube_objects import rfc3339, rfc3339_nano
from replay.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


@cache
def scenario(stem: str) -> Scenario:
    return load_scenario(ROOT / "scenarios" / f"{stem}.yaml")


class Apis:
    """The official client's API groups, bound to one stand-in."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.events = client.EventsV1Api(api)
        self.version = client.VersionApi(api)


@pytest.fixture
def open_world():
    """Start a stand-in (a scenario's world, or given objects and logs) at NOW; stopped afterwards.

    Hands back the stand-in and the official client's APIs bound to it.
    """
    opened = []

    def open_(
        stem: str | None = None,
        *,
        objects: list[dict] | None = None,
        logs: list[dict] | None = None,
    ) -> tuple[KubernetesStandIn, Apis]:
        if stem is not None:
            objects, logs = (
                scenario(stem).kubernetes_objects(NOW),
                scenario(stem).kubernetes_logs(NOW),
            )
        kube = KubernetesStandIn(objects or [], logs, clock=clock).start()
        api = kube.api_client()
        opened.append((kube, api))
        return kube, Apis(api)

    yield open_
    for kube, api in opened:
        api.close()
        kube.stop()


def readers_api_version(kind: str) -> str:
    return "v1" if kind in ("Pod", "Node", "Event", "Service") else "apps/v1"


def status_body(exc: ApiException) -> dict:
    return json.loads(exc.body)


# --- every scenario, read end to end -------------------------------------------------------------


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_object_of_every_scenario_lists_and_reads_without_validation_errors(path, open_world):
    objects = scenario(path.stem).kubernetes_objects(NOW)
    kube, k = open_world(path.stem)
    listed = {
        "Pod": k.core.list_pod_for_all_namespaces().items,
        "Node": k.core.list_node().items,
        "Event": k.core.list_event_for_all_namespaces().items,
        "Service": k.core.list_service_for_all_namespaces().items,
        "Deployment": k.apps.list_deployment_for_all_namespaces().items,
        "ReplicaSet": k.apps.list_replica_set_for_all_namespaces().items,
        "StatefulSet": k.apps.list_stateful_set_for_all_namespaces().items,
        "DaemonSet": k.apps.list_daemon_set_for_all_namespaces().items,
    }
    readers = {
        "Pod": k.core.read_namespaced_pod,
        "Node": lambda name, _: k.core.read_node(name),
        "Event": k.core.read_namespaced_event,
        "Service": k.core.read_namespaced_service,
        "Deployment": k.apps.read_namespaced_deployment,
        "ReplicaSet": k.apps.read_namespaced_replica_set,
        "StatefulSet": k.apps.read_namespaced_stateful_set,
        "DaemonSet": k.apps.read_namespaced_daemon_set,
    }
    namespaced_lists = {
        "Pod": k.core.list_namespaced_pod,
        "Event": k.core.list_namespaced_event,
        "Service": k.core.list_namespaced_service,
        "Deployment": k.apps.list_namespaced_deployment,
        "ReplicaSet": k.apps.list_namespaced_replica_set,
    }
    for kind, items in listed.items():
        assert all((i.kind, i.api_version) == (kind, readers_api_version(kind)) for i in items)
    assert Counter(o["kind"] for o in objects) == Counter(
        {kind: len(items) for kind, items in listed.items() if items}
    )
    for obj in objects:
        kind, metadata = obj["kind"], obj["metadata"]
        namespace = metadata.get("namespace")
        read = readers[kind](metadata["name"], namespace)
        assert read.kind == kind
        assert read.metadata.name == metadata["name"]
        assert read.metadata.uid == metadata.get("uid", read.metadata.uid)
        assert read.metadata.resource_version
        assert read.metadata.creation_timestamp is not None
        if kind in namespaced_lists:
            in_namespace = namespaced_lists[kind](namespace).items
            assert metadata["name"] in {i.metadata.name for i in in_namespace}
            assert {i.metadata.namespace for i in in_namespace} == {namespace}
        if kind == "Event":
            converted = k.events.read_namespaced_event(metadata["name"], namespace)
            assert converted.note == obj.get("message")
            assert converted.regarding.name == obj["involvedObject"]["name"]
            assert converted.deprecated_count == obj.get("count", 1)
            assert converted.event_time is not None
        if kind == "Deployment":
            scale = k.apps.read_namespaced_deployment_scale(metadata["name"], namespace)
            assert scale.spec.replicas == obj["spec"].get("replicas", 1)
    events_v1 = k.events.list_event_for_all_namespaces().items
    assert len(events_v1) == len(listed["Event"])
    namespaces = {i.metadata.name for i in k.core.list_namespace().items}
    assert {
        o["metadata"]["namespace"] for o in objects if "namespace" in o["metadata"]
    } <= namespaces


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_log_of_every_scenario_reads_with_each_option(path, open_world):
    logs = scenario(path.stem).kubernetes_logs(NOW)
    kube, k = open_world(path.stem)
    for log in logs:
        lines = log["lines"]
        where = {
            "name": log["pod"],
            "namespace": log["namespace"],
            "container": log["container"],
            "previous": log["previous"],
        }
        assert k.core.read_namespaced_pod_log(**where) == "".join(
            f"{line['text']}\n" for line in lines
        )
        assert k.core.read_namespaced_pod_log(**where, tail_lines=2) == "".join(
            f"{line['text']}\n" for line in lines[-2:]
        )
        assert k.core.read_namespaced_pod_log(**where, tail_lines=0) == ""
        stamped = k.core.read_namespaced_pod_log(**where, timestamps=True)
        assert stamped.splitlines() == [
            f"{rfc3339_nano(line['at'])} {line['text']}" for line in lines
        ]
        recent = k.core.read_namespaced_pod_log(**where, since_seconds=300)
        assert recent == "".join(
            f"{line['text']}\n" for line in lines if line["at"] >= NOW - timedelta(seconds=300)
        )


# --- logs: the kubelet's rules -------------------------------------------------------------------


def pod(
    name: str,
    containers: list[str],
    statuses: list[dict],
    *,
    node: str | None = "gpu-1",
    **metadata,
) -> dict:
    spec: dict = {
        "containers": [{"name": c, "image": f"registry.example/{c}:1"} for c in containers]
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "llm", **metadata},
        "spec": spec,
        "status": {"phase": "Running", "containerStatuses": statuses},
    }


def lines(*texts: str, minutes_ago: int = 10) -> list[dict]:
    return [
        {"at": NOW - timedelta(minutes=minutes_ago - i), "text": t} for i, t in enumerate(texts)
    ]


LOG_WORLD = {
    "objects": [
        pod(
            "single",
            ["vllm"],
            [{"name": "vllm", "state": {"running": {"startedAt": rfc3339(NOW)}}}],
        ),
        pod("pair", ["vllm", "proxy"], []),
        pod(
            "crashing",
            ["worker"],
            [
                {
                    "name": "worker",
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 1}},
                }
            ],
        ),
        pod(
            "pulling",
            ["render"],
            [{"name": "render", "state": {"waiting": {"reason": "ImagePullBackOff"}}}],
        ),
        pod("unscheduled", ["guard"], [], node=None),
    ],
    "logs": [
        {
            "namespace": "llm",
            "pod": "single",
            "container": "vllm",
            "previous": False,
            "lines": lines("one", "two", "three", "ünïcode"),
        },
        {
            "namespace": "llm",
            "pod": "pair",
            "container": "proxy",
            "previous": False,
            "lines": lines("proxy up"),
        },
        {
            "namespace": "llm",
            "pod": "crashing",
            "container": "worker",
            "previous": True,
            "lines": lines("KeyError: 'VECTOR_DB_URL'"),
        },
    ],
}


def test_logs_default_to_the_only_container_and_honour_since_tail_and_limit(open_world):
    kube, k = open_world(**LOG_WORLD)
    assert k.core.read_namespaced_pod_log("single", "llm") == "one\ntwo\nthree\nünïcode\n"
    # lines are 10, 9, 8 and 7 minutes old; sinceSeconds counts back from the stand-in's clock
    assert (
        k.core.read_namespaced_pod_log("single", "llm", since_seconds=9 * 60)
        == "two\nthree\nünïcode\n"
    )
    assert (
        k.core.read_namespaced_pod_log("single", "llm", since_seconds=9 * 60, tail_lines=1)
        == "ünïcode\n"
    )
    assert k.core.read_namespaced_pod_log("single", "llm", limit_bytes=6) == "one\ntw"
    stamped = k.core.read_namespaced_pod_log("single", "llm", tail_lines=1, timestamps=True)
    assert stamped == "2026-11-23T09:53:00.000000000Z ünïcode\n"


def test_logs_of_a_pod_with_two_containers_need_a_container_name(open_world):
    kube, k = open_world(**LOG_WORLD)
    with pytest.raises(ApiException) as raised:
        k.core.read_namespaced_pod_log("pair", "llm")
    assert raised.value.status == 400
    assert (
        status_body(raised.value)["message"]
        == "a container name must be specified for pod pair, choose one of: [vllm proxy]"
    )
    assert k.core.read_namespaced_pod_log("pair", "llm", container="proxy") == "proxy up\n"
    with pytest.raises(ApiException) as raised:
        k.core.read_namespaced_pod_log("pair", "llm", container="sidecar")
    assert status_body(raised.value)["message"] == "container sidecar is not valid for pod pair"


def test_previous_log_is_a_400_when_there_was_no_previous_instance(open_world):
    kube, k = open_world(**LOG_WORLD)
    with pytest.raises(ApiException) as raised:
        k.core.read_namespaced_pod_log("single", "llm", previous=True)
    assert raised.value.status == 400
    assert (
        status_body(raised.value)["message"]
        == 'previous terminated container "vllm" in pod "single" not found'
    )
    assert (
        k.core.read_namespaced_pod_log("crashing", "llm", previous=True)
        == "KeyError: 'VECTOR_DB_URL'\n"
    )


def test_a_crash_looping_container_serves_its_last_run_and_a_pulling_one_says_why_it_has_none(
    open_world,
):
    kube, k = open_world(**LOG_WORLD)
    # kubectl logs (without --previous) of a CrashLoopBackOff pod shows the last terminated run
    assert k.core.read_namespaced_pod_log("crashing", "llm") == "KeyError: 'VECTOR_DB_URL'\n"
    with pytest.raises(ApiException) as raised:
        k.core.read_namespaced_pod_log("pulling", "llm")
    assert raised.value.status == 400
    assert (
        status_body(raised.value)["message"]
        == 'container "render" in pod "pulling" is waiting to start: trying and failing to pull image'
    )
    assert k.core.read_namespaced_pod_log("unscheduled", "llm") == ""
    with pytest.raises(ApiException) as raised:
        k.core.read_namespaced_pod_log("gone", "llm")
    assert raised.value.status == 404


def test_impossible_input_is_refused_when_the_standin_is_built():
    with pytest.raises(ValueError, match="no Pod llm/ghost"):
        KubernetesStandIn(
            LOG_WORLD["objects"],
            [{"namespace": "llm", "pod": "ghost", "container": "c", "lines": []}],
        )
    with pytest.raises(ValueError, match="serves no kind 'ConfigMap'"):
        KubernetesStandIn([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}])
    with pytest.raises(ValueError, match="duplicate Pod llm/single"):
        KubernetesStandIn([LOG_WORLD["objects"][0], LOG_WORLD["objects"][0]])


def test_missing_fields_are_filled_as_a_real_api_server_sends_them(open_world):
    sparse_node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "gpu-1"},
        "status": {"capacity": {"nvidia.com/gpu": 8}},
    }
    sparse_event = {
        "apiVersion": "v1",
        "kind": "Event",
        "involvedObject": {"kind": "Pod", "name": "single", "namespace": "llm"},
        "reason": "Started",
        "message": "Started container vllm",
        "lastTimestamp": rfc3339(NOW),
        "metadata": {"name": "single.1", "namespace": "llm"},
    }
    objects = [*LOG_WORLD["objects"], sparse_node, sparse_event]
    kube, k = open_world(objects=objects)
    node = k.core.read_node("gpu-1")
    assert node.status.allocatable == {"nvidia.com/gpu": "8"}
    assert node.status.node_info.kubelet_version == "v1.36.0"
    assert [(a.type, a.address) for a in node.status.addresses] == [("Hostname", "gpu-1")]
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    single = k.core.read_namespaced_pod("single", "llm")
    status = single.status.container_statuses[0]
    assert (status.image, status.image_id, status.ready, status.restart_count) == (
        "registry.example/vllm:1",
        "",
        True,
        0,
    )
    assert single.status.qos_class == "BestEffort"
    crashing = k.core.read_namespaced_pod("crashing", "llm").status.container_statuses[0]
    assert crashing.ready is False
    event = k.events.read_namespaced_event("single.1", "llm")
    assert event.event_time == NOW
    assert event.deprecated_count == 1
    assert event.type == "Normal"


# --- selectors, paging, errors, discovery --------------------------------------------------------


def names(items) -> set[str]:
    return {i.metadata.name for i in items}


def test_label_selectors(open_world):
    kube, k = open_world("01-bad-deploy")
    new, old = "chat-api-6f4d9b8c7d", "chat-api-7c9f8d6b54"
    assert (
        len(
            k.core.list_namespaced_pod(
                "llm", label_selector="app.kubernetes.io/name=chat-api"
            ).items
        )
        == 2
    )
    assert (
        len(
            k.core.list_namespaced_pod(
                "llm", label_selector="app.kubernetes.io/name==chat-api"
            ).items
        )
        == 2
    )
    rs = k.apps.list_namespaced_replica_set
    assert names(rs("llm", label_selector=f"pod-template-hash!={new.rsplit('-', 1)[1]}").items) == {
        old
    }
    assert names(
        rs("llm", label_selector="pod-template-hash in (6f4d9b8c7d, 7c9f8d6b54)").items
    ) == {new, old}
    assert names(rs("llm", label_selector="pod-template-hash notin (6f4d9b8c7d)").items) == {old}
    assert names(
        rs(
            "llm", label_selector="app.kubernetes.io/name=chat-api,pod-template-hash=6f4d9b8c7d"
        ).items
    ) == {new}
    assert names(rs("llm", label_selector="pod-template-hash").items) == {new, old}
    assert names(rs("llm", label_selector="!pod-template-hash").items) == set()
    assert names(
        k.apps.list_namespaced_deployment("llm", label_selector="!pod-template-hash").items
    ) == {"chat-api"}
    with pytest.raises(ApiException) as raised:
        rs("llm", label_selector="a in (b")
    assert raised.value.status == 400


def test_field_selectors(open_world):
    kube, k = open_world("06-node-failure")
    on_node = k.core.list_pod_for_all_namespaces(field_selector="spec.nodeName=cpu-node-2").items
    assert names(on_node) == {
        "checkout-api-5c8d7b9f6-k2x7m",
        "query-router-6b7c8d9e5-p4w2n",
        "guardrails-7f6d5c4b8-r9t3v",
    }
    assert names(k.core.list_pod_for_all_namespaces(field_selector="spec.nodeName=").items) == {
        "guardrails-7f6d5c4b8-hq6zj"
    }
    assert names(
        k.core.list_pod_for_all_namespaces(field_selector="status.phase==Pending").items
    ) == {"guardrails-7f6d5c4b8-hq6zj"}
    assert (
        len(k.core.list_pod_for_all_namespaces(field_selector="status.phase!=Pending").items) == 5
    )
    both = "spec.nodeName=cpu-node-2,metadata.namespace=llm"
    assert names(k.core.list_pod_for_all_namespaces(field_selector=both).items) == {
        "guardrails-7f6d5c4b8-r9t3v"
    }
    assert names(
        k.core.list_namespaced_pod(
            "web", field_selector="metadata.name=checkout-api-5c8d7b9f6-w8n4c"
        ).items
    ) == {"checkout-api-5c8d7b9f6-w8n4c"}
    with pytest.raises(ApiException) as raised:
        k.core.list_namespaced_pod("web", field_selector="spec.image=x")
    assert (raised.value.status, status_body(raised.value)["message"]) == (
        400,
        "field label not supported: spec.image",
    )


def test_events_of_an_object_through_both_event_apis(open_world):
    kube, k = open_world("06-node-failure")
    pod_name = "checkout-api-5c8d7b9f6-k2x7m"
    core = k.core.list_namespaced_event(
        "web", field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod_name}"
    ).items
    assert len(core) == 2
    assert {e.involved_object.uid for e in core} == {"a1b3c5d7-e9f1-4a3b-8c5d-7e9f1a3b5c21"}
    by_uid = k.core.list_event_for_all_namespaces(
        field_selector="involvedObject.uid=a1b3c5d7-e9f1-4a3b-8c5d-7e9f1a3b5c21"
    ).items
    assert names(by_uid) == names(core)
    node_events = k.core.list_event_for_all_namespaces(
        field_selector="involvedObject.kind=Node,involvedObject.name=cpu-node-2"
    ).items
    assert len(node_events) == 1
    new = k.events.list_namespaced_event(
        "web", field_selector=f"regarding.kind=Pod,regarding.name={pod_name}"
    ).items
    assert names(new) == names(core)
    for converted in new:
        original = next(e for e in core if e.metadata.name == converted.metadata.name)
        assert converted.note == original.message
        assert converted.reason == original.reason
        assert converted.deprecated_count == original.count
        assert converted.deprecated_first_timestamp == original.first_timestamp
        assert converted.deprecated_last_timestamp == original.last_timestamp
        assert converted.reporting_controller == original.source.component
        if original.count > 1:
            assert converted.series.count == original.count
            assert converted.series.last_observed_time == original.last_timestamp
        else:
            assert converted.series is None
    assert names(
        k.events.list_event_for_all_namespaces(field_selector="regarding.namespace!=web").items
    ) == names(
        k.core.list_event_for_all_namespaces(field_selector="involvedObject.namespace!=web").items
    )


def test_limit_and_continue_page_through_a_list(open_world):
    kube, k = open_world("06-node-failure")
    everything = k.core.list_pod_for_all_namespaces()
    assert (everything.kind, everything.api_version) == ("PodList", "v1")
    assert everything.metadata.resource_version
    keys = [(p.metadata.namespace, p.metadata.name) for p in everything.items]
    assert keys == sorted(keys)
    seen, token = [], None
    while True:
        page = k.core.list_pod_for_all_namespaces(limit=4, _continue=token)
        seen.extend((p.metadata.namespace, p.metadata.name) for p in page.items)
        token = page.metadata.var_continue
        if not token:
            assert page.metadata.remaining_item_count is None
            break
        assert page.metadata.remaining_item_count == len(keys) - len(seen)
    assert seen == keys


def test_continuing_a_list_skips_nothing_when_objects_go_away_between_pages(open_world):
    kube, k = open_world("06-node-failure")
    keys = [
        (p.metadata.namespace, p.metadata.name) for p in k.core.list_pod_for_all_namespaces().items
    ]
    first = k.core.list_pod_for_all_namespaces(limit=2)
    k.core.delete_namespaced_pod(first.items[0].metadata.name, first.items[0].metadata.namespace)
    rest = k.core.list_pod_for_all_namespaces(_continue=first.metadata.var_continue)
    assert [(p.metadata.namespace, p.metadata.name) for p in rest.items] == keys[2:]
    with pytest.raises(ApiException) as raised:
        k.core.list_pod_for_all_namespaces(_continue="not-a-token")
    assert raised.value.status == 400


def test_a_missing_object_is_a_404_status(open_world):
    kube, k = open_world("01-bad-deploy")
    with pytest.raises(ApiException) as raised:
        k.core.read_namespaced_pod("x", "llm")
    assert raised.value.status == 404
    assert status_body(raised.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "x" not found',
        "reason": "NotFound",
        "details": {"name": "x", "kind": "pods"},
        "code": 404,
    }
    with pytest.raises(ApiException) as raised:
        k.apps.read_namespaced_deployment("chat-api", "default")
    assert status_body(raised.value)["message"] == 'deployments.apps "chat-api" not found'
    assert status_body(raised.value)["details"] == {
        "name": "chat-api",
        "group": "apps",
        "kind": "deployments",
    }


def test_version_and_discovery(open_world):
    kube, k = open_world("01-bad-deploy")
    assert k.version.get_code().git_version == "v1.36.0"
    core = k.core.get_api_resources()
    assert core.group_version == "v1"
    by_name = {r.name: r for r in core.resources}
    assert {
        "pods",
        "pods/log",
        "pods/eviction",
        "nodes",
        "events",
        "services",
        "namespaces",
    } <= set(by_name)
    assert (by_name["pods/eviction"].group, by_name["pods/eviction"].kind) == ("policy", "Eviction")
    api = k.core.api_client
    groups = client.ApisApi(api).get_api_versions()
    assert {g.name for g in groups.groups} == {"apps", "events.k8s.io", "policy"}
    apps = client.AppsApi(api).get_api_group()
    assert apps.preferred_version.group_version == "apps/v1"
    assert "deployments/scale" in {r.name for r in k.apps.get_api_resources().resources}
    assert client.EventsV1Api(api).get_api_resources().group_version == "events.k8s.io/v1"
    assert client.PolicyV1Api(api).get_api_resources().resources[0].name == "poddisruptionbudgets"
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]


def test_the_dynamic_client_discovers_reads_and_patches(open_world):
    kube, k = open_world("01-bad-deploy")
    dynamic = DynamicClient(k.core.api_client)
    deployments = dynamic.resources.get(api_version="apps/v1", kind="Deployment")
    assert [d.metadata.name for d in deployments.get(namespace="llm").items] == ["chat-api"]
    events = dynamic.resources.get(api_version="events.k8s.io/v1", kind="Event")
    assert len(events.get(namespace="llm").items) == 3
    patched = deployments.patch(
        name="chat-api",
        namespace="llm",
        body={"spec": {"replicas": 3}},
        content_type="application/merge-patch+json",
    )
    assert (
        patched.spec.replicas == 3 == kube.get("Deployment", "chat-api", "llm")["spec"]["replicas"]
    )


def test_the_kubeconfig_file_works_with_the_official_loader(open_world, tmp_path):
    kube, k = open_world("01-bad-deploy")
    path = kube.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    api = config.new_client_from_config(config_file=str(path))
    with closing(api):
        assert api.configuration.host == kube.url
        assert names(client.CoreV1Api(api).list_namespaced_pod("llm").items) == names(
            k.core.list_namespaced_pod("llm").items
        )


# --- writes --------------------------------------------------------------------------------------


def test_a_dry_run_patch_answers_the_would_be_object_changes_nothing_and_is_recorded(open_world):
    kube, k = open_world("01-bad-deploy")
    before = kube.get("Deployment", "chat-api", "llm")
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "registry.acme.internal/ml/chat-api-vllm:v0.6.3-r41",
                        }
                    ]
                }
            }
        }
    }
    answer = k.apps.patch_namespaced_deployment(
        "chat-api", "llm", patch, dry_run="All", field_manager="vigil"
    )
    assert answer.spec.template.spec.containers[0].image.endswith(":v0.6.3-r41")
    assert answer.metadata.generation == before["metadata"]["generation"] + 1
    assert kube.get("Deployment", "chat-api", "llm") == before
    [request] = kube.requests
    assert (request.method, request.path) == (
        "PATCH",
        "/apis/apps/v1/namespaces/llm/deployments/chat-api",
    )
    assert request.query == {"dryRun": "All", "fieldManager": "vigil"}
    assert request.content_type == "application/strategic-merge-patch+json"
    assert request.body == patch
    assert (request.dry_run, request.applied, request.status) == (True, False, 200)


def test_a_strategic_merge_patch_merges_containers_by_name_and_bumps_versions(open_world):
    kube, k = open_world("01-bad-deploy")
    before = kube.get("Deployment", "chat-api", "llm")
    restarted = rfc3339(NOW)
    patch = {
        "spec": {
            "template": {
                "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": restarted}},
                "spec": {
                    "containers": [
                        {"name": "vllm", "image": "registry.acme.internal/ml/chat-api-vllm:v0.6.5"}
                    ]
                },
            }
        }
    }
    answer = k.apps.patch_namespaced_deployment("chat-api", "llm", patch)
    after = kube.get("Deployment", "chat-api", "llm")
    assert after["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": restarted
    }
    [container] = after["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.acme.internal/ml/chat-api-vllm:v0.6.5"
    assert (
        container["args"] == before["spec"]["template"]["spec"]["containers"][0]["args"]
    )  # merged, not replaced
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    assert answer.metadata.resource_version == after["metadata"]["resourceVersion"]
    assert after["status"] == before["status"]  # status is a subresource: a patch leaves it alone
    assert kube.requests[-1].applied is True


def test_a_json_patch_rolls_back_the_template_as_rollout_undo_does(open_world):
    kube, k = open_world("01-bad-deploy")
    previous = kube.get("ReplicaSet", "chat-api-7c9f8d6b54", "llm")
    template = copy.deepcopy(previous["spec"]["template"])
    del template["metadata"]["labels"]["pod-template-hash"]
    undo = [
        {
            "op": "test",
            "path": "/metadata/annotations/deployment.kubernetes.io~1revision",
            "value": "12",
        },
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": {}},
    ]
    answer = k.apps.patch_namespaced_deployment("chat-api", "llm", undo)
    assert answer.spec.template.spec.containers[0].image.endswith(":v0.6.3-r41")
    after = kube.get("Deployment", "chat-api", "llm")
    assert after["spec"]["template"] == template
    assert after["metadata"]["annotations"] == {}
    assert after["metadata"]["generation"] == 15
    assert kube.requests[-1].content_type == "application/json-patch+json"
    # a failed test applies nothing: patches are all or nothing
    with pytest.raises(ApiException) as raised:
        k.apps.patch_namespaced_deployment(
            "chat-api",
            "llm",
            [
                {"op": "test", "path": "/spec/replicas", "value": 9},
                {"op": "remove", "path": "/spec/template"},
            ],
        )
    assert raised.value.status == 422
    assert kube.get("Deployment", "chat-api", "llm") == after
    assert (kube.requests[-1].applied, kube.requests[-1].status) == (False, 422)


def test_a_merge_patch_and_the_refusals_of_an_update(open_world):
    kube, k = open_world("01-bad-deploy")
    k.apps.patch_namespaced_deployment(
        "chat-api",
        "llm",
        {"metadata": {"labels": {"tier": "gold", "app.kubernetes.io/part-of": None}}},
        _content_type="application/merge-patch+json",
    )
    labels = kube.get("Deployment", "chat-api", "llm")["metadata"]["labels"]
    assert labels == {"app.kubernetes.io/name": "chat-api", "tier": "gold"}
    refusals = [
        ({"spec": {"selector": {"matchLabels": {"app": "other"}}}}, None, 422),
        (
            {"spec": {"template": {"metadata": {"labels": {"app.kubernetes.io/name": "other"}}}}},
            None,
            422,
        ),
        ({"spec": {"replicas": -1}}, None, 422),
        ({"metadata": {"resourceVersion": "1"}}, None, 409),
        ({"spec": {"replicas": 1}}, "application/apply-patch+yaml", 415),
    ]
    for body, content_type, code in refusals:
        kwargs = {"_content_type": content_type} if content_type else {}
        with pytest.raises(ApiException) as raised:
            k.apps.patch_namespaced_deployment("chat-api", "llm", body, **kwargs)
        assert raised.value.status == code, body
    assert status_body(raised.value)["reason"] == "UnsupportedMediaType"
    assert [r.status for r in kube.requests] == [200, 422, 422, 422, 409, 415]


def test_scale_reads_and_changes_replicas(open_world):
    kube, k = open_world("01-bad-deploy")
    scale = k.apps.read_namespaced_deployment_scale("chat-api", "llm")
    assert (scale.kind, scale.api_version) == ("Scale", "autoscaling/v1")
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (
        2,
        2,
        "app.kubernetes.io/name=chat-api",
    )
    dry = k.apps.patch_namespaced_deployment_scale(
        "chat-api", "llm", {"spec": {"replicas": 6}}, dry_run="All"
    )
    assert dry.spec.replicas == 6
    assert kube.get("Deployment", "chat-api", "llm")["spec"]["replicas"] == 2
    scaled = k.apps.patch_namespaced_deployment_scale("chat-api", "llm", {"spec": {"replicas": 4}})
    assert scaled.spec.replicas == 4
    deployment = k.apps.read_namespaced_deployment("chat-api", "llm")
    assert (deployment.spec.replicas, deployment.metadata.generation) == (4, 15)
    assert scaled.metadata.resource_version == deployment.metadata.resource_version
    with pytest.raises(ApiException) as raised:
        k.apps.patch_namespaced_deployment_scale("chat-api", "llm", {"spec": {"replicas": -2}})
    assert raised.value.status == 422


def test_cordon_and_uncordon_a_node(open_world):
    kube, k = open_world("06-node-failure")
    node = k.core.patch_node("cpu-node-2", {"spec": {"unschedulable": True}})
    assert node.spec.unschedulable is True
    assert kube.get("Node", "cpu-node-2")["spec"]["unschedulable"] is True
    assert names(k.core.list_node(field_selector="spec.unschedulable=true").items) == {"cpu-node-2"}
    k.core.patch_node("cpu-node-2", {"spec": {"unschedulable": None}})
    assert "unschedulable" not in kube.get("Node", "cpu-node-2")["spec"]
    assert [(r.method, r.path, r.applied) for r in kube.requests] == [
        ("PATCH", "/api/v1/nodes/cpu-node-2", True)
    ] * 2


def eviction(name: str, namespace: str) -> client.V1Eviction:
    return client.V1Eviction(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        delete_options=client.V1DeleteOptions(grace_period_seconds=30),
    )


def test_eviction_removes_the_pod_unless_dry_run(open_world):
    kube, k = open_world("06-node-failure")
    name = "query-router-6b7c8d9e5-p4w2n"
    k.core.create_namespaced_pod_eviction(name, "search", eviction(name, "search"), dry_run="All")
    assert kube.get("Pod", name, "search") is not None
    k.core.create_namespaced_pod_eviction(name, "search", eviction(name, "search"))
    assert kube.get("Pod", name, "search") is None
    with pytest.raises(ApiException) as raised:
        k.core.read_namespaced_pod(name, "search")
    assert raised.value.status == 404
    with pytest.raises(ApiException) as raised:
        k.core.create_namespaced_pod_eviction(name, "search", eviction(name, "search"))
    assert raised.value.status == 404
    dry, real, gone = kube.requests
    assert (dry.dry_run, dry.applied, dry.status) == (True, False, 201)
    assert (real.dry_run, real.applied, real.status) == (False, True, 201)
    assert real.response == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    }
    assert real.body["deleteOptions"] == {"gracePeriodSeconds": 30}
    assert (gone.applied, gone.status) == (False, 404)


def test_a_disruption_budget_with_no_room_refuses_an_eviction_with_429(open_world):
    loaded = scenario("06-node-failure")
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "query-router", "namespace": "search"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "query-router"}}},
        "status": {
            "currentHealthy": 2,
            "desiredHealthy": 2,
            "disruptionsAllowed": 0,
            "expectedPods": 2,
        },
    }
    kube, k = open_world(objects=[*loaded.kubernetes_objects(NOW), budget])
    name = "query-router-6b7c8d9e5-z5m8k"
    with pytest.raises(ApiException) as raised:
        k.core.create_namespaced_pod_eviction(name, "search", eviction(name, "search"))
    assert raised.value.status == 429
    body = status_body(raised.value)
    assert body["reason"] == "TooManyRequests"
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert kube.get("Pod", name, "search") is not None
    assert (
        client.PolicyV1Api(k.core.api_client)
        .read_namespaced_pod_disruption_budget("query-router", "search")
        .status.disruptions_allowed
        == 0
    )


def test_delete_namespaced_pod_returns_the_pod_and_removes_it(open_world):
    kube, k = open_world("06-node-failure")
    name = "checkout-api-5c8d7b9f6-w8n4c"
    dry = k.core.delete_namespaced_pod(name, "web", dry_run="All")
    assert dry.metadata.name == name
    assert kube.get("Pod", name, "web") is not None
    deleted = k.core.delete_namespaced_pod(name, "web", grace_period_seconds=10)
    assert deleted.metadata.deletion_timestamp == NOW + timedelta(seconds=10)
    assert deleted.metadata.deletion_grace_period_seconds == 10
    assert kube.get("Pod", name, "web") is None
    assert name not in names(k.core.list_namespaced_pod("web").items)
    assert [(r.method, r.dry_run, r.applied) for r in kube.requests] == [
        ("DELETE", True, False),
        ("DELETE", False, True),
    ]
    with pytest.raises(ApiException) as raised:
        k.core.patch_namespaced_pod(
            "checkout-api-5c8d7b9f6-k2x7m", "web", {"metadata": {"labels": {"a": "b"}}}
        )
    assert raised.value.status == 405


def test_concurrent_patches_are_all_applied(open_world):
    kube, k = open_world("01-bad-deploy")

    def label(n: int) -> None:
        k.apps.patch_namespaced_deployment(
            "chat-api", "llm", {"metadata": {"labels": {f"patch-{n}": "yes"}}}
        )

    threads = [threading.Thread(target=label, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    labels = kube.get("Deployment", "chat-api", "llm")["metadata"]["labels"]
    assert {f"patch-{n}" for n in range(16)} <= set(labels)
    assert len({r.response["metadata"]["resourceVersion"] for r in kube.requests}) == 16


def test_a_stopped_standin_answers_nothing_even_on_a_kept_alive_connection(open_world):
    kube, k = open_world("01-bad-deploy")
    url = kube.url
    assert k.core.list_node().items == []
    kube.stop()
    with pytest.raises(Exception, match="Connection refused|Max retries"):
        k.core.list_node(_request_timeout=2)
    with pytest.raises(RuntimeError, match="start"):
        kube.url  # noqa: B018
    assert url.startswith("http://127.0.0.1:")

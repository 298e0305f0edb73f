"""delete-pod, cordon-node, uncordon-node and drain-node against the Kubernetes stand-in."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from assistant.actions import ActionConflict, get
from tests.assistant.actions_support import (
    BARE_POD,
    CORDONED_NODE,
    NODE,
    NS,
    POD,
    POD_A,
    POD_B,
    open_world,
    preview_request,
    wire,
)

SMP = "application/strategic-merge-patch+json"
NODE_PATH = "/api/v1/nodes/gpu-node-2"
POD_PATH = f"/api/v1/namespaces/llm/pods/{POD_A}"


@pytest.fixture
def world():
    with open_world() as opened:
        yield opened


@pytest.fixture(autouse=True)
def _drain_reports_a_blocked_pod_at_once(settings):
    """No retries of refused evictions here unless a test asks (they would wait real seconds)."""
    settings.VIGIL_DRAIN_RETRY_SECONDS = 0


def pod_uid(world, name: str = POD_A) -> str:
    return world.kube.get("Pod", name, NS)["metadata"]["uid"]


def node_uid(world, name: str = "gpu-node-2") -> str:
    return world.kube.get("Node", name)["metadata"]["uid"]


# --- delete-pod --------------------------------------------------------------------------------


def test_delete_pod_previews_a_dry_run_delete_with_a_uid_precondition(world):
    before = world.state()
    uid = pod_uid(world)
    preview = get("delete-pod").preview(POD, {}, world.ctx())
    assert preview.summary == (
        f"Delete Pod llm/{POD_A} (Running on gpu-node-2); its ReplicaSet chat-api-6f4d9b8c7d "
        "creates a replacement"
    )
    body = {"preconditions": {"uid": uid}}
    assert [preview_request(r) for r in preview.requests] == [
        ("DELETE", POD_PATH, {}, "application/json", body)
    ]
    assert [wire(r) for r in world.writes()] == [
        ("DELETE", POD_PATH, {"dryRun": "All"}, "application/json", body)
    ]
    assert world.state() == before
    assert "+  deletionGracePeriodSeconds: 30" in preview.diff.splitlines()
    assert "+  deletionTimestamp: '" in preview.diff
    assert preview.fingerprint.startswith(f"uid={uid};params=")


def test_delete_pod_deletes_it_and_a_retry_finds_it_gone(world):
    action = get("delete-pod")
    uid = pod_uid(world)
    preview = action.preview(POD, {}, world.ctx())
    world.forget_requests()
    outcome = action.execute(POD, {}, world.ctx(), fingerprint=preview.fingerprint)
    assert outcome.ok
    assert outcome.message == (
        f"Pod llm/{POD_A} deleted; its ReplicaSet chat-api-6f4d9b8c7d creates a replacement"
    )
    assert [wire(r) for r in world.writes()] == [
        ("DELETE", POD_PATH, {}, "application/json", {"preconditions": {"uid": uid}})
    ]
    with pytest.raises(ApiException) as raised:
        world.core.read_namespaced_pod(POD_A, NS)
    assert raised.value.status == 404

    again = action.execute(POD, {}, world.ctx(), fingerprint=preview.fingerprint)
    assert (again.ok, again.message) == (True, f"Pod llm/{POD_A} is already gone; nothing sent")
    assert len(world.writes()) == 1


def test_delete_pod_leaves_a_new_pod_of_the_same_name_alone(world):
    action = get("delete-pod")
    preview = action.preview(POD, {}, world.ctx())
    forged = preview.fingerprint.replace(pod_uid(world), "00000000-0000-4000-8000-000000000001")
    world.forget_requests()
    outcome = action.execute(POD, {}, world.ctx(), fingerprint=forged)
    assert outcome.ok and outcome.result == {"skipped": True}
    assert "already replaced by a new pod of the same name" in outcome.message
    assert world.writes() == []
    assert world.kube.get("Pod", POD_A, NS) is not None


def test_delete_pod_warns_when_nothing_will_replace_the_pod(world):
    preview = get("delete-pod").preview(BARE_POD, {}, world.ctx())
    assert preview.summary.endswith("it has no controller: nothing will replace it")


# --- cordon-node / uncordon-node ---------------------------------------------------------------


def test_cordon_previews_the_unschedulable_patch_as_a_dry_run(world):
    before = world.state()
    preview = get("cordon-node").preview(NODE, {}, world.ctx())
    assert preview.summary == (
        "Cordon Node gpu-node-2: no new pods will be scheduled on it; its pods keep running"
    )
    body = {"spec": {"unschedulable": True}}
    assert [preview_request(r) for r in preview.requests] == [
        ("PATCH", NODE_PATH, {"fieldManager": "vigil"}, SMP, body)
    ]
    assert [wire(r) for r in world.writes()] == [
        ("PATCH", NODE_PATH, {"dryRun": "All", "fieldManager": "vigil"}, SMP, body)
    ]
    assert world.state() == before
    assert "+  unschedulable: true" in preview.diff.splitlines()
    assert preview.fingerprint.startswith(f"uid={node_uid(world)};params=")


def test_cordon_marks_the_node_unschedulable_and_a_retry_sends_nothing(world):
    action = get("cordon-node")
    preview = action.preview(NODE, {}, world.ctx())
    world.forget_requests()
    outcome = action.execute(NODE, {}, world.ctx(), fingerprint=preview.fingerprint)
    assert (outcome.ok, outcome.message) == (True, "Node gpu-node-2 cordoned")
    assert [wire(r) for r in world.writes()] == [
        ("PATCH", NODE_PATH, {"fieldManager": "vigil"}, SMP, {"spec": {"unschedulable": True}})
    ]
    assert world.core.read_node("gpu-node-2").spec.unschedulable is True
    again = action.execute(NODE, {}, world.ctx(), fingerprint=preview.fingerprint)
    assert (again.ok, again.message) == (True, "Node gpu-node-2 is already cordoned; nothing sent")
    assert len(world.writes()) == 1


def test_uncordon_makes_the_node_schedulable_again(world):
    action = get("uncordon-node")
    before = world.state()
    preview = action.preview(CORDONED_NODE, {}, world.ctx())
    assert world.state() == before  # the dry run changed nothing
    assert world.core.read_node("gpu-node-3").spec.unschedulable is True
    assert preview.summary == "Uncordon Node gpu-node-3: the scheduler may place pods on it again"
    assert [preview_request(r) for r in preview.requests] == [
        (
            "PATCH",
            "/api/v1/nodes/gpu-node-3",
            {"fieldManager": "vigil"},
            SMP,
            {"spec": {"unschedulable": False}},
        )
    ]
    world.forget_requests()
    outcome = action.execute(CORDONED_NODE, {}, world.ctx(), fingerprint=preview.fingerprint)
    assert (outcome.ok, outcome.message) == (True, "Node gpu-node-3 uncordoned")
    assert [wire(r) for r in world.writes()] == [
        (
            "PATCH",
            "/api/v1/nodes/gpu-node-3",
            {"fieldManager": "vigil"},
            SMP,
            {"spec": {"unschedulable": False}},
        )
    ]
    assert not world.core.read_node("gpu-node-3").spec.unschedulable
    # uncordoning a schedulable node is nothing to do
    assert get("uncordon-node").preview(NODE, {}, world.ctx()).requests == []


def test_a_node_recreated_since_the_preview_is_a_conflict(world):
    action = get("cordon-node")
    preview = action.preview(NODE, {}, world.ctx())
    forged = preview.fingerprint.replace(node_uid(world), "00000000-0000-4000-8000-000000000002")
    world.forget_requests()
    with pytest.raises(ActionConflict, match="Node gpu-node-2 was deleted and created again"):
        action.execute(NODE, {}, world.ctx(), fingerprint=forged)
    assert world.writes() == []
    assert not world.core.read_node("gpu-node-2").spec.unschedulable


# --- drain-node --------------------------------------------------------------------------------


def eviction(name: str, grace: int = 30) -> tuple:
    return (
        "POST",
        f"/api/v1/namespaces/llm/pods/{name}/eviction",
        {},
        "application/json",
        {
            "apiVersion": "policy/v1",
            "deleteOptions": {"gracePeriodSeconds": grace},
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": NS},
        },
    )


CORDON = ("PATCH", NODE_PATH, {"fieldManager": "vigil"}, SMP, {"spec": {"unschedulable": True}})


def dry(request: tuple) -> tuple:
    method, path, query, content_type, body = request
    dry_query = {"dryRun": "All", **query} if method == "PATCH" else {"dryRun": "All"}
    return (method, path, dry_query, content_type, body)


def test_drain_previews_the_cordon_and_each_eviction_as_dry_runs(world):
    before = world.state()
    preview = get("drain-node").preview(NODE, {"grace_seconds": 60}, world.ctx())
    expected = [CORDON, eviction(POD_A, 60), eviction(POD_B, 60), eviction("debug-shell", 60)]
    assert [preview_request(r) for r in preview.requests] == expected
    assert [wire(r) for r in world.writes()] == [dry(r) for r in expected]
    assert all(r.dry_run and not r.applied for r in world.writes())
    assert world.state() == before
    assert preview.summary == (
        "Drain Node gpu-node-2: cordon it, then evict 3 pods (grace period 60s); "
        "no controller recreates llm/debug-shell; left in place: "
        "gpu-operator/dcgm-exporter-x8k2p (DaemonSet dcgm-exporter), "
        "kube-system/kube-proxy-gpu-node-2 (mirror pod)"
    )
    diff = preview.diff.splitlines()
    for line in (
        f"-- llm/{POD_A}",
        f"-- llm/{POD_B}",
        "-- llm/debug-shell",
        "+    unschedulable: true",
    ):
        assert line in diff, line
    assert " - gpu-operator/dcgm-exporter-x8k2p" in diff


def test_drain_preview_names_the_evictions_a_budget_blocks_now():
    with open_world(disruptions_allowed=0) as world:
        preview = get("drain-node").preview(NODE, {}, world.ctx())
        assert "2 blocked now by a PodDisruptionBudget: " in preview.summary
        assert (
            f"llm/{POD_A} (Cannot evict pod as it would violate the pod's disruption budget.; "
            "The disruption budget chat-api needs 1 healthy pods and has 2 currently)"
        ) in preview.summary
        assert [r.status for r in world.writes()] == [200, 429, 429, 201]
        assert len(preview.requests) == 4  # execute() still tries them all


def test_drain_cordons_evicts_reports_the_blocked_pod_and_can_run_again(world):
    action = get("drain-node")
    preview = action.preview(NODE, {}, world.ctx())
    world.forget_requests()

    outcome = action.execute(NODE, {}, world.ctx(), fingerprint=preview.fingerprint)

    # the budget lets one chat-api pod go: the second eviction is refused with 429
    assert [wire(r) for r in world.writes()] == [
        CORDON,
        eviction(POD_A),
        eviction(POD_B),
        eviction("debug-shell"),
    ]
    assert [r["status"] for r in outcome.responses] == [200, 201, 429, 201]
    assert not outcome.ok
    assert outcome.message == (
        "Node gpu-node-2 cordoned; 2 pods evicted, 1 blocked by a PodDisruptionBudget "
        "(run the drain again once the budget allows)"
    )
    assert outcome.result == {
        "cordoned": True,
        "evicted": [f"llm/{POD_A}", "llm/debug-shell"],
        "gone": [],
        "blocked": [
            {
                "pod": f"llm/{POD_B}",
                "reason": "Cannot evict pod as it would violate the pod's disruption budget.; "
                "The disruption budget chat-api needs 1 healthy pods and has 2 currently",
            }
        ],
        "failed": [],
        "skipped": [
            {"pod": "gpu-operator/dcgm-exporter-x8k2p", "why": "DaemonSet dcgm-exporter"},
            {"pod": "kube-system/kube-proxy-gpu-node-2", "why": "mirror pod"},
        ],
        "grace_seconds": 30,
    }
    assert world.core.read_node("gpu-node-2").spec.unschedulable is True
    left = {
        p.metadata.name
        for p in world.core.list_pod_for_all_namespaces(
            field_selector="spec.nodeName=gpu-node-2"
        ).items
    }
    assert left == {POD_B, "dcgm-exporter-x8k2p", "kube-proxy-gpu-node-2"}
    assert world.kube.get("Pod", "reranker-84c6d7f9b-t5vnk", "search") is not None

    # again: no second cordon, the evicted pods are not touched, the blocked one is retried
    world.forget_requests()
    again = action.execute(NODE, {}, world.ctx(), fingerprint=preview.fingerprint)
    assert [wire(r) for r in world.writes()] == [eviction(POD_B)]
    assert again.result["cordoned"] is False and again.result["evicted"] == []
    assert again.message.startswith(
        "Node gpu-node-2 was already cordoned; 0 pods evicted, 1 blocked"
    )


def test_drain_tries_a_refused_eviction_again_until_the_budget_allows(world, settings, monkeypatch):
    """As kubectl drain does: the budget frees up once the evicted pod's replacement is ready."""
    from assistant.actions import drain_node

    settings.VIGIL_DRAIN_RETRY_SECONDS, settings.VIGIL_DRAIN_RETRY_INTERVAL = 60, 5
    waits: list[float] = []

    def wait(seconds):
        waits.append(seconds)
        if len(waits) == 2:  # the replacement of the first evicted pod is ready now
            world.allow_disruptions(1)

    monkeypatch.setattr(drain_node, "_wait", wait)
    action = get("drain-node")
    preview = action.preview(NODE, {}, world.ctx())
    world.forget_requests()

    outcome = action.execute(NODE, {}, world.ctx(), fingerprint=preview.fingerprint)

    assert waits == [5, 5]
    assert [wire(r) for r in world.writes()] == [
        CORDON,
        eviction(POD_A),
        eviction(POD_B),  # 429
        eviction("debug-shell"),
        eviction(POD_B),  # 429 again
        eviction(POD_B),  # allowed
    ]
    assert [r["status"] for r in outcome.responses] == [200, 201, 429, 201, 429, 201]
    assert outcome.ok
    assert outcome.message == "Node gpu-node-2 cordoned; 3 pods evicted"
    assert outcome.result["evicted"] == [f"llm/{POD_A}", "llm/debug-shell", f"llm/{POD_B}"]
    assert outcome.result["blocked"] == []


def test_drain_gives_up_on_a_refused_eviction_after_the_retry_time(world, settings, monkeypatch):
    from assistant.actions import drain_node

    settings.VIGIL_DRAIN_RETRY_SECONDS, settings.VIGIL_DRAIN_RETRY_INTERVAL = 12, 5
    clock = [1000.0]
    waits: list[float] = []

    def wait(seconds):
        waits.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(drain_node, "_wait", wait)
    monkeypatch.setattr(drain_node, "_clock", lambda: clock[0])
    action = get("drain-node")
    preview = action.preview(NODE, {}, world.ctx())
    world.forget_requests()

    outcome = action.execute(NODE, {}, world.ctx(), fingerprint=preview.fingerprint)

    assert waits == [5, 5]  # tried at 0, 5 and 10 s; a fourth try at 15 s is past the 12 s
    assert [wire(r) for r in world.writes()].count(eviction(POD_B)) == 3
    assert not outcome.ok
    assert [b["pod"] for b in outcome.result["blocked"]] == [f"llm/{POD_B}"]


def test_drain_of_a_node_recreated_since_the_preview_is_a_conflict(world):
    action = get("drain-node")
    preview = action.preview(NODE, {}, world.ctx())
    forged = preview.fingerprint.replace(node_uid(world), "00000000-0000-4000-8000-000000000003")
    world.forget_requests()
    with pytest.raises(ActionConflict):
        action.execute(NODE, {}, world.ctx(), fingerprint=forged)
    assert world.writes() == []

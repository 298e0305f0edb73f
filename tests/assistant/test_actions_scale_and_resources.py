"""scale-deployment and patch-resources against the Kubernetes stand-in, through the official client."""

from __future__ import annotations

import pytest

from assistant.actions import ActionConflict, ActionError, get
from collectors.base import Entity
from tests.assistant.actions_support import (
    CHAT_API,
    NS,
    RESOURCES,
    open_world,
    preview_request,
    wire,
)

DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/llm/deployments/chat-api"
SCALE_PATH = DEPLOYMENT_PATH + "/scale"
SMP = "application/strategic-merge-patch+json"


@pytest.fixture
def world():
    with open_world() as opened:
        yield opened


# --- scale-deployment --------------------------------------------------------------------------


def test_scale_previews_the_scale_patch_as_a_dry_run_and_changes_nothing(world):
    before = world.state()
    preview = get("scale-deployment").preview(CHAT_API, {"replicas": 4}, world.ctx())
    assert preview.summary == "Scale Deployment llm/chat-api from 2 to 4 replicas"
    body = {"spec": {"replicas": 4}}
    assert [preview_request(r) for r in preview.requests] == [
        ("PATCH", SCALE_PATH, {"fieldManager": "vigil"}, SMP, body)
    ]
    assert [wire(r) for r in world.writes()] == [
        ("PATCH", SCALE_PATH, {"dryRun": "All", "fieldManager": "vigil"}, SMP, body)
    ]
    assert world.state() == before
    assert "-  replicas: 2\n+  replicas: 4" in preview.diff


def test_scale_sets_the_replicas_and_a_retry_sends_nothing(world):
    action = get("scale-deployment")
    preview = action.preview(CHAT_API, {"replicas": "4"}, world.ctx())
    world.forget_requests()
    outcome = action.execute(
        CHAT_API, {"replicas": 4}, world.ctx(), fingerprint=preview.fingerprint
    )
    assert (outcome.ok, outcome.message) == (
        True,
        "Deployment llm/chat-api scaled from 2 to 4 replicas",
    )
    assert outcome.result == {"from_replicas": 2, "replicas": 4}
    assert [wire(r) for r in world.writes()] == [
        ("PATCH", SCALE_PATH, {"fieldManager": "vigil"}, SMP, {"spec": {"replicas": 4}})
    ]
    assert [r["status"] for r in outcome.responses] == [200]
    assert outcome.responses[0]["body"]["spec"] == {"replicas": 4}
    assert world.apps.read_namespaced_deployment_scale("chat-api", NS).spec.replicas == 4

    again = action.execute(CHAT_API, {"replicas": 4}, world.ctx(), fingerprint=preview.fingerprint)
    assert again.ok and again.result == {"skipped": True, "replicas": 4}
    assert again.message == "Deployment llm/chat-api already has 4 replicas; nothing sent"
    assert len(world.writes()) == 1


def test_scale_refuses_when_someone_scaled_since_the_preview(world):
    action = get("scale-deployment")
    preview = action.preview(CHAT_API, {"replicas": 4}, world.ctx())
    world.apps.patch_namespaced_deployment_scale("chat-api", NS, {"spec": {"replicas": 3}})
    world.forget_requests()
    with pytest.raises(ActionConflict, match=r"generation 14 is now 15"):
        action.execute(CHAT_API, {"replicas": 4}, world.ctx(), fingerprint=preview.fingerprint)
    assert world.writes() == []
    assert world.apps.read_namespaced_deployment_scale("chat-api", NS).spec.replicas == 3


def test_scale_to_the_current_count_is_nothing_to_do(world):
    preview = get("scale-deployment").preview(CHAT_API, {"replicas": 2}, world.ctx())
    assert preview.summary == "Nothing to do: Deployment llm/chat-api already has 2 replicas"
    assert preview.requests == [] and world.writes() == []


def test_scale_of_a_deployment_that_is_gone_says_so(world):
    target = Entity("Deployment", NS, "gone")
    with pytest.raises(ActionError, match=r"^Deployment llm/gone does not exist \(any more\)$"):
        get("scale-deployment").preview(target, {"replicas": 2}, world.ctx(scope={target}))


# --- patch-resources ---------------------------------------------------------------------------

MORE_MEMORY = {"container": "vllm", "requests": {"memory": "56Gi"}, "limits": {"memory": "64Gi"}}


def resources_body(requests: dict | None, limits: dict | None) -> dict:
    resources = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {
        "spec": {"template": {"spec": {"containers": [{"name": "vllm", "resources": resources}]}}}
    }


def test_patch_resources_previews_the_container_patch_as_a_dry_run(world):
    before = world.state()
    preview = get("patch-resources").preview(CHAT_API, MORE_MEMORY, world.ctx())
    assert preview.summary == (
        "Set the resources of container vllm in Deployment llm/chat-api: "
        "requests.memory 40Gi → 56Gi, limits.memory 48Gi → 64Gi (its pods roll)"
    )
    body = resources_body({"memory": "56Gi"}, {"memory": "64Gi"})
    assert [preview_request(r) for r in preview.requests] == [
        ("PATCH", DEPLOYMENT_PATH, {"fieldManager": "vigil"}, SMP, body)
    ]
    assert [wire(r) for r in world.writes()] == [
        ("PATCH", DEPLOYMENT_PATH, {"dryRun": "All", "fieldManager": "vigil"}, SMP, body)
    ]
    assert world.state() == before
    for line in (
        "-            memory: 48Gi",
        "+            memory: 64Gi",
        "+            memory: 56Gi",
    ):
        assert line in preview.diff.splitlines()


def test_patch_resources_changes_only_the_given_quantities_and_a_retry_sends_nothing(world):
    action = get("patch-resources")
    preview = action.preview(CHAT_API, MORE_MEMORY, world.ctx())
    world.forget_requests()
    outcome = action.execute(CHAT_API, MORE_MEMORY, world.ctx(), fingerprint=preview.fingerprint)
    assert outcome.ok
    assert outcome.message == (
        "resources of container vllm in Deployment llm/chat-api set: "
        "requests.memory 40Gi → 56Gi, limits.memory 48Gi → 64Gi"
    )
    assert [wire(r) for r in world.writes()] == [
        (
            "PATCH",
            DEPLOYMENT_PATH,
            {"fieldManager": "vigil"},
            SMP,
            resources_body({"memory": "56Gi"}, {"memory": "64Gi"}),
        )
    ]
    [vllm] = world.deployment()["spec"]["template"]["spec"]["containers"]
    assert vllm["resources"] == {
        "limits": {"nvidia.com/gpu": "1", "memory": "64Gi"},
        "requests": {"cpu": "6", "memory": "56Gi"},
    }
    assert vllm["image"] == "registry.acme.internal/ml/chat-api:v2.4.0"

    again = action.execute(CHAT_API, MORE_MEMORY, world.ctx(), fingerprint=preview.fingerprint)
    assert again.ok and again.result == {"skipped": True} and again.requests == []
    assert len(world.writes()) == 1


def test_patch_resources_refuses_when_the_deployment_changed_since_the_preview(world):
    action = get("patch-resources")
    preview = action.preview(CHAT_API, MORE_MEMORY, world.ctx())
    world.apps.patch_namespaced_deployment(
        "chat-api", NS, {"spec": {"template": {"metadata": {"labels": {"tier": "gold"}}}}}
    )
    world.forget_requests()
    with pytest.raises(ActionConflict, match="changed since the preview"):
        action.execute(CHAT_API, MORE_MEMORY, world.ctx(), fingerprint=preview.fingerprint)
    assert world.writes() == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"container": "sidecar", "limits": {"memory": "1Gi"}},
            "Deployment llm/chat-api has no container 'sidecar' in its pod template (its containers: vllm)",
        ),
        (
            {"container": "vllm", "requests": {"memory": "64Gi"}},
            "memory: request 64Gi would exceed limit 48Gi",
        ),
        (
            {"container": "vllm", "limits": {"cpu": "500m"}},
            "cpu: request 6 would exceed limit 500m",
        ),
        (
            {"container": "vllm", "requests": {"nvidia.com/gpu": "2"}},
            "nvidia.com/gpu: request 2 must equal limit 1",
        ),
    ],
)
def test_patch_resources_refuses_what_the_api_server_would_refuse(world, params, message):
    with pytest.raises(ActionError) as raised:
        get("patch-resources").preview(CHAT_API, params, world.ctx())
    assert message in str(raised.value)
    assert world.writes() == []


def test_patch_resources_with_the_current_quantities_is_nothing_to_do(world):
    same = {"container": "vllm", "limits": {"memory": "49152Mi"}}  # 48Gi, written differently
    preview = get("patch-resources").preview(CHAT_API, same, world.ctx())
    assert preview.summary.startswith("Nothing to do: container vllm of Deployment llm/chat-api")
    assert world.writes() == []
    assert RESOURCES["limits"]["memory"] == "48Gi"

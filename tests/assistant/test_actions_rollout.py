"""rollout-undo and rollout-restart against the Kubernetes stand-in, through the official client."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from assistant.actions import ActionConflict, ActionError, get
from assistant.actions import base as actions_base
from assistant.actions.kube import KubeSession
from assistant.actions.rollout_undo import _patch as rollback
from tests.assistant.actions_support import (
    CHAT_API,
    DEPLOYMENT_UID,
    IMAGE_11,
    IMAGE_12,
    NS,
    RS11,
    open_world,
    preview_request,
    template,
    wire,
)

DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/llm/deployments/chat-api"
JSON_PATCH = "application/json-patch+json"
SMP = "application/strategic-merge-patch+json"


@pytest.fixture
def world():
    with open_world() as opened:
        yield opened


def rollback_body(resource_version: str) -> list[dict]:
    """kubectl's patch for revision 11, after the resourceVersion precondition."""
    restored = template(IMAGE_11, "8192", "slow")  # the ReplicaSet's, minus pod-template-hash
    return [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "replace", "path": "/spec/template", "value": restored},
        {
            "op": "replace",
            "path": "/metadata/annotations",
            "value": {
                # kept from the Deployment (kubectl's annotationsToSkip) …
                "deployment.kubernetes.io/revision": "12",
                "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"Deployment"}',
                # … and copied from the ReplicaSet; the argocd annotation goes, as with kubectl
                "kubernetes.io/change-cause": "argocd sync v2.3.9",
            },
        },
    ]


# --- rollout-undo ------------------------------------------------------------------------------


def test_rollout_undo_previews_kubectl_s_patch_as_a_dry_run_and_changes_nothing(world):
    before = world.state()
    rv = before["Deployment"][0]["metadata"]["resourceVersion"]
    preview = get("rollout-undo").preview(CHAT_API, {}, world.ctx())

    assert preview.summary == (
        f"Roll back Deployment llm/chat-api from revision 12 to 11 (image {IMAGE_12} → {IMAGE_11})"
    )
    assert [preview_request(r) for r in preview.requests] == [
        ("PATCH", DEPLOYMENT_PATH, {"fieldManager": "vigil"}, JSON_PATCH, rollback_body(rv))
    ]
    assert [wire(r) for r in world.writes()] == [
        (
            "PATCH",
            DEPLOYMENT_PATH,
            {"dryRun": "All", "fieldManager": "vigil"},
            JSON_PATCH,
            rollback_body(rv),
        )
    ]
    assert all(r.dry_run and not r.applied for r in world.writes())
    assert world.state() == before
    for line in (
        f"-        image: {IMAGE_12}",
        f"+        image: {IMAGE_11}",
        "-        - '16384'",
        "+        - '8192'",
        "-          value: fast",
        "+          value: slow",
        "-    argocd.argoproj.io/tracking-id: llm-chat-api:apps/Deployment:llm/chat-api",
        "+    kubernetes.io/change-cause: argocd sync v2.3.9",
    ):
        assert line in preview.diff.splitlines(), line
    assert preview.diff.startswith(
        "--- Deployment llm/chat-api (now)\n+++ Deployment llm/chat-api (after"
    )
    assert preview.fingerprint == (
        f"uid={DEPLOYMENT_UID};generation=14;rs={RS11};revision=11;"
        f"params={get('rollout-undo').params_digest(get('rollout-undo').parse_params({}))}"
    )


def test_rollout_undo_restores_the_old_template_and_a_retry_sends_nothing(world):
    action = get("rollout-undo")
    preview = action.preview(CHAT_API, {"to_revision": 11, "image": IMAGE_11}, world.ctx())
    rv = world.state()["Deployment"][0]["metadata"]["resourceVersion"]
    world.forget_requests()

    outcome = action.execute(
        CHAT_API,
        {"to_revision": 11, "image": IMAGE_11},
        world.ctx(),
        fingerprint=preview.fingerprint,
    )

    assert outcome.ok
    assert outcome.message == "Deployment llm/chat-api rolled back to revision 11"
    assert outcome.result == {
        "from_revision": 12,
        "to_revision": 11,
        "replicaset": RS11,
        "images": {"vllm": IMAGE_11},
    }
    sent = ("PATCH", DEPLOYMENT_PATH, {"fieldManager": "vigil"}, JSON_PATCH, rollback_body(rv))
    assert [wire(r) for r in world.writes()] == [sent]
    assert [preview_request(r) for r in outcome.requests] == [sent]
    assert [r["status"] for r in outcome.responses] == [200]
    assert world.writes()[0].applied
    deployment = world.deployment()
    assert deployment["spec"]["template"] == template(IMAGE_11, "8192", "slow")
    assert deployment["metadata"]["annotations"] == rollback_body(rv)[2]["value"]
    assert deployment["metadata"]["generation"] == 15

    again = action.execute(
        CHAT_API,
        {"to_revision": 11, "image": IMAGE_11},
        world.ctx(),
        fingerprint=preview.fingerprint,
    )
    assert again.ok and again.result["skipped"]
    assert "already runs the pod template of ReplicaSet chat-api-7c9f8d6b54" in again.message
    assert again.requests == []
    assert len(world.writes()) == 1


def test_rollout_undo_refuses_when_the_deployment_changed_since_the_preview(world):
    action = get("rollout-undo")
    preview = action.preview(CHAT_API, {}, world.ctx())
    world.apps.patch_namespaced_deployment_scale("chat-api", NS, {"spec": {"replicas": 3}})
    world.forget_requests()
    with pytest.raises(ActionConflict) as raised:
        action.execute(CHAT_API, {}, world.ctx(), fingerprint=preview.fingerprint)
    assert str(raised.value) == (
        "Deployment llm/chat-api changed since the preview (generation 14 is now 15): preview again"
    )
    assert world.writes() == []
    assert world.deployment()["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_12


def test_rollout_undo_refuses_parameters_edited_after_the_preview(world):
    action = get("rollout-undo")
    preview = action.preview(CHAT_API, {}, world.ctx())
    world.forget_requests()
    with pytest.raises(
        ActionConflict, match="parameters of rollout-undo changed since the preview"
    ):
        action.execute(CHAT_API, {"to_revision": 12}, world.ctx(), fingerprint=preview.fingerprint)
    assert world.writes() == []


def test_a_change_between_the_read_and_the_patch_is_a_conflict_not_an_overwrite(world):
    stale = world.deployment()  # what execute() read …
    world.apps.patch_namespaced_deployment(  # … before someone else changed the Deployment
        "chat-api", NS, {"metadata": {"annotations": {"team": "serving"}}}
    )
    with KubeSession(world.ctx()) as kube:
        replicaset = kube.read(kube.apps.read_namespaced_replica_set, RS11, NS, doing="get")
        with pytest.raises(ActionConflict, match="the object has been modified"):
            rollback(kube, CHAT_API, stale, replicaset, dry_run=False)
    assert world.writes()[-1].status == 409
    assert world.deployment()["metadata"]["annotations"]["team"] == "serving"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"to_revision": 9}, "Deployment llm/chat-api has no revision 9 (its revisions: 11, 12)"),
        # the canary's ReplicaSet matches the selector but belongs to another Deployment
        ({"to_revision": 10}, "Deployment llm/chat-api has no revision 10 (its revisions: 11, 12)"),
        (
            {"to_revision": 11, "image": "registry.acme.internal/ml/chat-api:v2.3.8"},
            f"revision 11 of Deployment llm/chat-api runs {IMAGE_11}, not "
            "registry.acme.internal/ml/chat-api:v2.3.8 as the proposal expected",
        ),
    ],
)
def test_rollout_undo_to_a_revision_that_is_not_there_is_refused(world, params, message):
    with pytest.raises(ActionError) as raised:
        get("rollout-undo").preview(CHAT_API, params, world.ctx())
    assert str(raised.value).startswith(message)
    assert world.writes() == []


def test_rollout_undo_to_the_current_revision_is_nothing_to_do(world):
    action = get("rollout-undo")
    preview = action.preview(CHAT_API, {"to_revision": 12}, world.ctx())
    assert preview.summary == (
        "Nothing to do: Deployment llm/chat-api already runs the pod template of revision 12"
    )
    assert (preview.requests, preview.diff) == ([], "")
    outcome = action.execute(
        CHAT_API, {"to_revision": 12}, world.ctx(), fingerprint=preview.fingerprint
    )
    assert outcome.ok and outcome.result["skipped"] and outcome.requests == []
    assert world.writes() == []


def test_rollout_undo_refuses_a_paused_deployment(world):
    world.apps.patch_namespaced_deployment("chat-api", NS, {"spec": {"paused": True}})
    world.forget_requests()
    with pytest.raises(ActionError, match="Deployment llm/chat-api is paused"):
        get("rollout-undo").preview(CHAT_API, {}, world.ctx())
    assert world.writes() == []


def test_rollout_undo_summary_names_the_fields_when_the_image_did_not_change():
    extra_revision = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "chat-api-55d8f6c9b7",
            "namespace": NS,
            "labels": {"app": "chat-api", "pod-template-hash": "55d8f6c9b7"},
            "annotations": {"deployment.kubernetes.io/revision": "13"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "chat-api",
                    "uid": DEPLOYMENT_UID,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "chat-api", "pod-template-hash": "55d8f6c9b7"}},
            "template": template(IMAGE_12, "32768", "fast", "55d8f6c9b7"),
        },
    }
    with open_world(extra=[extra_revision]) as world:
        preview = get("rollout-undo").preview(CHAT_API, {"to_revision": 13}, world.ctx())
    assert preview.summary == (
        "Roll back Deployment llm/chat-api from revision 12 to 13 (changes args of vllm)"
    )


# --- rollout-restart ---------------------------------------------------------------------------


def restart_body(at: str) -> dict:
    return {
        "spec": {
            "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}}
        }
    }


def test_rollout_restart_previews_the_restartedat_patch_and_changes_nothing(world, monkeypatch):
    monkeypatch.setattr(
        actions_base, "utc_now", lambda: datetime(2026, 11, 23, 10, 0, 5, 123, tzinfo=UTC)
    )
    before = world.state()
    preview = get("rollout-restart").preview(CHAT_API, {}, world.ctx())
    assert preview.summary == (
        "Restart Deployment llm/chat-api: a rolling replacement of its 2 pods with the same spec"
    )
    body = restart_body("2026-11-23T10:00:05Z")
    assert [preview_request(r) for r in preview.requests] == [
        ("PATCH", DEPLOYMENT_PATH, {"fieldManager": "vigil"}, SMP, body)
    ]
    assert [wire(r) for r in world.writes()] == [
        ("PATCH", DEPLOYMENT_PATH, {"dryRun": "All", "fieldManager": "vigil"}, SMP, body)
    ]
    assert world.state() == before
    assert "+        kubectl.kubernetes.io/restartedAt: '2026-11-23T10:00:05Z'" in preview.diff


def test_rollout_restart_sets_restartedat_now_and_a_retry_does_not_restart_again(world):
    action = get("rollout-restart")
    preview = action.preview(CHAT_API, {}, world.ctx())
    world.forget_requests()
    outcome = action.execute(CHAT_API, {}, world.ctx(), fingerprint=preview.fingerprint)
    assert outcome.ok
    [sent] = world.writes()
    at = sent.body["spec"]["template"]["metadata"]["annotations"][
        "kubectl.kubernetes.io/restartedAt"
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", at)
    assert wire(sent) == (
        "PATCH",
        DEPLOYMENT_PATH,
        {"fieldManager": "vigil"},
        SMP,
        restart_body(at),
    )
    assert outcome.message == f"Deployment llm/chat-api restarted (restartedAt {at})"
    annotations = world.deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"kubectl.kubernetes.io/restartedAt": at}

    again = action.execute(CHAT_API, {}, world.ctx(), fingerprint=preview.fingerprint)
    assert again.ok and again.result == {"skipped": True, "restarted_at": at}
    assert len(world.writes()) == 1


def test_rollout_restart_refuses_when_the_deployment_changed_since_the_preview(world):
    action = get("rollout-restart")
    preview = action.preview(CHAT_API, {}, world.ctx())
    world.apps.patch_namespaced_deployment_scale("chat-api", NS, {"spec": {"replicas": 1}})
    world.forget_requests()
    with pytest.raises(
        ActionConflict, match=r"changed since the preview \(generation 14 is now 15\)"
    ):
        action.execute(CHAT_API, {}, world.ctx(), fingerprint=preview.fingerprint)
    assert world.writes() == []


def test_a_deployment_recreated_since_the_preview_is_a_conflict(world):
    action = get("rollout-restart")
    preview = action.preview(CHAT_API, {}, world.ctx())
    forged = preview.fingerprint.replace(DEPLOYMENT_UID, "00000000-0000-4000-8000-000000000000")
    with pytest.raises(ActionConflict, match="was deleted and created again since the preview"):
        action.execute(CHAT_API, {}, world.ctx(), fingerprint=forged)
    assert [r.dry_run for r in world.writes()] == [True]

"""The action lifecycle (assistant/remediation.py) against the Kubernetes stand-in, through the
real official client: preview, approval with four eyes and a fresh re-check, execution, audit."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import yaml
from django.utils import timezone

from assistant import remediation
from assistant.models import ActionEvent, ActionProposal, Analysis
from collectors.base import Entity, Scope
from incidents.models import Alert, Cluster, Incident, TimelineEvent, group_hash
from tests.assistant.actions_support import (
    ALERTS,
    CHAT_API,
    IMAGE_11,
    IMAGE_12,
    NODE,
    NS,
    POD,
    POD_B,
    RERANKER,
    open_world,
    preview_request,
    wire,
)
from tests.assistant.test_actions_rollout import DEPLOYMENT_PATH, JSON_PATCH, rollback_body

pytestmark = pytest.mark.django_db

Status = ActionProposal.Status


# --- building an incident on the stand-in (shared with the API and worker tests) ------------------


def make_incident(world, *, alertmanager_url: str = "", kubeconfig: str | None = None) -> Incident:
    """An open incident about llm/chat-api on a cluster whose Kubernetes is the stand-in."""
    cluster = Cluster.objects.create(
        name=f"actions-{uuid.uuid4().hex[:8]}",
        kubeconfig=kubeconfig
        if kubeconfig is not None
        else yaml.safe_dump(world.kube.kubeconfig()),
        alertmanager_url=alertmanager_url,
    )
    key = '{}:{alertname="ChatAPIHighErrorRate"}'
    incident = Incident.objects.create(
        cluster=cluster,
        title="chat-api 5xx",
        grouping_key=key,
        group_hash=group_hash(key),
        namespace=NS,
        scope=Scope(
            namespaces=[NS],
            deployments=[CHAT_API],
            pods=[POD, Entity("Pod", NS, POD_B)],
            nodes=[NODE],
        ).to_json(),
    )
    for index, labels in enumerate(ALERTS):
        Alert.objects.create(
            cluster=cluster,
            incident=incident,
            fingerprint=f"fp{index}",
            starts_at=timezone.now() - timedelta(minutes=10),
            status="firing",
            alertname=labels["alertname"],
            labels=labels,
            group_hash=incident.group_hash,
        )
    return incident


def assistant_proposal(
    incident: Incident,
    action: str = "rollout-undo",
    target: Entity | None = CHAT_API,
    params: dict | None = None,
    **fields,
) -> ActionProposal:
    """A proposal as the engine stores one: no proposer, no events."""
    analysis = Analysis.objects.filter(incident=incident).first() or Analysis.objects.create(
        incident=incident, status=Analysis.Status.READY
    )
    return ActionProposal.objects.create(
        incident=incident,
        analysis=analysis,
        action=action,
        target_kind=target.kind if target else "",
        target_namespace=(target.namespace or "") if target else "",
        target_name=target.name if target else "",
        params={"to_revision": 11} if params is None and action == "rollout-undo" else params or {},
        rationale=fields.pop("rationale", "Revision 11 served cleanly before revision 12."),
        **fields,
    )


def kinds(proposal: ActionProposal) -> list[str]:
    return list(proposal.events.order_by("at", "id").values_list("kind", flat=True))


def timeline(incident: Incident) -> list[tuple[str, str, str]]:
    return list(
        TimelineEvent.objects.filter(incident=incident, kind__startswith="action_")
        .order_by("at", "id")
        .values_list("kind", "actor", "summary")
    )


@pytest.fixture
def world():
    with open_world() as opened:
        yield opened


@pytest.fixture
def incident(world):
    return make_incident(world)


@pytest.fixture
def four_eyes(settings):
    settings.VIGIL_FOUR_EYES = True
    return settings


@pytest.fixture
def approvers(personas, make_user):
    return personas["approver"], make_user("second-approver", "approver")


def previewed_and_approved(proposal, personas, world):
    remediation.preview(proposal, personas["responder"])
    remediation.approve(proposal, personas["approver"])
    world.forget_requests()
    return proposal


# --- the whole way ---------------------------------------------------------------------------------


def test_a_rollout_undo_goes_from_proposal_to_the_exact_rollback_with_its_audit(
    world, incident, personas, four_eyes, django_capture_on_commit_callbacks
):
    proposal = assistant_proposal(incident, params={"to_revision": 11, "image": IMAGE_11})
    before = world.state()
    rv = before["Deployment"][0]["metadata"]["resourceVersion"]
    dry_patch = (
        "PATCH",
        DEPLOYMENT_PATH,
        {"dryRun": "All", "fieldManager": "vigil"},
        JSON_PATCH,
        rollback_body(rv),
    )

    remediation.preview(proposal, personas["responder"])

    proposal.refresh_from_db()
    assert proposal.status == Status.PREVIEWED
    assert proposal.previewed_by == personas["responder"] and proposal.previewed_at
    assert proposal.preview["summary"] == (
        f"Roll back Deployment llm/chat-api from revision 12 to 11 (image {IMAGE_12} → {IMAGE_11})"
    )
    assert f"+        image: {IMAGE_11}" in proposal.preview["diff"].splitlines()
    assert proposal.preview["fingerprint"].startswith("uid=")
    sent = ("PATCH", DEPLOYMENT_PATH, {"fieldManager": "vigil"}, JSON_PATCH, rollback_body(rv))
    assert [preview_request(r) for r in proposal.preview["requests"]] == [sent]
    # the preview sent only a dry run, and nothing changed
    assert [wire(r) for r in world.writes()] == [dry_patch]
    assert world.state() == before

    with django_capture_on_commit_callbacks() as callbacks:
        remediation.approve(proposal, personas["approver"])
    proposal.refresh_from_db()
    assert proposal.status == Status.APPROVED
    assert (proposal.decided_by, proposal.reason) == (personas["approver"], "")
    assert len(callbacks) == 1  # the execution is enqueued once the approval commits
    # the approval re-ran the same dry run to check nothing changed, and changed nothing
    assert [wire(r) for r in world.writes()] == [dry_patch, dry_patch]
    assert world.state() == before

    world.forget_requests()
    done = remediation.run(proposal.pk)

    assert done.status == Status.SUCCEEDED
    assert [wire(r) for r in world.writes()] == [sent]
    assert world.writes()[0].applied
    assert world.deployment()["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_11
    proposal.refresh_from_db()
    assert proposal.status == Status.SUCCEEDED
    assert (proposal.attempts, proposal.error) == (1, "")
    assert proposal.started_at <= proposal.finished_at
    assert proposal.outcome["ok"] is True
    assert proposal.outcome["message"] == "Deployment llm/chat-api rolled back to revision 11"
    assert proposal.outcome["result"]["to_revision"] == 11
    assert [preview_request(r) for r in proposal.outcome["requests"]] == [sent]
    assert [r["status"] for r in proposal.outcome["responses"]] == [200]

    # the audit: who did what, with the requests
    events = list(proposal.events.order_by("at", "id"))
    assert [(e.kind, e.actor) for e in events] == [
        ("proposed", "vigil"),
        ("previewed", "responder"),
        ("approved", "approver"),
        ("executing", "vigil"),
        ("succeeded", "vigil"),
    ]
    assert events[0].at == proposal.created_at
    assert events[0].detail.startswith(
        "The assistant proposed rollout-undo on Deployment llm/chat-api"
    )
    assert [preview_request(r) for r in events[1].requests] == [sent]
    assert [preview_request(r) for r in events[4].requests] == [sent]
    assert events[4].responses[0]["status"] == 200
    assert events[4].responses[0]["body"]["kind"] == "Deployment"
    assert timeline(incident) == [
        (
            "action_previewed",
            "responder",
            "responder previewed rollout-undo on Deployment llm/chat-api (to revision 11): "
            + proposal.preview["summary"],
        ),
        (
            "action_approved",
            "approver",
            "approver approved rollout-undo on Deployment llm/chat-api (to revision 11)",
        ),
        (
            "action_executing",
            "vigil",
            "Executing rollout-undo on Deployment llm/chat-api (to revision 11), approved by "
            "approver",
        ),
        (
            "action_succeeded",
            "vigil",
            "rollout-undo on Deployment llm/chat-api (to revision 11) succeeded: Deployment "
            "llm/chat-api rolled back to revision 11",
        ),
    ]
    payloads = TimelineEvent.objects.filter(incident=incident, kind__startswith="action_")
    assert {p.payload["action"] for p in payloads} == {proposal.pk}


def test_a_second_run_of_the_same_action_does_nothing(world, incident, personas, four_eyes):
    proposal = previewed_and_approved(assistant_proposal(incident), personas, world)
    assert remediation.run(proposal.pk).status == Status.SUCCEEDED
    writes = len(world.writes())

    again = remediation.run(proposal.pk)

    assert again.status == Status.SUCCEEDED and again.attempts == 1
    assert len(world.writes()) == writes == 1
    assert kinds(again).count("executing") == 1


def test_an_execution_whose_worker_died_is_claimed_again_and_finds_the_work_done(
    world, incident, personas, four_eyes
):
    proposal = previewed_and_approved(assistant_proposal(incident), personas, world)
    assert remediation.run(proposal.pk).status == Status.SUCCEEDED
    # as if the worker died after the PATCH, before storing the result
    long_ago = timezone.now() - remediation.STALE_EXECUTION - timedelta(seconds=1)
    ActionProposal.objects.filter(pk=proposal.pk).update(
        status=Status.EXECUTING, started_at=long_ago, outcome={}
    )
    fresh = ActionProposal.objects.filter(pk=proposal.pk)
    assert remediation.lost_executions() == [proposal.pk]

    done = remediation.run(proposal.pk)

    assert done.status == Status.SUCCEEDED and done.attempts == 2
    assert done.outcome["result"]["skipped"] is True
    assert len(world.writes()) == 1  # the rollback was not sent twice
    assert fresh.get().started_at > long_ago


def test_a_running_execution_is_not_claimed_twice(world, incident, personas, four_eyes):
    proposal = previewed_and_approved(assistant_proposal(incident), personas, world)
    claimed, _ = remediation.claim(proposal.pk)
    assert claimed

    assert remediation.run(proposal.pk).status == Status.EXECUTING
    assert world.writes() == []
    assert remediation.lost_executions() == []


# --- four eyes -----------------------------------------------------------------------------------


def add_rollback(incident, user):
    return remediation.add_action(
        incident,
        user,
        "rollout-undo",
        {"kind": "Deployment", "namespace": NS, "name": "chat-api"},
        {"to_revision": 11},
        "v2.4.0 broke the tokenizer",
    )


def test_four_eyes_keeps_the_engineer_who_added_an_action_from_approving_it(
    world, incident, approvers, four_eyes
):
    first, second = approvers
    proposal = add_rollback(incident, first)
    remediation.preview(proposal, first)
    assert remediation.allowed(proposal, first)["approve"] is False
    assert remediation.allowed(proposal, second)["approve"] is True

    with pytest.raises(remediation.Forbidden) as refused:
        remediation.approve(proposal, first)
    assert refused.value.status == 403
    assert str(refused.value) == (
        "Four eyes: you added this action, so another approver must approve it."
    )
    proposal.refresh_from_db()
    assert proposal.status == Status.PREVIEWED

    # previewing is not requesting: whoever previewed may approve
    remediation.preview(proposal, second)
    remediation.approve(proposal, second)
    assert proposal.status == Status.APPROVED and proposal.decided_by == second


def test_four_eyes_counts_whoever_last_changed_the_parameters(
    world, incident, approvers, four_eyes
):
    first, second = approvers
    proposal = assistant_proposal(incident, params={})
    remediation.edit_params(proposal, second, {"to_revision": 11})
    remediation.preview(proposal, second)
    with pytest.raises(remediation.Forbidden, match="you last changed this action's parameters"):
        remediation.approve(proposal, second)
    remediation.approve(proposal, first)
    assert proposal.status == Status.APPROVED


def test_without_four_eyes_the_engineer_who_added_an_action_may_approve_it(
    world, incident, approvers, settings
):
    settings.VIGIL_FOUR_EYES = False
    first, _ = approvers
    proposal = add_rollback(incident, first)
    remediation.preview(proposal, first)
    remediation.approve(proposal, first)
    assert proposal.status == Status.APPROVED and proposal.decided_by == first


def test_responders_propose_and_preview_but_only_approvers_decide(world, incident, personas):
    proposal = assistant_proposal(incident)
    remediation.preview(proposal, personas["responder"])
    for step in (
        lambda: remediation.approve(proposal, personas["responder"]),
        lambda: remediation.reject(proposal, personas["responder"], "no"),
        lambda: remediation.cancel(proposal, personas["responder"]),
    ):
        with pytest.raises(remediation.Forbidden, match="Only approvers"):
            step()
    for step in (
        lambda: remediation.preview(proposal, personas["viewer"]),
        lambda: remediation.edit_params(proposal, personas["viewer"], {"to_revision": 12}),
        lambda: add_rollback(incident, personas["viewer"]),
    ):
        with pytest.raises(remediation.Forbidden, match="Only responders"):
            step()
    proposal.refresh_from_db()
    assert proposal.status == Status.PREVIEWED
    assert remediation.allowed(proposal, personas["responder"]) == {
        "edit": True,
        "preview": True,
        "approve": False,
        "reject": False,
        "cancel": False,
        "expire": False,
    }
    assert not any(remediation.allowed(proposal, personas["viewer"]).values())


# --- approval needs a fresh preview of the target as it is ---------------------------------------


def test_approval_without_a_preview_is_a_conflict(world, incident, personas):
    proposal = assistant_proposal(incident)
    with pytest.raises(remediation.Conflict, match="Preview the action before approving it"):
        remediation.approve(proposal, personas["approver"])
    assert world.writes() == []
    assert remediation.allowed(proposal, personas["approver"])["approve"] is False


def test_approval_of_a_stale_preview_is_a_conflict(world, incident, personas, settings):
    settings.VIGIL_ACTION_PREVIEW_TTL = timedelta(minutes=15)
    proposal = assistant_proposal(incident)
    remediation.preview(proposal, personas["responder"])
    ActionProposal.objects.filter(pk=proposal.pk).update(
        previewed_at=timezone.now() - timedelta(minutes=15, seconds=1)
    )
    proposal.refresh_from_db()
    assert not remediation.is_fresh(proposal)
    with pytest.raises(remediation.Conflict, match="older than 15 minutes; preview again"):
        remediation.approve(proposal, personas["approver"])
    proposal.refresh_from_db()
    assert proposal.status == Status.PREVIEWED

    remediation.preview(proposal, personas["responder"])
    assert remediation.is_fresh(proposal)
    remediation.approve(proposal, personas["approver"])
    assert proposal.status == Status.APPROVED


def test_a_target_changed_between_preview_and_approval_is_a_conflict_with_a_fresh_preview(
    world, incident, personas, django_capture_on_commit_callbacks
):
    proposal = assistant_proposal(incident)
    remediation.preview(proposal, personas["responder"])
    seen = proposal.preview["fingerprint"]
    assert "generation=14" in seen
    # someone scales chat-api: its spec (generation) moves
    world.apps.patch_namespaced_deployment_scale("chat-api", NS, {"spec": {"replicas": 3}})

    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(remediation.Conflict) as refused,
    ):
        remediation.approve(proposal, personas["approver"])

    assert refused.value.status == 409
    assert str(refused.value).startswith("The target changed since the preview; preview again")
    assert callbacks == []
    proposal.refresh_from_db()
    assert proposal.status == Status.PREVIEWED
    assert "generation=15" in proposal.preview["fingerprint"]  # the fresh dry run is kept
    assert proposal.previewed_by == personas["approver"]
    assert proposal.decided_by is None
    assert kinds(proposal)[-1] == "previewed"
    assert (
        proposal.events.order_by("-id")
        .first()
        .detail.startswith("Re-checked at approval, the target had changed.")
    )
    assert all(w.dry_run for w in world.writes() if w.method == "PATCH" and "scale" not in w.path)

    # the approver read the new dry run: approving it now works
    remediation.approve(proposal, personas["approver"])
    assert proposal.status == Status.APPROVED


def test_a_target_that_can_no_longer_be_previewed_at_approval_drops_the_preview(
    world, incident, personas
):
    proposal = assistant_proposal(incident)
    remediation.preview(proposal, personas["responder"])
    world.apps.patch_namespaced_deployment("chat-api", NS, {"spec": {"paused": True}})

    with pytest.raises(remediation.Conflict, match="The target changed since the preview: "):
        remediation.approve(proposal, personas["approver"])
    proposal.refresh_from_db()
    assert (proposal.status, proposal.preview) == (Status.PROPOSED, {})
    assert proposal.preview_error.startswith("Deployment llm/chat-api is paused")
    assert kinds(proposal)[-1] == "preview_failed"


def test_an_unreachable_cluster_at_approval_is_unavailable_and_changes_nothing(
    world, incident, personas
):
    proposal = assistant_proposal(incident)
    remediation.preview(proposal, personas["responder"])
    world.kube.stop()

    with pytest.raises(remediation.Unavailable, match="Kubernetes API unreachable") as refused:
        remediation.approve(proposal, personas["approver"])
    assert refused.value.status == 503
    proposal.refresh_from_db()
    assert proposal.status == Status.PREVIEWED and proposal.preview["fingerprint"]
    assert kinds(proposal)[-1] == "preview_failed"


# --- preview --------------------------------------------------------------------------------------


def test_a_preview_the_cluster_refuses_is_stored_for_the_page_not_raised(world, incident, personas):
    proposal = assistant_proposal(incident, params={"to_revision": 9})
    remediation.preview(proposal, personas["responder"])
    proposal.refresh_from_db()
    assert proposal.status == Status.PROPOSED
    assert proposal.preview == {}
    assert proposal.preview_error.startswith(
        "Deployment llm/chat-api has no revision 9 (its revisions: 11, 12)"
    )
    assert kinds(proposal) == ["proposed", "preview_failed"]
    assert world.writes() == []
    assert timeline(incident)[-1][2].startswith(
        "responder's preview of rollout-undo on Deployment llm/chat-api (to revision 9) failed"
    )

    # a good preview, then one that fails: the old preview does not survive
    remediation.edit_params(proposal, personas["responder"], {"to_revision": 11})
    remediation.preview(proposal, personas["responder"])
    assert proposal.status == Status.PREVIEWED
    world.kube.stop()
    remediation.preview(proposal, personas["responder"])
    assert (proposal.status, proposal.preview) == (Status.PROPOSED, {})
    assert proposal.preview_error.startswith("Kubernetes API unreachable")


def test_a_scale_proposed_without_replicas_must_be_edited_before_its_preview(
    world, incident, personas
):
    proposal = assistant_proposal(incident, "scale-deployment", params={})
    with pytest.raises(remediation.RemediationError) as refused:
        remediation.preview(proposal, personas["responder"])
    assert refused.value.status == 400
    assert str(refused.value) == "scale-deployment: replicas is required"
    assert world.writes() == []

    remediation.edit_params(proposal, personas["responder"], {"replicas": 4})
    remediation.preview(proposal, personas["responder"])
    assert proposal.status == Status.PREVIEWED
    assert proposal.params == {"replicas": 4}
    assert proposal.edited_by == personas["responder"]
    assert proposal.preview["summary"] == "Scale Deployment llm/chat-api from 2 to 4 replicas"


def test_editing_the_parameters_drops_the_preview(world, incident, personas):
    proposal = assistant_proposal(incident)
    remediation.preview(proposal, personas["responder"])
    remediation.edit_params(proposal, personas["responder"], {"to_revision": 11, "image": IMAGE_11})
    proposal.refresh_from_db()
    assert proposal.status == Status.PROPOSED
    assert (proposal.preview, proposal.previewed_at) == ({}, None)
    assert proposal.params == {"to_revision": 11, "image": IMAGE_11}
    with pytest.raises(remediation.RemediationError, match="unchanged"):
        remediation.edit_params(
            proposal, personas["responder"], {"to_revision": 11, "image": IMAGE_11}
        )
    with pytest.raises(remediation.RemediationError, match="unknown parameter 'revision'"):
        remediation.edit_params(proposal, personas["responder"], {"revision": 11})
    events = list(proposal.events.filter(kind="edited"))
    assert len(events) == 1 and events[0].actor == "responder"


# --- reject, cancel -------------------------------------------------------------------------------


def test_rejection_needs_a_reason_and_can_be_answered_by_an_edit(world, incident, personas):
    proposal = assistant_proposal(incident)
    with pytest.raises(remediation.RemediationError, match="a reason is required"):
        remediation.reject(proposal, personas["approver"], "  ")
    remediation.reject(proposal, personas["approver"], "revision 11 leaks memory")
    proposal.refresh_from_db()
    assert proposal.status == Status.REJECTED
    assert (proposal.decided_by, proposal.reason) == (
        personas["approver"],
        "revision 11 leaks memory",
    )
    assert timeline(incident)[-1] == (
        "action_rejected",
        "approver",
        "approver rejected rollout-undo on Deployment llm/chat-api (to revision 11): "
        "revision 11 leaks memory",
    )
    with pytest.raises(remediation.Conflict, match="Preview the action before approving"):
        remediation.approve(proposal, personas["approver"])
    with pytest.raises(remediation.Conflict, match="can no longer be rejected"):
        remediation.reject(proposal, personas["approver"], "again")

    remediation.edit_params(proposal, personas["responder"], {"to_revision": 12})
    assert proposal.status == Status.PROPOSED
    assert (proposal.decided_by, proposal.reason) == (None, "")
    assert "reopened after its rejection by approver" in proposal.events.last().detail


def test_an_action_cancelled_before_it_runs_never_reaches_the_cluster(
    world, incident, personas, four_eyes
):
    proposal = previewed_and_approved(assistant_proposal(incident), personas, world)
    before = world.state()
    remediation.cancel(proposal, personas["approver"], "the deploy was fixed forward")
    assert proposal.status == Status.CANCELLED
    assert proposal.reason == "the deploy was fixed forward"

    assert remediation.run(proposal.pk).status == Status.CANCELLED
    assert world.writes() == []
    assert world.state() == before
    assert kinds(proposal)[-2:] == ["approved", "cancelled"]
    with pytest.raises(remediation.Conflict, match="Only an approved action can be cancelled"):
        remediation.cancel(proposal, personas["approver"])


def test_an_action_that_ran_cannot_be_cancelled_or_changed(world, incident, personas):
    proposal = previewed_and_approved(assistant_proposal(incident), personas, world)
    remediation.run(proposal.pk)
    proposal.refresh_from_db()
    with pytest.raises(remediation.Conflict, match="already ran"):
        remediation.cancel(proposal, personas["approver"])
    with pytest.raises(remediation.Conflict, match="can no longer change"):
        remediation.edit_params(proposal, personas["responder"], {"to_revision": 12})
    with pytest.raises(remediation.Conflict, match="can no longer be previewed"):
        remediation.preview(proposal, personas["responder"])
    assert not any(remediation.allowed(proposal, personas["approver"]).values())


# --- failures -------------------------------------------------------------------------------------


def test_a_target_changed_after_approval_fails_the_execution_and_sends_nothing(
    world, incident, personas
):
    proposal = previewed_and_approved(assistant_proposal(incident), personas, world)
    world.apps.patch_namespaced_deployment_scale("chat-api", NS, {"spec": {"replicas": 3}})
    world.forget_requests()

    failed = remediation.run(proposal.pk)

    assert failed.status == Status.FAILED
    assert failed.error == (
        "the target changed since the preview: Deployment llm/chat-api changed since the preview "
        "(generation 14 is now 15): preview again"
    )
    assert failed.outcome["ok"] is False and failed.outcome["requests"] == []
    assert world.writes() == []
    assert world.deployment()["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_12
    assert timeline(incident)[-1][0] == "action_failed"
    assert proposal.events.last().detail.endswith(failed.error)


def test_an_unreachable_cluster_is_retried_with_backoff_then_fails(world, incident, personas):
    proposal = previewed_and_approved(assistant_proposal(incident), personas, world)
    world.kube.stop()

    delays = []
    for _ in range(remediation.MAX_ATTEMPTS - 1):
        with pytest.raises(remediation.RetryLater) as retry:
            remediation.run(proposal.pk)
        delays.append(retry.value.countdown)
        proposal.refresh_from_db()
        # between attempts it waits approved: it could still be cancelled
        assert proposal.status == Status.APPROVED
        assert proposal.error.startswith("Kubernetes API unreachable")
    failed = remediation.run(proposal.pk)

    assert delays == list(remediation.RETRY_DELAYS)
    assert failed.status == Status.FAILED and failed.attempts == remediation.MAX_ATTEMPTS
    assert failed.error.startswith("Kubernetes API unreachable")
    assert failed.error.endswith(f"(after {remediation.MAX_ATTEMPTS} attempts)")
    assert kinds(proposal).count("executing") == remediation.MAX_ATTEMPTS
    assert kinds(proposal).count("failed") == remediation.MAX_ATTEMPTS


def test_a_retry_waiting_after_a_transient_error_can_be_cancelled(world, incident, personas):
    proposal = previewed_and_approved(assistant_proposal(incident), personas, world)
    world.kube.stop()
    with pytest.raises(remediation.RetryLater):
        remediation.run(proposal.pk)
    remediation.cancel(proposal, personas["approver"], "fixing the API server first")
    assert remediation.run(proposal.pk).status == Status.CANCELLED
    assert proposal.attempts == 1


# --- adding from the catalogue --------------------------------------------------------------------


def test_an_engineer_adds_an_action_checked_against_the_catalogue_and_the_incident(
    world, incident, personas
):
    analysis = Analysis.objects.create(incident=incident, status=Analysis.Status.READY)
    assistant_proposal(incident)
    proposal = remediation.add_action(
        incident,
        personas["responder"],
        "scale-deployment",
        {"kind": "Deployment", "namespace": NS, "name": "chat-api"},
        {"replicas": 4},
        "more headroom while we roll back",
    )
    assert (proposal.status, proposal.proposed_by) == (Status.PROPOSED, personas["responder"])
    assert (proposal.analysis, proposal.rank) == (analysis, 1)
    assert proposal.target == {"kind": "Deployment", "namespace": NS, "name": "chat-api"}
    assert [(e.kind, e.actor) for e in proposal.events.all()] == [("added", "responder")]
    assert timeline(incident)[-1] == (
        "action_added",
        "responder",
        "responder added scale-deployment on Deployment llm/chat-api (to 4 replicas)",
    )
    assert world.writes() == []

    for action, target, params, message in [
        ("reboot-node", None, {}, "unknown action 'reboot-node'"),
        ("scale-deployment", RERANKER.as_dict(), {"replicas": 2}, "is not one of this incident"),
        ("scale-deployment", CHAT_API.as_dict(), {"replicas": 0}, "replicas: Input should be"),
        ("scale-deployment", CHAT_API.as_dict(), {}, "replicas is required"),
        ("cordon-node", CHAT_API.as_dict(), {}, "cordon-node acts on a Node"),
        ("none", None, {}, "steps is required"),
        ("rollout-undo", "chat-api", {}, "target must be an object"),
    ]:
        with pytest.raises(remediation.RemediationError, match=message) as refused:
            remediation.add_action(incident, personas["responder"], action, target, params)
        assert refused.value.status == 400
    assert ActionProposal.objects.filter(incident=incident).count() == 2


def test_the_scope_is_the_incident_s_entities_evidence_and_the_assistant_s_targets(world, incident):
    from collectors.models import Evidence

    Evidence.objects.create(
        incident=incident,
        collector="kubernetes",
        kind="node_status",
        title="gpu-node-1",
        entity_kind="Node",
        entity_name="gpu-node-1",
    )
    assistant_proposal(incident, "scale-deployment", RERANKER, {"replicas": 3})
    entities = remediation.scope_entities(incident)
    assert {CHAT_API, NODE, POD, Entity("Node", None, "gpu-node-1"), RERANKER} <= entities
    ctx = remediation.action_context(assistant_proposal(incident), actor="vigil:bob")
    assert ctx.idempotency_key.startswith("action-")
    by_name = lambda labels: labels["alertname"]  # noqa: E731
    assert sorted(ctx.alert_labels, key=by_name) == sorted(ALERTS, key=by_name)
    assert ctx.cluster.kubeconfig and ctx.actor == "vigil:bob"


# --- the sweep -------------------------------------------------------------------------------------


def test_the_sweep_finds_lost_executions_and_gives_up_on_hopeless_ones(
    world, incident, personas, settings
):
    settings.VIGIL_SWEEP_GRACE = timedelta(seconds=30)
    waiting = previewed_and_approved(assistant_proposal(incident), personas, world)
    assert remediation.lost_executions() == []  # just approved: its task is on the way
    long_ago = timezone.now() - timedelta(hours=1)
    ActionProposal.objects.filter(pk=waiting.pk).update(updated_at=long_ago)
    assert remediation.lost_executions() == [waiting.pk]

    hopeless = assistant_proposal(incident, "none", None, {"steps": "page the vendor"})
    ActionProposal.objects.filter(pk=hopeless.pk).update(
        status=Status.EXECUTING, started_at=long_ago, attempts=remediation.MAX_ATTEMPTS
    )
    assert remediation.give_up_on_lost_executions() == 1
    hopeless.refresh_from_db()
    assert hopeless.status == Status.FAILED
    assert hopeless.error.startswith("gave up after 4 attempts: the worker running it was lost")
    assert hopeless.pk not in remediation.lost_executions()
    assert ActionEvent.objects.filter(action=hopeless, kind="failed").count() == 1


def test_the_task_retries_a_transient_error_until_the_attempts_run_out(world, incident, personas):
    from assistant.tasks import execute_action

    proposal = previewed_and_approved(assistant_proposal(incident), personas, world)
    world.kube.stop()

    # eagerly, Celery runs each retry at once instead of after its countdown
    execute_action.apply(args=[proposal.pk])

    proposal.refresh_from_db()
    assert proposal.status == Status.FAILED
    assert proposal.attempts == remediation.MAX_ATTEMPTS
    assert proposal.error.endswith(f"(after {remediation.MAX_ATTEMPTS} attempts)")

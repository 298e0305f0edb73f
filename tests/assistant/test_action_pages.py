"""The action cards on the incident page, their buttons per role, htmx answers, and the audit pages.

The incident's cluster is the Kubernetes stand-in of tests/assistant/actions_support.py, so a
preview is a real server-side dry run through the official client; approving queues the
execution (on commit), which these tests run eagerly where they need the outcome.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import yaml
from django.utils import timezone

from assistant.models import ActionEvent, ActionProposal, Analysis
from collectors.base import Scope
from collectors.models import Evidence
from incidents.models import Cluster, Incident
from tests.assistant.actions_support import (
    CHAT_API,
    IMAGE_11,
    IMAGE_12,
    NODE,
    NS,
    POD,
    open_world,
)
from tests.incidents.payloads import firing, group, post

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/chat-api"


@pytest.fixture
def world():
    with open_world() as world:
        yield world


@pytest.fixture
def incident(client, am_token, world) -> Incident:
    """chat-api's incident on the stand-in's cluster, with one evidence panel, collection done."""
    post(client, group(firing("ChatAPIHighErrorRate", job="chat-api")), am_token)
    client.logout()
    incident = Incident.objects.get()
    incident.cluster = Cluster.objects.create(
        name="actions", kubeconfig=yaml.safe_dump(world.kube.kubeconfig())
    )
    incident.scope = Scope(
        namespaces=[NS], deployments=[CHAT_API], pods=[POD], nodes=[NODE]
    ).to_json()
    incident.collection_started_at = incident.collection_finished_at = timezone.now()
    incident.save()
    Evidence.objects.create(
        incident=incident,
        collector="kubernetes",
        kind="pod_status",
        title=f"pod {POD.name}",
        entity_kind="Pod",
        entity_namespace=NS,
        entity_name=POD.name,
        data={"phase": "Running"},
    )
    return incident


@pytest.fixture
def evidence_id(incident) -> int:
    return incident.evidence.get().pk


@pytest.fixture
def analysis(incident, evidence_id) -> Analysis:
    hypotheses = [
        {
            "category": "bad-deploy",
            "entity": CHAT_API.as_dict(),
            "confidence": 0.86,
            "evidence": [evidence_id],
            "explanation": "Revision 12 rolled out; the errors began a minute later.",
        }
    ]
    return Analysis.objects.create(
        incident=incident,
        status=Analysis.Status.READY,
        summary="Most likely bad-deploy of Deployment llm/chat-api.",
        hypotheses=hypotheses,
        rules_hypotheses=hypotheses,
        finished_at=timezone.now(),
    )


@pytest.fixture
def undo(analysis) -> ActionProposal:
    """The assistant's recommended rollback (no human proposer)."""
    return ActionProposal.objects.create(
        incident=analysis.incident,
        analysis=analysis,
        rank=0,
        action="rollout-undo",
        target_kind="Deployment",
        target_namespace=NS,
        target_name="chat-api",
        params={},
        rationale="Revision 11 served cleanly before revision 12.",
    )


def url(proposal: ActionProposal, step: str = "") -> str:
    base = f"/incidents/{proposal.incident_id}/actions/{proposal.pk}"
    return f"{base}/{step}" if step else base


def page(client, incident) -> str:
    response = client.get(f"/incidents/{incident.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def card_html(html: str, proposal: ActionProposal) -> str:
    """The card of `proposal` out of a page (up to its closing </article>)."""
    start = html.index(f'id="action-{proposal.pk}"')
    return html[start : html.index("</article>", start)]


def htmx_post(client, path: str, data: dict | None = None):
    return client.post(path, data or {}, headers=HTMX)


def buttons(html: str) -> set[str]:
    return set(re.findall(r'data-action="([a-z-]+)"', html))


# --- the card and who sees which button ---


def test_a_viewer_sees_the_card_with_its_evidence_but_no_button(client_as, incident, undo):
    html = page(client_as("viewer"), incident)
    card = card_html(html, undo)
    assert "rollout-undo" in card and "Deployment llm/chat-api" in card
    assert "proposed by the assistant" in card
    assert "Revision 11 served cleanly" in card
    assert 'class="badge action-status action-proposed"' in card
    assert "recommended" in card
    evidence = incident.evidence.get().pk
    assert f'href="#evidence-{evidence}"' in card
    assert f'id="evidence-{evidence}"' in html  # the citation lands on its panel
    assert "Nothing runs without an approver's approval" in html
    assert "data-action=" not in html  # no button of any kind
    assert 'id="action-add"' not in html
    assert f'href="/incidents/{incident.pk}/audit"' in html


def test_buttons_follow_the_role(client_as, incident, undo):
    from assistant import remediation

    responder = buttons(card_html(page(client_as("responder"), incident), undo))
    assert "preview-action" in responder
    assert "approve-action" not in responder
    assert "add-action" not in responder  # the add form is outside the card

    approver_client = client_as("approver")
    htmx_post(approver_client, url(undo, "preview"))
    undo.refresh_from_db()
    approver = buttons(card_html(page(approver_client, incident), undo))
    assert "approve-action" in approver
    allowed = remediation.allowed(undo, _user("approver"))
    for name, button in (("preview", "preview-action"), ("reject", "reject-action")):
        assert (button in approver) == allowed[name]


def _user(name: str):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=name)


def test_the_add_form_is_for_responders_and_opens_on_demand(client_as, incident, undo):
    client = client_as("responder")
    html = page(client, incident)
    assert 'id="action-add"' in html and 'data-action="open-add-action"' in html
    assert "<textarea" not in html  # nothing to type into until it is opened
    form = client.get(f"/incidents/{incident.pk}/actions/new", headers=HTMX).content.decode()
    assert form.lstrip().startswith("<form") and 'id="action-add"' in form
    assert 'data-action="add-action"' in form
    for action in ("rollout-undo", "scale-deployment", "cordon-node", "silence-alert", "none"):
        assert f'<option value="{action}"' in form
    closed = client.get(f"/incidents/{incident.pk}/actions/new?close=1", headers=HTMX)
    assert 'data-action="open-add-action"' in closed.content.decode()


# --- preview ---


def test_preview_over_htmx_shows_the_diff_and_the_exact_request(client_as, incident, undo, world):
    response = htmx_post(client_as("responder"), url(undo, "preview"))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith("<article") or 'id="action-' in html[:400]
    assert f'id="action-{undo.pk}"' in html
    assert 'class="badge action-status action-previewed"' in html
    assert "dry run" in html
    added = re.findall(r'<span class="diff-line diff-add">([^<]*)</span>', html)
    removed = re.findall(r'<span class="diff-line diff-del">([^<]*)</span>', html)
    assert any(IMAGE_11 in line for line in added), added
    assert any(IMAGE_12 in line for line in removed), removed
    assert '<details class="requests preview-requests">' in html
    assert f"PATCH {DEPLOYMENT_PATH}" in html
    # A preview changes nothing: every write the stand-in saw was a dry run.
    assert world.writes() and all(r.dry_run for r in world.writes())
    assert world.deployment()["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_12


def test_a_failed_preview_says_why(client_as, incident, undo, world):
    world.kube.stop()  # the cluster is gone
    response = htmx_post(client_as("responder"), url(undo, "preview"))
    assert response.status_code == 200
    html = response.content.decode()
    undo.refresh_from_db()
    assert undo.preview_error and undo.status == ActionProposal.Status.PROPOSED
    assert 'class="error preview-error" role="alert">The dry run could not run' in html
    assert "approve-action" not in buttons(html)


# --- approve ---


def test_approve_without_a_fresh_preview_shows_the_409_inline(client_as, incident, undo):
    client = client_as("approver")
    response = htmx_post(client, url(undo, "approve"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="error action-error" role="alert"' in html
    assert re.search(r"preview", html.split('class="error action-error"')[1][:400], re.I)
    undo.refresh_from_db()
    assert undo.status == ActionProposal.Status.PROPOSED
    plain = client.post(url(undo, "approve"))
    assert plain.status_code == 409
    assert f'id="action-{undo.pk}"' in plain.content.decode()


def test_approve_after_preview_runs_it_and_the_card_settles(
    client_as, incident, undo, world, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    client = client_as("approver")
    htmx_post(client, url(undo, "preview"))
    world.forget_requests()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = htmx_post(client, url(undo, "approve"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="badge action-status action-approved"' in html
    assert 'hx-trigger="every 2s"' in html  # polls until it settles
    assert f'hx-get="{url(undo)}"' in html
    assert "Approved by <strong>approver</strong>" in html
    assert "approve-action" not in buttons(html)
    assert callbacks, "approving queued nothing"
    # Approving re-checks the target with the same dry run; it writes nothing.
    assert all(r.dry_run for r in world.writes()), "approving alone changed something"
    world.forget_requests()

    for callback in callbacks:  # the worker's turn
        callback()
    undo.refresh_from_db()
    assert undo.status == ActionProposal.Status.SUCCEEDED, undo.error
    (patch,) = [r for r in world.writes() if not r.dry_run]
    assert (patch.method, patch.path) == ("PATCH", DEPLOYMENT_PATH)

    polled = client.get(url(undo), headers=HTMX).content.decode()
    assert 'class="badge action-status action-succeeded"' in polled
    assert "every 2s" not in polled  # settled: no more polling
    assert "Succeeded" in polled and undo.outcome.get("message", "") in polled
    assert "The API's answer" in polled
    assert f"PATCH {DEPLOYMENT_PATH}" in polled


def test_a_stale_preview_says_so_and_approving_it_is_refused_inline(client_as, incident, undo):
    client = client_as("approver")
    htmx_post(client, url(undo, "preview"))
    ActionProposal.objects.filter(pk=undo.pk).update(
        previewed_at=timezone.now() - timedelta(hours=2)
    )
    card = card_html(page(client, incident), undo)
    assert "stale dry run" in card
    assert "approve-action" not in buttons(card)
    assert 'class="approval-note small" role="note">The preview is older than' in card
    refused = htmx_post(client, url(undo, "approve")).content.decode()
    assert 'class="error action-error" role="alert">The preview is older than' in refused
    undo.refresh_from_db()
    assert undo.status == ActionProposal.Status.PREVIEWED


def test_a_plain_approve_redirects_to_the_card(client_as, incident, undo):
    client = client_as("approver")
    client.post(url(undo, "preview"))
    response = client.post(url(undo, "approve"))
    assert response.status_code == 302
    assert response.url == f"/incidents/{incident.pk}/#action-{undo.pk}"


def test_a_responder_cannot_approve_even_by_posting(client_as, incident, undo):
    client = client_as("responder")
    client.post(url(undo, "preview"))
    assert client.post(url(undo, "approve")).status_code == 403
    assert htmx_post(client, url(undo, "approve")).status_code == 403
    undo.refresh_from_db()
    assert undo.status == ActionProposal.Status.PREVIEWED


def test_four_eyes_says_why_instead_of_approve(client_as, incident, undo, settings, make_user):
    settings.VIGIL_FOUR_EYES = True
    client = client_as("approver")
    response = client.post(
        f"/incidents/{incident.pk}/actions/new",
        {
            "action": "scale-deployment",
            "target": "Deployment/llm/chat-api",
            "params": '{"replicas": 3}',
        },
    )
    assert response.status_code == 302
    added = ActionProposal.objects.get(action="scale-deployment")
    assert added.proposed_by.username == "approver"
    htmx_post(client, url(added, "preview"))
    card = card_html(page(client, incident), added)
    assert "approve-action" not in buttons(card)
    assert "Four eyes: you added this action" in card
    refused = htmx_post(client, url(added, "approve"))
    assert refused.status_code == 200 and 'role="alert"' in refused.content.decode()
    assert client.post(url(added, "approve")).status_code == 403
    added.refresh_from_db()
    assert added.status == ActionProposal.Status.PREVIEWED

    other = make_user("approver2", "approver")
    client.force_login(other)
    card = card_html(page(client, incident), added)
    assert "approve-action" in buttons(card)
    assert "Four eyes" not in card


# --- reject, cancel, edit ---


def test_reject_needs_a_reason_and_is_for_approvers(client_as, incident, undo):
    responder = client_as("responder")
    assert responder.get(url(undo, "reject"), headers=HTMX).status_code == 403
    assert htmx_post(responder, url(undo, "reject"), {"reason": "no"}).status_code == 403
    client = client_as("approver")
    form = client.get(url(undo, "reject"), headers=HTMX).content.decode()
    assert 'name="reason"' in form and "required" in form
    blank = htmx_post(client, url(undo, "reject"), {"reason": "  "})
    assert blank.status_code == 200
    assert "a reason is required" in blank.content.decode()
    assert 'name="reason"' in blank.content.decode()  # the form stays open
    assert client.post(url(undo, "reject"), {"reason": ""}).status_code == 400
    undo.refresh_from_db()
    assert undo.status == ActionProposal.Status.PROPOSED

    done = htmx_post(client, url(undo, "reject"), {"reason": "the rollout is not the cause"})
    html = done.content.decode()
    assert 'class="badge action-status action-rejected"' in html
    assert "Rejected by <strong>approver</strong>" in html
    assert "the rollout is not the cause" in html
    assert not buttons(html) & {"approve-action", "reject-action"}  # it may be reopened


def test_an_approver_cancels_an_approved_action_before_it_runs(
    client_as, incident, undo, django_capture_on_commit_callbacks
):
    client = client_as("approver")
    htmx_post(client, url(undo, "preview"))
    with django_capture_on_commit_callbacks(execute=False):
        htmx_post(client, url(undo, "approve"))
    card = client.get(url(undo), headers=HTMX).content.decode()
    assert "cancel-action" in buttons(card)
    form = client.get(url(undo, "cancel"), headers=HTMX).content.decode()
    assert 'name="reason"' in form
    assert "every 2s" not in form  # no polling while the form is open
    done = htmx_post(client, url(undo, "cancel"), {"reason": "fixed by hand"}).content.decode()
    assert 'class="badge action-status action-cancelled"' in done
    assert "Cancelled by <strong>approver</strong>" in done and "fixed by hand" in done
    assert "every 2s" not in done


def test_edit_params_validates_the_json_and_the_types(client_as, incident, undo):
    client = client_as("responder")
    form = client.get(url(undo, "params"), headers=HTMX).content.decode()
    assert 'name="params"' in form
    assert "to_revision" in form  # the fields the action takes, as help
    bad_json = htmx_post(client, url(undo, "params"), {"params": "{to_revision: 11"})
    assert "not valid JSON" in bad_json.content.decode()
    assert "{to_revision: 11" in bad_json.content.decode()  # what was typed stays
    not_object = htmx_post(client, url(undo, "params"), {"params": "[11]"})
    assert "must be a JSON object" in not_object.content.decode()
    bad_type = htmx_post(client, url(undo, "params"), {"params": '{"to_revision": "eleven"}'})
    html = bad_type.content.decode()
    assert "to_revision" in html and 'role="alert"' in html
    assert client.post(url(undo, "params"), {"params": "nope"}).status_code == 400
    undo.refresh_from_db()
    assert undo.params == {}

    saved = htmx_post(client, url(undo, "params"), {"params": '{"to_revision": 11}'})
    assert "to_revision=11" in saved.content.decode()
    undo.refresh_from_db()
    assert undo.params == {"to_revision": 11}
    assert undo.edited_by.username == "responder"


# --- adding from the catalogue ---


def test_the_add_form_offers_the_targets_of_the_chosen_action(client_as, incident, analysis):
    client = client_as("responder")
    base = f"/incidents/{incident.pk}/actions/new"
    scale = client.get(base, {"action": "scale-deployment"}, headers=HTMX).content.decode()
    assert '<option value="Deployment/llm/chat-api"' in scale
    assert "Node" not in re.search(r'name="target">(.*?)</select>', scale, re.S).group(1)
    assert "replicas" in scale and "required" in scale
    cordon = client.get(base, {"action": "cordon-node"}, headers=HTMX).content.decode()
    assert '<option value="Node//gpu-node-2"' in cordon
    silence = client.get(base, {"action": "silence-alert"}, headers=HTMX).content.decode()
    assert 'name="target"' not in silence and "takes no target" in silence
    assert client.get(base, {"action": "none"}).status_code == 200  # a page of its own


def test_adding_an_action_shows_its_card(client_as, incident, analysis):
    client = client_as("responder")
    response = htmx_post(
        client,
        f"/incidents/{incident.pk}/actions/new",
        {
            "action": "scale-deployment",
            "target": "Deployment/llm/chat-api",
            "params": '{"replicas": 4}',
            "rationale": "more replicas for the surge",
        },
    )
    assert response.status_code == 200
    html = response.content.decode()
    added = ActionProposal.objects.get(action="scale-deployment")
    assert html.lstrip().startswith('<div id="actions"')
    card = card_html(html, added)
    assert "added by <strong>responder</strong>" in card
    assert "replicas=4" in card and "more replicas for the surge" in card
    assert 'id="action-add"' in html  # a fresh form below
    assert added.target == CHAT_API.as_dict()
    assert f'id="action-{added.pk}"' in page(client, incident)


def test_adding_with_bad_params_keeps_the_form_and_says_why(client_as, incident, analysis):
    client = client_as("responder")
    path = f"/incidents/{incident.pk}/actions/new"
    for params, words in (
        ('{"replicas": 0}', "replicas"),
        ('{"replica": 3}', "replica"),
        ("{", "not valid JSON"),
    ):
        response = htmx_post(
            client,
            path,
            {"action": "scale-deployment", "target": "Deployment/llm/chat-api", "params": params},
        )
        assert response.status_code == 200
        html = response.content.decode()
        error = re.search(r'class="error add-error" role="alert">([^<]*)<', html)
        assert error and words in error.group(1), html[-2000:]
        assert '<form id="action-add"' in html  # still open, with what was typed
        assert f">{params}</textarea>" in html.replace("&quot;", '"')
    outside = client.post(
        path, {"action": "scale-deployment", "target": "Deployment/search/reranker", "params": "{}"}
    )
    assert outside.status_code == 400
    assert not ActionProposal.objects.filter(action="scale-deployment").exists()


# --- what each status looks like ---


def _settle(proposal: ActionProposal, user, **fields) -> ActionProposal:
    now = timezone.now()
    defaults = {"decided_by": user, "decided_at": now}
    for name, value in {**defaults, **fields}.items():
        setattr(proposal, name, value)
    proposal.save()
    return proposal


def test_cards_per_status(client_as, incident, undo, personas):
    client = client_as("viewer")
    approver = personas["approver"]
    request = {
        "method": "PATCH",
        "path": DEPLOYMENT_PATH,
        "query": {"fieldManager": "vigil"},
        "content_type": "application/json-patch+json",
        "body": [{"op": "replace", "path": "/spec/template", "value": {"x": 1}}],
    }

    _settle(undo, approver, status="executing", started_at=timezone.now(), attempts=2)
    html = card_html(page(client, incident), undo)
    assert 'hx-trigger="every 2s"' in html and "Running since" in html and "attempt 2" in html

    _settle(
        undo,
        approver,
        status="succeeded",
        finished_at=timezone.now(),
        outcome={
            "ok": True,
            "message": "Deployment llm/chat-api rolled back to revision 11",
            "requests": [request],
            "responses": [{"status": 200, "body": {"kind": "Deployment"}}],
            "result": {"to_revision": 11},
        },
    )
    html = card_html(page(client, incident), undo)
    assert "every 2s" not in html
    assert "rolled back to revision 11" in html
    assert f"PATCH {DEPLOYMENT_PATH}?fieldManager=vigil" in html
    assert 'class="response-status">200<' in html

    _settle(undo, approver, status="failed", outcome={}, error="the API server answered 500")
    html = card_html(page(client, incident), undo)
    assert 'class="error execution-error" role="alert">the API server answered 500' in html

    _settle(undo, approver, status="rejected", reason="wrong deployment", error="")
    html = card_html(page(client, incident), undo)
    assert "Rejected by <strong>approver</strong>" in html and "wrong deployment" in html

    _settle(
        undo,
        approver,
        status="proposed",
        decided_at=None,
        decided_by=None,
        reason="",
        preview_error="deployments.apps chat-api is forbidden",
        previewed_at=timezone.now(),
    )
    html = card_html(page(client, incident), undo)
    assert "The dry run could not run" in html and "is forbidden" in html


def test_a_runbook_action_shows_its_steps(client_as, incident, analysis):
    steps = ActionProposal.objects.create(
        incident=incident,
        analysis=analysis,
        rank=1,
        action="none",
        params={"steps": "Check the secret <b>model-creds</b>."},
    )
    html = card_html(page(client_as("viewer"), incident), steps)
    assert "Check the secret &lt;b&gt;model-creds&lt;/b&gt;." in html
    assert "steps=" not in html


def test_a_silence_card_links_the_silence(client_as, incident, analysis, personas):
    silence = ActionProposal.objects.create(
        incident=incident,
        analysis=analysis,
        rank=2,
        action="silence-alert",
        params={"comment": "known"},
        status="succeeded",
        outcome={
            "ok": True,
            "message": "silence created",
            "result": {
                "silence_id": "0a1b2c3d-0000-4000-8000-000000000001",
                "url": "http://am.example/#/silences/0a1b2c3d-0000-4000-8000-000000000001",
            },
        },
    )
    html = card_html(page(client_as("viewer"), incident), silence)
    assert "0a1b2c3d-0000-4000-8000-000000000001" in html
    assert 'href="http://am.example/#/silences/' in html


# --- viewers and strangers cannot post ---


@pytest.mark.parametrize(
    "step", ["preview", "approve", "reject", "cancel", "params", "expire-silence"]
)
def test_viewers_get_403_on_every_step(client_as, incident, undo, step):
    client = client_as("viewer")
    assert client.post(url(undo, step), {"reason": "x", "params": "{}"}).status_code == 403
    assert htmx_post(client, url(undo, step), {"reason": "x"}).status_code == 403
    assert (
        client.post(f"/incidents/{incident.pk}/actions/new", {"action": "none"}).status_code == 403
    )
    undo.refresh_from_db()
    assert undo.status == ActionProposal.Status.PROPOSED


def test_an_action_of_another_incident_is_404(client_as, incident, undo, am_token, client):
    post(client, group(firing("SomethingElse", namespace="other")), am_token)
    other = Incident.objects.exclude(pk=incident.pk).get()
    viewer = client_as("viewer")
    assert viewer.get(f"/incidents/{other.pk}/actions/{undo.pk}").status_code == 404


# --- the audit ---


def _events(undo: ActionProposal, count: int) -> list[ActionEvent]:
    start = timezone.now() - timedelta(hours=1)
    request = {
        "method": "PATCH",
        "path": DEPLOYMENT_PATH,
        "query": {"fieldManager": "vigil"},
        "content_type": "application/json-patch+json",
        "body": [{"op": "replace", "path": "/metadata/resourceVersion", "value": "812"}],
    }
    return [
        ActionEvent.objects.create(
            action=undo,
            incident=undo.incident,
            at=start + timedelta(seconds=i),
            kind="succeeded" if i % 2 else "proposed",
            actor="responder" if i % 2 else "assistant",
            detail=f"step {i}",
            requests=[request] if i % 2 else [],
            responses=[{"status": 200, "body": {"kind": "Deployment"}}] if i % 2 else [],
        )
        for i in range(count)
    ]


def test_the_incident_audit_lists_every_step_newest_first_with_the_requests(
    client_as, incident, undo
):
    _events(undo, 55)
    client = client_as("viewer")
    html = client.get(f"/incidents/{incident.pk}/audit").content.decode()
    details = re.findall(r'<p class="detail">step (\d+)</p>', html)
    assert details[:3] == ["54", "53", "52"] and len(details) == 50
    assert "page 1 of 2" in html
    assert '<details class="requests">' in html
    assert f"PATCH {DEPLOYMENT_PATH}?fieldManager=vigil" in html
    assert "1 request sent, with the answers" in html
    assert "&quot;/metadata/resourceVersion&quot;" in html
    assert 'class="response-status">200<' in html
    assert f'href="/incidents/{incident.pk}/#action-{undo.pk}"' in html
    assert "by <strong>responder</strong>" in html
    older = client.get(f"/incidents/{incident.pk}/audit?page=2").content.decode()
    assert re.findall(r'<p class="detail">step (\d+)</p>', older) == [
        str(i) for i in range(4, -1, -1)
    ]
    one = client.get(f"/incidents/{incident.pk}/audit?action={undo.pk}").content.decode()
    assert f"Only action #{undo.pk}" in one


def test_the_global_audit_links_the_incidents(client_as, incident, undo):
    _events(undo, 2)
    html = client_as("viewer").get("/audit/").content.decode()
    assert f'class="incident-link" href="/incidents/{incident.pk}/"' in html
    assert "step 1" in html and "step 0" in html
    assert 'href="/audit/">Audit</a>' in html  # the nav link


def test_the_audit_is_for_viewers_and_up(client_as, incident, undo):
    for path in (f"/incidents/{incident.pk}/audit", "/audit/"):
        anonymous = client_as("anonymous").get(path)
        assert anonymous.status_code == 302 and "/login/" in anonymous.url
        assert client_as("outsider").get(path).status_code == 403
        for role in ("viewer", "responder", "approver"):
            assert client_as(role).get(path).status_code == 200
    assert b'href="/audit/"' not in client_as("outsider").get("/incidents/").content


def test_the_real_steps_reach_the_audit(
    client_as, incident, undo, django_capture_on_commit_callbacks
):
    client = client_as("approver")
    htmx_post(client, url(undo, "preview"))
    with django_capture_on_commit_callbacks(execute=False):
        htmx_post(client, url(undo, "approve"))
    html = client.get(f"/incidents/{incident.pk}/audit").content.decode()
    kinds = re.findall(r'class="badge audit-kind kind-([a-z_]+)"', html)
    assert kinds[:2] == ["approved", "previewed"], kinds
    assert f"PATCH {DEPLOYMENT_PATH}" in html
    # What a preview or an approval records is what execution will send, not a write made then.
    summaries = re.findall(r'<details class="requests"><summary>([^<]*)</summary>', html)
    assert (
        summaries[:2]
        == ["1 request execution will send (dry-run with dryRun=All, nothing changed)"] * 2
    ), summaries
    assert "request sent" not in html

"""Action endpoints of the JSON API (mounted by vigil/api.py): session or user token, never an
integration token.

The same transitions as the incident page's buttons (assistant/remediation.py), with the same
permissions (incidents.permissions): 401 without a user; 403 for an outsider, for a viewer on
any change, for a responder deciding (approve, reject, cancel) and for four eyes; 404 for an
unknown incident or action; 409 for the wrong state, an approval without a fresh preview or
whose target changed since it; 400 for bad input (an unknown action, parameters the catalogue
refuses, a target outside the incident, a blank reason); 503 when the cluster or Alertmanager
could not be reached to check or do the step.

Every answer is the action as in `actions[]` of GET /api/v1/incidents/<id> (DESIGN.md), plus
`incident` and `allowed` (what this user may do next); GET adds its audit `events`.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError

from incidents import permissions
from incidents.models import Incident

from . import remediation
from .models import ActionProposal
from .presentation import action_json, rfc3339

router = Router(tags=["actions"])


class ActionIn(Schema):
    # Typed loosely on purpose: remediation checks them and answers 400 naming the field, where
    # the schema would answer 422.
    action: Any = Field(None, description="A name from the catalogue (TAXONOMY.md)")
    target: Any = Field(None, description="{kind, namespace, name}, or null for none/silence")
    params: Any = Field(None, description="The action's parameters (object)")
    rationale: Any = Field("", description="Why, for the approver")


class ParamsIn(Schema):
    params: Any = Field(None, description="The new parameters (object)")


class ReasonIn(Schema):
    reason: Any = Field("", description="Why (required to reject)")


def _require(request: HttpRequest, *, respond: bool = False, approve: bool = False) -> None:
    if not permissions.can_view(request.user):
        raise HttpError(403, "You have no role in Vigil; ask an administrator for one.")
    if respond and not permissions.can_respond(request.user):
        raise HttpError(403, "Only responders can change actions.")
    if approve and not permissions.can_approve(request.user):
        raise HttpError(
            403, "Only approvers can decide on actions; responders propose, approvers decide."
        )


def _proposal(request: HttpRequest, action_id: int, **role: bool) -> ActionProposal:
    _require(request, **role)
    proposal = (
        ActionProposal.objects.select_related(
            "incident__cluster", "proposed_by", "previewed_by", "decided_by"
        )
        .filter(pk=action_id)
        .first()
    )
    if proposal is None:
        raise HttpError(404, "No such action")
    return proposal


def event_json(event) -> dict:
    return {
        "id": event.pk,
        "at": rfc3339(event.at),
        "kind": event.kind,
        "actor": event.actor,
        "detail": event.detail,
        "requests": event.requests,
        "responses": event.responses,
    }


def _out(request: HttpRequest, proposal: ActionProposal, *, events: bool = False) -> dict:
    proposal = (
        ActionProposal.objects.select_related(
            "proposed_by", "previewed_by", "decided_by", "edited_by"
        )
        .filter(pk=proposal.pk)
        .first()
    )
    body = {
        **action_json(proposal),
        "incident": proposal.incident_id,
        "edited_by": proposal.edited_by.get_username() if proposal.edited_by_id else None,
        "allowed": remediation.allowed(proposal, request.user),
    }
    if events:
        body["events"] = [event_json(e) for e in proposal.events.order_by("at", "id")]
    return body


def _step(request: HttpRequest, proposal: ActionProposal, step) -> dict:
    try:
        step()
    except remediation.RemediationError as exc:
        raise HttpError(exc.status, exc.message) from exc
    return _out(request, proposal)


@router.post("/incidents/{incident_id}/actions", response={201: dict})
def add_action(request: HttpRequest, incident_id: int, body: ActionIn) -> Status:
    """Add an action from the catalogue to the incident (responders); status `proposed`."""
    _require(request, respond=True)
    incident = Incident.objects.select_related("cluster").filter(pk=incident_id).first()
    if incident is None:
        raise HttpError(404, "No such incident")
    try:
        proposal = remediation.add_action(
            incident,
            request.user,
            body.action,
            body.target,
            body.params,
            body.rationale if body.rationale is not None else "",
        )
    except remediation.RemediationError as exc:
        raise HttpError(exc.status, exc.message) from exc
    return Status(201, _out(request, proposal))


@router.get("/actions/{action_id}", response=dict)
def get_action(request: HttpRequest, action_id: int) -> dict:
    """The action with its audit events, oldest first."""
    proposal = _proposal(request, action_id)
    return _out(request, proposal, events=True)


@router.api_operation(["POST", "PATCH"], "/actions/{action_id}/params", response=dict)
def edit_params(request: HttpRequest, action_id: int, body: ParamsIn) -> dict:
    """Change the parameters (proposed, previewed or rejected actions); the preview is dropped."""
    proposal = _proposal(request, action_id, respond=True)
    return _step(
        request, proposal, lambda: remediation.edit_params(proposal, request.user, body.params)
    )


@router.post("/actions/{action_id}/preview", response=dict)
def preview_action(request: HttpRequest, action_id: int) -> dict:
    """Run the dry run now. A dry run the cluster refused is stored as `preview_error` (200)."""
    proposal = _proposal(request, action_id, respond=True)
    return _step(request, proposal, lambda: remediation.preview(proposal, request.user))


@router.post("/actions/{action_id}/approve", response=dict)
def approve_action(request: HttpRequest, action_id: int) -> dict:
    """Approve (approvers; four eyes): needs a fresh preview whose target has not changed since;
    enqueues the execution."""
    proposal = _proposal(request, action_id, approve=True)
    return _step(request, proposal, lambda: remediation.approve(proposal, request.user))


@router.post("/actions/{action_id}/reject", response=dict)
def reject_action(request: HttpRequest, action_id: int, body: ReasonIn | None = None) -> dict:
    """Reject with a reason (approvers)."""
    proposal = _proposal(request, action_id, approve=True)
    reason = body.reason if body is not None else ""
    return _step(request, proposal, lambda: remediation.reject(proposal, request.user, reason))


@router.post("/actions/{action_id}/cancel", response=dict)
def cancel_action(request: HttpRequest, action_id: int, body: ReasonIn | None = None) -> dict:
    """Cancel an approved action before it runs (approvers); the reason is optional."""
    proposal = _proposal(request, action_id, approve=True)
    reason = body.reason if body is not None else ""
    return _step(
        request, proposal, lambda: remediation.cancel(proposal, request.user, reason or "")
    )


@router.post("/actions/{action_id}/expire-silence", response=dict)
def expire_silence(request: HttpRequest, action_id: int) -> dict:
    """Expire the silence a succeeded silence-alert created (responders)."""
    proposal = _proposal(request, action_id, respond=True)
    return _step(request, proposal, lambda: remediation.expire_silence(proposal, request.user))

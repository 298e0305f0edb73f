"""The remediation actions on the incident page: one card per proposal, its buttons, and the audit.

Every step is a service of assistant/remediation.py (which decides who may do what, four eyes
included); these views only ask it and show the answer. Roles first (incidents.permissions):
viewers see the cards and the audit and get 403 for any POST; only approvers reach approve,
reject and cancel (deciding is theirs; responders add, edit and preview).

htmx requests get the refreshed card back (a 200 carrying the error when a step was refused:
htmx swaps only 2xx answers); plain form posts are redirected to the card on the incident page,
or get a page of their own holding the card and its error, with the service's status (400, 403,
409).
"""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from incidents import permissions
from incidents.models import Incident

from . import action_cards
from .models import ActionEvent, ActionProposal

AUDIT_PAGE_SIZE = 50
MAX_REASON = 2000
MAX_PARAMS = 50_000


def _proposal(
    request: HttpRequest, incident_id: int, action_id: int, *, respond: bool
) -> tuple[Incident, ActionProposal]:
    incident = permissions.access_incident(request.user, incident_id, respond=respond)
    proposal = get_object_or_404(
        ActionProposal.objects.select_related(
            "analysis", "proposed_by", "edited_by", "previewed_by", "decided_by"
        ),
        pk=action_id,
        incident=incident,
    )
    return incident, proposal


def card_url(proposal: ActionProposal) -> str:
    return f"{proposal.incident.get_absolute_url()}#action-{proposal.pk}"


def _render_card(
    request: HttpRequest, incident: Incident, proposal: ActionProposal, *, status: int = 200, **kw
) -> HttpResponse:
    from .presentation import evidence_anchor_ids

    standalone = not request.htmx
    context = {
        "incident": incident,
        "a": action_cards.card(
            proposal,
            request.user,
            anchors=evidence_anchor_ids(incident),
            standalone=standalone,
            **kw,
        ),
    }
    if standalone:
        return render(request, "assistant/action.html", context, status=status)
    return render(request, "partials/action_card.html", context)


def _done(request: HttpRequest, incident: Incident, proposal: ActionProposal) -> HttpResponse:
    if request.htmx:
        proposal.refresh_from_db()
        return _render_card(request, incident, proposal)
    return HttpResponseRedirect(card_url(proposal))


def _refused(
    request: HttpRequest,
    incident: Incident,
    proposal: ActionProposal,
    message: str,
    status: int,
    **kw,
) -> HttpResponse:
    """htmx: the card with the error (200); a plain post: a page with the card, and the status."""
    proposal.refresh_from_db()
    return _render_card(
        request, incident, proposal, status=200 if request.htmx else status, error=message, **kw
    )


def _run(request, incident, proposal, step, *, mode: str = "", form_text: str = ""):
    """Do one remediation step; the card, or the error where the service refused it."""
    from .remediation import RemediationError

    try:
        step()
    except RemediationError as exc:
        status = getattr(exc, "status", 400)
        return _refused(
            request, incident, proposal, str(exc), status, mode=mode, form_text=form_text
        )
    return _done(request, incident, proposal)


def _require_approve(user, doing: str = "approve actions") -> None:
    """Deciding is the approvers' (responders propose): 403 for anyone else, htmx or not."""
    if not permissions.can_approve(user):
        raise PermissionDenied(f"Only approvers can {doing}.")


# --- the card ---------------------------------------------------------------------------------


@require_GET
@login_required
@vary_on_headers("HX-Request")
def action_card(request: HttpRequest, incident_id: int, action_id: int) -> HttpResponse:
    """The card (htmx: it polls this while the action runs), or a page holding it."""
    incident, proposal = _proposal(request, incident_id, action_id, respond=False)
    return _render_card(request, incident, proposal)


@require_POST
@login_required
def action_preview(request: HttpRequest, incident_id: int, action_id: int) -> HttpResponse:
    """Run the dry run; its diff (or why it could not run) appears on the card."""
    from . import remediation

    incident, proposal = _proposal(request, incident_id, action_id, respond=True)
    return _run(request, incident, proposal, lambda: remediation.preview(proposal, request.user))


@require_POST
@login_required
def action_approve(request: HttpRequest, incident_id: int, action_id: int) -> HttpResponse:
    """Approve (approvers only): the execution is queued; the card polls until it settles."""
    from . import remediation

    incident, proposal = _proposal(request, incident_id, action_id, respond=True)
    _require_approve(request.user)
    return _run(request, incident, proposal, lambda: remediation.approve(proposal, request.user))


@require_POST
@login_required
def action_expire_silence(request: HttpRequest, incident_id: int, action_id: int) -> HttpResponse:
    from . import remediation

    incident, proposal = _proposal(request, incident_id, action_id, respond=True)
    return _run(
        request, incident, proposal, lambda: remediation.expire_silence(proposal, request.user)
    )


def _form_step(request: HttpRequest, incident_id: int, action_id: int, mode: str):
    """GET: the card with the form open; POST: the step, or the form again with its error."""
    from . import remediation

    incident, proposal = _proposal(request, incident_id, action_id, respond=True)
    if mode in ("reject", "cancel"):
        _require_approve(request.user, f"{mode} actions")
    if request.method == "GET":
        return _render_card(request, incident, proposal, mode=mode)
    user = request.user
    if mode == "params":
        text = request.POST.get("params", "")
        try:
            params = parse_params_text(text)
        except ValueError as exc:
            return _refused(request, incident, proposal, str(exc), 400, mode=mode, form_text=text)
        step = lambda: remediation.edit_params(proposal, user, params)  # noqa: E731
    elif mode == "reject":
        text = request.POST.get("reason", "")[:MAX_REASON]
        step = lambda: remediation.reject(proposal, user, text)  # noqa: E731
    else:
        text = request.POST.get("reason", "")[:MAX_REASON]
        step = lambda: remediation.cancel(proposal, user, text)  # noqa: E731
    return _run(request, incident, proposal, step, mode=mode, form_text=text)


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def action_params(request: HttpRequest, incident_id: int, action_id: int) -> HttpResponse:
    """GET: the parameters as JSON in a form; POST: save them (the preview must be redone)."""
    return _form_step(request, incident_id, action_id, "params")


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def action_reject(request: HttpRequest, incident_id: int, action_id: int) -> HttpResponse:
    """GET: the form asking why; POST: reject (a reason is required)."""
    return _form_step(request, incident_id, action_id, "reject")


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def action_cancel(request: HttpRequest, incident_id: int, action_id: int) -> HttpResponse:
    """GET: the form (an optional reason); POST: cancel an action before it runs."""
    return _form_step(request, incident_id, action_id, "cancel")


def parse_params_text(text: str) -> dict:
    """The params form's JSON: an object, or ValueError saying what is wrong and where."""
    text = (text or "").strip()
    if not text:
        return {}
    if len(text) > MAX_PARAMS:
        raise ValueError(f"Parameters: at most {MAX_PARAMS} characters of JSON.")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"Parameters are not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None
    if not isinstance(value, dict):
        raise ValueError(
            f'Parameters must be a JSON object such as {{"replicas": 3}}, not {type(value).__name__}.'
        )
    return value


# --- adding an action from the catalogue -------------------------------------------------------


def _action_list(request: HttpRequest, incident: Incident, **add) -> HttpResponse:
    from .templatetags.vigil_actions import action_section_context

    context = action_section_context(request, incident, **add)
    return render(request, "partials/action_list.html", context)


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def action_add(request: HttpRequest, incident_id: int) -> HttpResponse:
    """GET: the add form for `?action=` (htmx: opened from the list, or swapped when the select
    changes; `?close=1` folds it back); POST: add it, answering with the refreshed list."""
    from . import remediation

    incident = permissions.access_incident(request.user, incident_id, respond=True)
    source = request.POST if request.method == "POST" else request.GET
    action = source.get("action", "")
    target_value = source.get("target", "")
    params_text = source.get("params") if request.method == "POST" else None
    rationale = source.get("rationale", "").strip()[:MAX_REASON]
    if request.method == "GET" and request.htmx and request.GET.get("close"):
        return render(request, "partials/action_add_opener.html", {"incident": incident})
    if request.method == "GET":
        form = action_cards.add_form(incident, action=action, target=target_value)
        if request.htmx:
            form["add_standalone"] = request.GET.get("standalone") == "1"
            return render(request, "partials/action_add.html", {"incident": incident, **form})
        return render(request, "assistant/action_add.html", {"incident": incident, **form})

    def refused(message: str, status: int) -> HttpResponse:
        form = {
            "action": action,
            "target": target_value,
            "params_text": params_text,
            "rationale": rationale,
            "error": message,
        }
        if request.htmx:
            return _action_list(request, incident, **form)
        context = {"incident": incident, **action_cards.add_form(incident, **form)}
        return render(request, "assistant/action_add.html", context, status=status)

    try:
        target = action_cards.parse_entity_value(target_value)
        params = parse_params_text(params_text or "")
    except ValueError as exc:
        return refused(str(exc), 400)
    try:
        proposal = remediation.add_action(
            incident, request.user, action, target, params, rationale=rationale
        )
    except remediation.RemediationError as exc:
        return refused(str(exc), getattr(exc, "status", 400))
    if request.htmx:
        return _action_list(request, incident, added=proposal.pk)
    return HttpResponseRedirect(card_url(proposal))


# --- the audit ------------------------------------------------------------------------------------


def _audit(request: HttpRequest, events, incident: Incident | None, **extra) -> HttpResponse:
    page = Paginator(events.order_by("-at", "-id"), AUDIT_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    context = {
        "incident": incident,
        "page": page,
        "rows": [action_cards.audit_row(event) for event in page],
        **extra,
    }
    return render(request, "assistant/audit.html", context)


@require_GET
@login_required
def incident_audit(request: HttpRequest, incident_id: int) -> HttpResponse:
    """Every step of this incident's actions, newest first; `?action=<id>` for one action."""
    incident = permissions.access_incident(request.user, incident_id)
    events = ActionEvent.objects.filter(incident=incident).select_related("action", "incident")
    only = request.GET.get("action", "")
    action = None
    if only.isdigit():
        action = get_object_or_404(ActionProposal, pk=int(only), incident=incident)
        events = events.filter(action=action)
    return _audit(
        request,
        events,
        incident,
        only_action=action,
        query=f"action={action.pk}&" if action else "",
    )


@require_GET
@login_required
def audit(request: HttpRequest) -> HttpResponse:
    """Every step of every action, across incidents, newest first."""
    permissions.require_view(request.user)
    events = ActionEvent.objects.select_related("action", "incident")
    return _audit(request, events, None, query="")

"""`{% action_section incident %}`: the proposal cards and the "Add an action" form, per user.

The incident page (partials/analysis.html) is rendered by views that know nothing of the user's
buttons on each action; this tag asks assistant/action_cards.py for them with the request's user.
"""

from __future__ import annotations

from django import template
from django.http import HttpRequest

from incidents import permissions
from incidents.models import Incident

from .. import action_cards

register = template.Library()


def action_section_context(
    request: HttpRequest,
    incident: Incident,
    *,
    added: int | None = None,
    ready_analysis=None,
    anchors: frozenset[int] | None = None,
    **add,
) -> dict:
    user = getattr(request, "user", None)
    can_respond = permissions.can_respond(user)
    context = {
        "request": request,
        "incident": incident,
        "cards": action_cards.cards_for(
            incident, user, ready_analysis=ready_analysis, anchors=anchors
        ),
        "can_respond": can_respond,
        "can_approve": permissions.can_approve(user),
        "added": added,
    }
    if can_respond and add:  # the form stays open after a refused add, with its error
        context.update(action_cards.add_form(incident, **add), add_open=True)
    return context


@register.inclusion_tag("partials/action_list.html", takes_context=True)
def action_section(context, incident: Incident) -> dict:
    # What assistant.presentation.analysis_context read already, when it is this incident's.
    reuse = context.get("incident") is incident
    return action_section_context(
        context["request"],
        incident,
        ready_analysis=context.get("ready_analysis") if reuse else None,
        anchors=context.get("evidence_anchors") if reuse else None,
    )

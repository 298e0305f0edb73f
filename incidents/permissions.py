"""Who may do what: the one module that pages, the API and Slack all ask.

Roles are groups created by a data migration, each holding Django permissions:
viewer (view_incident), responder (+ respond_incident), approver (+ approve_action).
Anonymous users see the login page only; a logged-in user with no group (an outsider) sees nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404

ROLES = ("viewer", "responder", "approver")
VIEW = "incidents.view_incident"
RESPOND = "incidents.respond_incident"
APPROVE = "incidents.approve_action"


def _has(user: Any, perm: str) -> bool:
    return bool(
        user is not None and user.is_authenticated and user.is_active and user.has_perm(perm)
    )


def can_view(user: Any) -> bool:
    return _has(user, VIEW)


def can_respond(user: Any) -> bool:
    return _has(user, RESPOND)


def can_approve(user: Any) -> bool:
    return _has(user, APPROVE)


def role_of(user: Any) -> str | None:
    """The strongest role a user holds, for display."""
    if can_approve(user):
        return "approver"
    if can_respond(user):
        return "responder"
    if can_view(user):
        return "viewer"
    return None


def require_view(user: Any) -> None:
    if not can_view(user):
        raise PermissionDenied("You have no role in Vigil; ask an administrator for one.")


def require_respond(user: Any) -> None:
    if not can_respond(user):
        raise PermissionDenied("Only responders can change incidents.")


def access_incident(user: Any, incident_id: int, *, respond: bool = False):
    """The incident if the user may see it (and change it, with `respond`); else 403 or 404."""
    from .models import Incident

    require_view(user)
    if respond:
        require_respond(user)
    try:
        return Incident.objects.select_related("cluster").get(pk=incident_id)
    except Incident.DoesNotExist as exc:
        raise Http404("No such incident") from exc

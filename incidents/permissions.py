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
ROLE_PERMISSIONS = {
    "viewer": ["view_incident"],
    "responder": ["view_incident", "respond_incident"],
    "approver": ["view_incident", "respond_incident", "approve_action"],
}


def ensure_roles(**kwargs: Any) -> None:
    """Create the role groups if missing (after migrate, and after a test database flush).

    The data migration creates them on a new database; this post_migrate handler restores them
    when a flush (transactional tests, `manage.py flush`) has emptied the auth tables.
    """
    from django.contrib.auth.models import Group, Permission

    for role, codenames in ROLE_PERMISSIONS.items():
        group, created = Group.objects.get_or_create(name=role)
        if created:
            group.permissions.set(
                Permission.objects.filter(
                    content_type__app_label="incidents", codename__in=codenames
                )
            )


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


def four_eyes_refusal(user: Any, action: Any) -> str:
    """Why four eyes forbids `user` to approve `action` (an ActionProposal); "" when it does not.

    With VIGIL_FOUR_EYES on, whoever added the action or last changed its parameters is one of
    its requesters and may not approve it too. An assistant proposal has no human proposer, and
    previewing is not requesting.
    """
    from django.conf import settings

    if not settings.VIGIL_FOUR_EYES or user is None or not user.is_authenticated:
        return ""
    if action.proposed_by_id is not None and action.proposed_by_id == user.pk:
        did = "added this action"
    elif action.edited_by_id is not None and action.edited_by_id == user.pk:
        did = "last changed this action's parameters"
    else:
        return ""
    return f"Four eyes: you {did}, so another approver must approve it."


def can_approve_action(user: Any, action: Any) -> bool:
    """The approve permission, and four eyes (the state of the action is remediation's part)."""
    return can_approve(user) and not four_eyes_refusal(user, action)

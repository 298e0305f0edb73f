"""Template context shared by every page."""

from __future__ import annotations

from django.http import HttpRequest

from . import permissions


def roles(request: HttpRequest) -> dict[str, bool]:
    user = getattr(request, "user", None)
    return {
        "can_respond": permissions.can_respond(user),
        "can_approve": permissions.can_approve(user),
    }

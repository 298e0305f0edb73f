"""Django's ModelBackend, with a user's own and group permissions read by one query.

Every page asks the viewer's role (incidents.permissions) before it reads anything, and
ModelBackend reads the user's own permissions and those of their groups with a query each, on
every request (it caches them on the user object, which lives for one request). The roles are
groups, so the second query is the one that matters; reading both in one saves a query on every
page view, the list's polls included. Same answers: the union of both, every permission for an
active superuser, none for an inactive or anonymous user or for an object.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.db.models import Q


class RoleBackend(ModelBackend):
    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            if user_obj.is_superuser:
                perms = Permission.objects.all()
            else:
                perms = Permission.objects.filter(
                    Q(user=user_obj) | Q(group__in=user_obj.groups.all())
                )
            user_obj._perm_cache = {
                f"{app_label}.{codename}"
                for app_label, codename in perms.values_list(
                    "content_type__app_label", "codename"
                ).order_by()
            }
        return user_obj._perm_cache

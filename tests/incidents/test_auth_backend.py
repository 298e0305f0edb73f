"""incidents.auth_backend.RoleBackend answers as Django's ModelBackend does, with one query."""

from __future__ import annotations

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from incidents.auth_backend import RoleBackend

pytestmark = pytest.mark.django_db


def _fresh(user):
    """The user as a new request loads it: no permission cached on the object."""
    return type(user).objects.get(pk=user.pk)


def _both(user) -> tuple[set[str], set[str]]:
    """What RoleBackend and Django's ModelBackend answer for the same user."""
    ours = RoleBackend().get_all_permissions(_fresh(user))
    return ours, ModelBackend().get_all_permissions(_fresh(user))


def test_a_role_and_a_direct_permission_are_both_granted_as_django_grants_them(make_user):
    user = make_user("ana", "viewer")
    user.user_permissions.add(Permission.objects.get(codename="change_alert"))
    ours, django = _both(user)
    assert ours == django
    assert {"incidents.view_incident", "incidents.change_alert"} <= ours
    assert "incidents.respond_incident" not in ours


def test_two_roles_give_the_union_of_their_permissions(make_user):
    user = make_user("ben", "viewer")
    user.groups.add(Group.objects.get(name="approver"))
    ours, django = _both(user)
    assert ours == django
    assert "incidents.approve_action" in ours


def test_superusers_inactive_users_outsiders_and_objects(make_user):
    root = make_user("root")
    root.is_superuser = True
    root.save()
    ours, django = _both(root)
    assert (
        ours
        == django
        == {
            f"{app}.{code}"
            for app, code in Permission.objects.values_list("content_type__app_label", "codename")
        }
    )
    gone = make_user("gone", "approver")
    gone.is_active = False
    gone.save()
    assert _both(gone) == (set(), set())
    assert _both(make_user("outsider")) == (set(), set())
    assert RoleBackend().get_all_permissions(AnonymousUser()) == set()
    viewer = make_user("vic", "viewer")
    assert RoleBackend().get_all_permissions(_fresh(viewer), obj=object()) == set()


def test_one_query_instead_of_two_and_none_once_cached(make_user):
    user = _fresh(make_user("cy", "responder"))
    with CaptureQueriesContext(connection) as ours:
        assert RoleBackend().has_perm(user, "incidents.respond_incident")
        assert not RoleBackend().has_perm(user, "incidents.approve_action")
    again = _fresh(user)
    with CaptureQueriesContext(connection) as django:
        ModelBackend().get_all_permissions(again)
    assert (len(ours), len(django)) == (1, 2)


def test_the_pages_use_it(make_user, client):
    client.force_login(make_user("dee", "viewer"))
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/incidents/", secure=True).status_code == 200
    permission_reads = [q for q in ctx.captured_queries if "auth_permission" in q["sql"]]
    assert len(permission_reads) == 1

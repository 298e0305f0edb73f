"""Every role on every page and endpoint: anonymous, outsider, viewer, responder, approver."""

from __future__ import annotations

import pytest

from incidents.models import Incident
from tests.incidents.payloads import firing, group, post

pytestmark = pytest.mark.django_db
PERSONAS = ("anonymous", "outsider", "viewer", "responder", "approver")
LOGIN = "login"  # a redirect to the login page


@pytest.fixture
def incident(client, am_token) -> Incident:
    post(client, group(firing()), am_token)
    client.logout()
    return Incident.objects.get()


# (method, path template, expected status per persona in PERSONAS order)
MATRIX = [
    ("get", "/incidents/", (LOGIN, 403, 200, 200, 200)),
    ("get", "/incidents/{id}/", (LOGIN, 403, 200, 200, 200)),
    ("get", "/incidents/{id}/timeline", (LOGIN, 403, 200, 200, 200)),
    ("post", "/incidents/{id}/acknowledge", (LOGIN, 403, 403, 302, 302)),
    ("post", "/incidents/{id}/resolve", (LOGIN, 403, 403, 302, 302)),
    ("get", "/api/v1/incidents", (401, 403, 200, 200, 200)),
    ("get", "/api/v1/incidents/{id}", (401, 403, 200, 200, 200)),
    ("get", "/admin/", (LOGIN, LOGIN, LOGIN, LOGIN, LOGIN)),
]


@pytest.mark.parametrize(("method", "path", "expected"), MATRIX)
@pytest.mark.parametrize("persona", PERSONAS)
def test_access(client_as, incident, persona, method, path, expected):
    client = client_as(persona)
    url = path.format(id=incident.pk)
    response = getattr(client, method)(url)
    want = expected[PERSONAS.index(persona)]
    if want == LOGIN:
        assert response.status_code == 302
        assert "/login/" in response.url
    else:
        assert response.status_code == want, f"{persona} {method.upper()} {url}"
    if method == "post":
        incident.refresh_from_db()
        changed = incident.status != "open"
        assert changed == (want == 302), f"{persona} changed the incident: {changed}"


def test_pages_hide_other_actions_from_viewers_and_show_them_to_responders(client_as, incident):
    assert b"data-action=" not in client_as("viewer").get(f"/incidents/{incident.pk}/").content
    assert b"data-action=" in client_as("responder").get(f"/incidents/{incident.pk}/").content


def test_staff_reach_the_admin(client, incident, make_user):
    admin = make_user("root")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    assert client.get("/admin/incidents/integration/").status_code == 200


def test_an_unknown_incident_is_404_for_a_viewer_and_403_for_an_outsider(client_as, incident):
    assert client_as("viewer").get("/incidents/999999/").status_code == 404
    assert client_as("outsider").get("/incidents/999999/").status_code == 403


def test_the_webhook_refuses_user_api_keys(client, incident):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_token", "robot", role="approver", create=True, stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    for header in (f"Bearer {key}", f"Token {key}"):
        response = client.post(
            "/hooks/alertmanager",
            data="{}",
            content_type="application/json",
            headers={"Authorization": header},
        )
        assert response.status_code == 401

"""Every role on every page and endpoint: anonymous, outsider, viewer, responder, approver."""

from __future__ import annotations

import json

import pytest

from assistant.models import Analysis
from incidents.models import Incident
from tests.incidents.payloads import firing, group, post

pytestmark = pytest.mark.django_db
PERSONAS = ("anonymous", "outsider", "viewer", "responder", "approver")
LOGIN = "login"  # a redirect to the login page


@pytest.fixture
def incident(client, am_token) -> Incident:
    """An open incident with a ready analysis (a draft, summary v1) to review."""
    from assistant.review import record_revision

    post(client, group(firing()), am_token)
    client.logout()
    incident = Incident.objects.get()
    analysis = Analysis.objects.create(incident=incident, status=Analysis.Status.READY)
    record_revision(analysis, "Most likely kv-cache-saturation.", "rules")
    return incident


def _incident_changed(incident: Incident) -> bool:
    return incident.status != "open"


def _analysis_changed(incident: Incident) -> bool:
    analysis = incident.analyses.get()
    return analysis.review_status != "draft" or analysis.revisions.count() > 1


# What a POST changes when it is allowed (and must leave alone when it is not), by path prefix.
CHANGES = {"/incidents/{id}/analyses/": _analysis_changed, "/api/v1/analyses/": _analysis_changed}
# Form fields (pages) or JSON bodies (API) sent with a POST.
BODIES = {
    "/incidents/{id}/analyses/{aid}/reject": {"reason": "wrong node"},
    "/incidents/{id}/analyses/{aid}/summary": {"text": "Rewritten by a human."},
    "/api/v1/analyses/{aid}/reject": {"reason": "wrong node"},
    "/api/v1/analyses/{aid}/summary": {"text": "Rewritten by a human."},
}

# (method, path template, expected status per persona in PERSONAS order)
MATRIX = [
    ("get", "/incidents/", (LOGIN, 403, 200, 200, 200)),
    ("get", "/incidents/{id}/", (LOGIN, 403, 200, 200, 200)),
    ("get", "/incidents/{id}/timeline", (LOGIN, 403, 200, 200, 200)),
    ("post", "/incidents/{id}/acknowledge", (LOGIN, 403, 403, 302, 302)),
    ("post", "/incidents/{id}/resolve", (LOGIN, 403, 403, 302, 302)),
    ("get", "/api/v1/incidents", (401, 403, 200, 200, 200)),
    ("get", "/api/v1/incidents/{id}", (401, 403, 200, 200, 200)),
    # The review of the analysis (assistant/views.py, assistant/api.py)
    ("get", "/incidents/{id}/analyses/{aid}/versions", (LOGIN, 403, 200, 200, 200)),
    ("get", "/incidents/{id}/analyses/{aid}/summary", (LOGIN, 403, 403, 200, 200)),
    ("get", "/incidents/{id}/analyses/{aid}/reject", (LOGIN, 403, 403, 200, 200)),
    ("post", "/incidents/{id}/analyses/{aid}/approve", (LOGIN, 403, 403, 302, 302)),
    ("post", "/incidents/{id}/analyses/{aid}/reject", (LOGIN, 403, 403, 302, 302)),
    ("post", "/incidents/{id}/analyses/{aid}/summary", (LOGIN, 403, 403, 302, 302)),
    ("get", "/api/v1/analyses/{aid}/revisions", (401, 403, 200, 200, 200)),
    ("post", "/api/v1/analyses/{aid}/approve", (401, 403, 403, 200, 200)),
    ("post", "/api/v1/analyses/{aid}/reject", (401, 403, 403, 200, 200)),
    ("post", "/api/v1/analyses/{aid}/summary", (401, 403, 403, 200, 200)),
    ("get", "/admin/", (LOGIN, LOGIN, LOGIN, LOGIN, LOGIN)),
]


@pytest.mark.parametrize(("method", "path", "expected"), MATRIX)
@pytest.mark.parametrize("persona", PERSONAS)
def test_access(client_as, incident, persona, method, path, expected):
    client = client_as(persona)
    url = path.format(id=incident.pk, aid=incident.analyses.get().pk)
    body = BODIES.get(path, {})
    if method == "get":
        response = client.get(url)
    elif path.startswith("/api/"):
        response = client.post(url, data=json.dumps(body), content_type="application/json")
    else:
        response = client.post(url, body)
    want = expected[PERSONAS.index(persona)]
    if want == LOGIN:
        assert response.status_code == 302
        assert "/login/" in response.url
    else:
        assert response.status_code == want, f"{persona} {method.upper()} {url}"
    if method == "post":
        incident.refresh_from_db()
        check = next((f for p, f in CHANGES.items() if path.startswith(p)), _incident_changed)
        changed = check(incident)
        allowed = want in (200, 302)
        assert changed == allowed, f"{persona} {method.upper()} {url} changed something: {changed}"


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

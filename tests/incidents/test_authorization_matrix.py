"""Every role on every page and endpoint: anonymous, outsider, viewer, responder, approver."""

from __future__ import annotations

import json

import pytest

from assistant.models import ActionProposal, Analysis
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


# --- The action API (assistant/actions_api.py): one action per endpoint, in the state it needs ---

ACTION_BODIES = {
    "/api/v1/incidents/{id}/actions": {"action": "none", "params": {"steps": "Page the vendor."}},
    "/api/v1/actions/{xid}/reject": {"reason": "not now"},
    "/api/v1/actions/{xid}/cancel": {"reason": "fixed forward"},
    "/api/v1/actions/{xid}/params": {"params": {"steps": "Restart by hand."}},
}
# (method, path template, expected status per persona in PERSONAS order)
ACTION_API_MATRIX = [
    ("post", "/api/v1/incidents/{id}/actions", (401, 403, 403, 201, 201)),
    ("get", "/api/v1/actions/{xid}", (401, 403, 200, 200, 200)),
    ("post", "/api/v1/actions/{xid}/params", (401, 403, 403, 200, 200)),
    ("patch", "/api/v1/actions/{xid}/params", (401, 403, 403, 200, 200)),
    ("post", "/api/v1/actions/{xid}/preview", (401, 403, 403, 200, 200)),
    ("post", "/api/v1/actions/{xid}/approve", (401, 403, 403, 403, 200)),
    ("post", "/api/v1/actions/{xid}/reject", (401, 403, 403, 403, 200)),
    ("post", "/api/v1/actions/{xid}/cancel", (401, 403, 403, 403, 200)),
    pytest.param(
        "post",
        "/api/v1/actions/{xid}/expire-silence",
        (401, 403, 403, 200, 200),
        marks=pytest.mark.e2e,  # a real Alertmanager holds the silence
    ),
]


def _action_for(incident: Incident, path: str, request) -> ActionProposal:
    """The assistant's proposal each endpoint acts on (none needs a cluster but expire-silence)."""
    from datetime import timedelta

    from django.utils import timezone

    from assistant.actions import get

    analysis = incident.analyses.get()
    steps = {"steps": "Drain the queue, then restart chat-api."}
    fields = {"incident": incident, "analysis": analysis, "action": "none", "params": steps}
    if path.endswith(("/approve", "/cancel")):
        preview = get("none").preview(None, steps, None)
        fields.update(
            status="previewed" if path.endswith("/approve") else "approved",
            preview={
                "summary": preview.summary,
                "requests": [],
                "diff": "",
                "fingerprint": preview.fingerprint,
            },
            previewed_at=timezone.now(),
        )
    if path.endswith("/expire-silence"):
        server = request.getfixturevalue("matrix_alertmanager")
        incident.cluster.alertmanager_url = server.url
        incident.cluster.save()
        silence = server.http.post(
            f"{server.url}/api/v2/silences",
            json={
                "matchers": [{"name": "alertname", "value": "KVCacheHigh", "isRegex": False}],
                "startsAt": timezone.now().isoformat(),
                "endsAt": (timezone.now() + timedelta(hours=1)).isoformat(),
                "createdBy": "vigil:approver",
                "comment": "matrix",
            },
            timeout=5,
        ).json()
        fields.update(
            action="silence-alert",
            params={"comment": "matrix"},
            status="succeeded",
            outcome={"ok": True, "result": {"silence_id": silence["silenceID"]}},
        )
    return ActionProposal.objects.create(**fields)


@pytest.fixture
def matrix_alertmanager(tmp_path):
    from tests.e2e.alertmanager_server import running_alertmanager

    with running_alertmanager(tmp_path, "http://127.0.0.1:9/hooks/alertmanager", "x") as server:
        yield server


def _actions_state(incident: Incident) -> list:
    from assistant.models import ActionEvent

    rows = ActionProposal.objects.filter(incident=incident).order_by("pk")
    return [
        list(rows.values_list("pk", "status", "params", "preview", "outcome")),
        ActionEvent.objects.filter(incident=incident).count(),
    ]


@pytest.mark.parametrize(("method", "path", "expected"), ACTION_API_MATRIX)
@pytest.mark.parametrize("persona", PERSONAS)
def test_action_api_access(client_as, incident, request, persona, method, path, expected):
    action = _action_for(incident, path, request)
    client = client_as(persona)
    url = path.format(id=incident.pk, xid=action.pk)
    before = _actions_state(incident)
    if method == "get":
        response = client.get(url)
    else:
        body = ACTION_BODIES.get(path, {})
        response = getattr(client, method)(
            url, data=json.dumps(body), content_type="application/json"
        )
    want = expected[PERSONAS.index(persona)]
    assert response.status_code == want, f"{persona} {method.upper()} {url}: {response.content}"
    if method != "get":
        changed = _actions_state(incident) != before
        allowed = want in (200, 201)
        assert changed == allowed, f"{persona} {method.upper()} {url} changed something: {changed}"


# --- The action pages (assistant/action_views.py): the same actions through the incident page ---

ACTION_PAGE_BODIES = {
    "/incidents/{id}/actions/new": {"action": "none", "params": '{"steps": "Page the vendor."}'},
    "/incidents/{id}/actions/{xid}/params": {"params": '{"steps": "Restart by hand."}'},
    "/incidents/{id}/actions/{xid}/reject": {"reason": "not now"},
    "/incidents/{id}/actions/{xid}/cancel": {"reason": "fixed forward"},
}
# (method, path template, expected status per persona in PERSONAS order); a plain form post that
# succeeds is redirected to the card (302), and a refused step keeps its status (403, 409).
ACTION_PAGE_MATRIX = [
    ("get", "/incidents/{id}/actions/{xid}", (LOGIN, 403, 200, 200, 200)),
    ("get", "/incidents/{id}/actions/new", (LOGIN, 403, 403, 200, 200)),
    ("get", "/incidents/{id}/actions/{xid}/params", (LOGIN, 403, 403, 200, 200)),
    ("get", "/incidents/{id}/actions/{xid}/reject", (LOGIN, 403, 403, 403, 200)),
    ("get", "/incidents/{id}/actions/{xid}/cancel", (LOGIN, 403, 403, 403, 200)),
    ("get", "/incidents/{id}/audit", (LOGIN, 403, 200, 200, 200)),
    ("get", "/audit/", (LOGIN, 403, 200, 200, 200)),
    ("post", "/incidents/{id}/actions/new", (LOGIN, 403, 403, 302, 302)),
    ("post", "/incidents/{id}/actions/{xid}/params", (LOGIN, 403, 403, 302, 302)),
    ("post", "/incidents/{id}/actions/{xid}/preview", (LOGIN, 403, 403, 302, 302)),
    ("post", "/incidents/{id}/actions/{xid}/approve", (LOGIN, 403, 403, 403, 302)),
    ("post", "/incidents/{id}/actions/{xid}/reject", (LOGIN, 403, 403, 403, 302)),
    ("post", "/incidents/{id}/actions/{xid}/cancel", (LOGIN, 403, 403, 403, 302)),
    pytest.param(
        "post",
        "/incidents/{id}/actions/{xid}/expire-silence",
        (LOGIN, 403, 403, 302, 302),
        marks=pytest.mark.e2e,  # a real Alertmanager holds the silence
    ),
]


@pytest.mark.parametrize(("method", "path", "expected"), ACTION_PAGE_MATRIX)
@pytest.mark.parametrize("persona", PERSONAS)
def test_action_page_access(client_as, incident, request, persona, method, path, expected):
    action = _action_for(incident, path, request)
    client = client_as(persona)
    url = path.format(id=incident.pk, xid=action.pk)
    before = _actions_state(incident)
    if method == "get":
        response = client.get(url)
    else:
        response = client.post(url, ACTION_PAGE_BODIES.get(path, {}))
    want = expected[PERSONAS.index(persona)]
    if want == LOGIN:
        assert response.status_code == 302
        assert "/login/" in response.url
    else:
        assert response.status_code == want, f"{persona} {method.upper()} {url}"
    if method == "post":
        changed = _actions_state(incident) != before
        allowed = want == 302
        assert changed == allowed, f"{persona} {method.upper()} {url} changed something: {changed}"


def test_action_cards_show_buttons_only_to_those_allowed(client_as, incident):
    action = _action_for(incident, "/incidents/{id}/actions/{xid}/approve", None)
    page = f"/incidents/{incident.pk}/"
    viewer = client_as("viewer").get(page).content.decode()
    assert f'id="action-{action.pk}"' in viewer and "data-action=" not in viewer
    responder = client_as("responder").get(page).content.decode()
    assert 'data-action="preview-action"' in responder
    assert 'data-action="approve-action"' not in responder
    approver = client_as("approver").get(page).content.decode()
    assert 'data-action="approve-action"' in approver


@pytest.mark.parametrize("persona", PERSONAS)
def test_slack_events_trust_the_signature_never_the_session(client_as, incident, persona, settings):
    """`POST /slack/events` is Slack's: no role gets in without Slack's signature."""
    settings.VIGIL_SLACK_SIGNING_SECRET = "matrix-signing-secret"
    response = client_as(persona).post(
        "/slack/events",
        data=json.dumps({"type": "url_verification", "challenge": "c"}),
        content_type="application/json",
    )
    assert response.status_code == 401

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


# --- Every other route: machine endpoints, public endpoints, login, logout, the incident buttons ---

HOME = "home"  # a redirect to the incident list, whoever asks


def _incident_timeline_has(kind: str):
    def check(incident: Incident) -> bool:
        return incident.timeline.filter(kind=kind).exists()

    return check


def _reanalysed(incident: Incident) -> bool:
    return incident.analyses.count() > 1


def _machine_state(incident: Incident) -> tuple:
    from collectors.models import DeployEvent, GpuSnapshot
    from incidents.models import WebhookDelivery

    return (
        WebhookDelivery.objects.count(),
        DeployEvent.objects.count(),
        GpuSnapshot.objects.count(),
    )


# (method, path template, expected per persona, what a permitted request changes or None)
OTHER_MATRIX = [
    ("get", "/", (HOME,) * 5, None),
    # public by design: load balancers (no data), the published OpenAPI document, the login page
    ("get", "/healthz", (200,) * 5, None),
    ("get", "/api/v1/schema", (200,) * 5, None),
    ("get", "/api/v1/", (404,) * 5, None),
    ("get", "/accounts/login/", (200,) * 5, None),
    ("post", "/accounts/logout/", (LOGIN,) * 5, None),
    # machine endpoints: a session is nobody there, whatever its role
    ("post", "/hooks/alertmanager", (401,) * 5, _machine_state),
    ("post", "/hooks/alertmanager/", (401,) * 5, _machine_state),
    ("post", "/api/v1/deploys", (401,) * 5, _machine_state),
    ("post", "/api/v1/gpu-snapshots", (401,) * 5, _machine_state),
    ("post", "/slack/events", (401,) * 5, _machine_state),
    # the incident page's other buttons
    (
        "post",
        "/incidents/{id}/refresh-evidence",
        (LOGIN, 403, 403, 302, 302),
        _incident_timeline_has("collection_requested"),
    ),
    ("post", "/incidents/{id}/reanalyse", (LOGIN, 403, 403, 302, 302), _reanalysed),
    ("post", "/incidents/{id}/mitigate", (LOGIN, 403, 403, 302, 302), _incident_changed),
]


def _assert_status(response, want, label: str) -> None:
    if want == LOGIN:
        assert response.status_code == 302, f"{label}: {response.status_code}"
        assert "/login/" in response.url, f"{label}: {response.url}"
    elif want == HOME:
        assert response.status_code == 302, f"{label}: {response.status_code}"
        assert response.url == "/incidents/", f"{label}: {response.url}"
    else:
        assert response.status_code == want, f"{label}: {response.status_code}"


@pytest.mark.parametrize(("method", "path", "expected", "changes"), OTHER_MATRIX)
@pytest.mark.parametrize("persona", PERSONAS)
def test_other_routes(client_as, incident, settings, persona, method, path, expected, changes):
    settings.VIGIL_SLACK_SIGNING_SECRET = "matrix-signing-secret"
    client = client_as(persona)
    url = path.format(id=incident.pk)
    before = changes(incident) if changes else None
    if method == "get":
        response = client.get(url)
    elif path.startswith(("/api/", "/hooks/", "/slack/")):
        response = client.post(url, data="{}", content_type="application/json")
    else:
        response = client.post(url)
    want = expected[PERSONAS.index(persona)]
    _assert_status(response, want, f"{persona} {method.upper()} {url}")
    if changes is not None:
        incident.refresh_from_db()
        after = changes(incident)
        if changes is _machine_state:
            assert after == before, f"{persona} {method.upper()} {url} stored something"
        else:
            allowed = want in (200, 201, 302)
            assert after == allowed, f"{persona} {method.upper()} {url} changed: {after}"


# --- Every route is in a matrix -------------------------------------------------------------------


def _all_routes() -> list[str]:
    """Every URL pattern of the project, as Django names its route (`incidents/<int:…>/`)."""
    from django.urls import URLResolver, get_resolver

    def join(prefix: str, part: str) -> str:  # as ResolverMatch.route joins them
        return prefix + (part[1:] if prefix and part.startswith("^") else part)

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, join(prefix, str(pattern.pattern)))
            else:
                yield join(prefix, str(pattern.pattern))

    return list(dict.fromkeys(walk(get_resolver().url_patterns)))


def _entries():
    """(method, path template) of every matrix above, e2e-marked ones included."""
    for table in (MATRIX, ACTION_API_MATRIX, ACTION_PAGE_MATRIX, OTHER_MATRIX):
        for row in table:
            values = row.values if hasattr(row, "values") else row
            yield values[0], values[1]


def _route_of(path: str) -> str:
    from django.urls import resolve

    concrete = path.format(id=1, aid=1, xid=1)
    return resolve(concrete.split("?")[0]).route


def test_every_url_pattern_is_in_the_matrix():
    """A new route fails here until its row (expected status per persona) is added above.

    Admin routes are covered by test_every_admin_route_needs_staff, which walks them itself.
    """
    covered = {_route_of(path) for _, path in _entries()}
    routes = [r for r in _all_routes() if not r.startswith("admin/")]
    missing = [r for r in routes if r not in covered]
    assert not missing, f"routes with no row in the authorization matrix: {missing}"


def test_every_api_operation_is_in_the_matrix():
    """Method by method: the OpenAPI document's operations against the matrix's API rows."""
    import re

    from vigil.api import api

    operations = {
        (method.upper(), path)
        for path, methods in api.get_openapi_schema()["paths"].items()
        for method in methods
    }
    covered = {
        (method.upper(), "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", _route_of(path)))
        for method, path in _entries()
        if path.startswith("/api/")
    }
    assert operations - covered == set(), "API operations with no row in the matrix"


# --- The admin: staff only, every one of its routes ---------------------------------------------


def _admin_urls() -> list[tuple[str, str]]:
    """(route, a concrete URL that resolves to it) for every admin route."""
    import re

    from django.urls import resolve

    urls = []
    for route in _all_routes():
        if not route.startswith("admin/"):
            continue
        if "(?P<app_label>" in route:  # an app's index, a regular expression of app labels
            url = "/admin/incidents/"
        elif "(?P<url>" in route:  # the catch-all
            url = "/admin/nowhere/"
        else:
            url = "/" + re.sub(r"<(?:\w+:)?\w+>", "1", route)
        assert resolve(url).route == route, (route, url)
        urls.append((route, url))
    return urls


ADMIN_URLS = _admin_urls()


@pytest.mark.parametrize(("route", "url"), ADMIN_URLS, ids=[r for r, _ in ADMIN_URLS])
def test_every_admin_route_needs_staff(client_as, incident, route, url):
    """Every persona of Vigil (none is staff) is sent to the admin's login, GET or POST."""
    for persona in PERSONAS:
        client = client_as(persona)
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            label = f"{persona} {method.upper()} {url}"
            if route == "admin/login/":
                assert response.status_code in (200, 302), label  # the form; a login attempt
                continue
            if route == "admin/logout/":
                assert response.status_code in (302, 405), label  # POST logs out, GET refused
                continue
            assert response.status_code == 302, f"{label}: {response.status_code}"
            assert response.url.startswith("/admin/login/"), f"{label}: {response.url}"
    assert Incident.objects.count() == 1


# --- Tokens: user keys by role, and integration tokens on user endpoints -------------------------


def _user_key(username: str) -> str:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_token", username, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


API_ROWS = [
    row
    for row in MATRIX + [r.values if hasattr(r, "values") else r for r in ACTION_API_MATRIX]
    if row[1].startswith("/api/") and "expire-silence" not in row[1]
]


@pytest.mark.parametrize(("method", "path", "expected"), API_ROWS)
@pytest.mark.parametrize("persona", PERSONAS[1:])
def test_api_keys_carry_their_users_role(
    client, personas, incident, request, persona, method, path, expected
):
    """`Authorization: Token <key>` gets exactly what the same user's session gets."""
    key = _user_key(personas[persona].username)
    action = _action_for(incident, path, request)
    url = path.format(id=incident.pk, aid=incident.analyses.get().pk, xid=action.pk)
    headers = {"Authorization": f"Token {key}"}
    body = ACTION_BODIES.get(path) or BODIES.get(path) or {}
    if method == "get":
        response = client.get(url, headers=headers)
    else:
        response = getattr(client, method)(
            url, data=json.dumps(body), content_type="application/json", headers=headers
        )
    want = expected[PERSONAS.index(persona)]
    assert response.status_code == want, f"{persona} key {method.upper()} {url}"


USER_ROWS = [
    (method, path)
    for method, path in _entries()
    if not path.startswith(("/hooks/", "/slack/", "/api/v1/deploys", "/api/v1/gpu-snapshots"))
    and path not in ("/", "/healthz", "/api/v1/schema", "/api/v1/", "/accounts/login/")
    and path != "/accounts/logout/"
    and "expire-silence" not in path
]


@pytest.mark.parametrize(("method", "path"), USER_ROWS)
def test_integration_tokens_open_no_user_endpoint(
    client, integration_token, incident, request, method, path
):
    """Alertmanager, deploy and agent tokens, as Bearer or as Token: 401 on the API, the login
    page on pages, and nothing changes."""
    tokens = [integration_token(f"m-{kind}", kind=kind)[1] for kind in ("deploy", "agent")]
    tokens.append(integration_token("m-am", kind="alertmanager")[1])
    action = _action_for(incident, path, request)
    url = path.format(id=incident.pk, aid=incident.analyses.get().pk, xid=action.pk)
    before = (_actions_state(incident), incident.status, _analysis_changed(incident))
    for token in tokens:
        for scheme in ("Bearer", "Token"):
            headers = {"Authorization": f"{scheme} {token}"}
            if method == "get":
                response = client.get(url, headers=headers)
            else:
                response = getattr(client, method)(
                    url, data="{}", content_type="application/json", headers=headers
                )
            label = f"{scheme} integration token {method.upper()} {url}"
            if path.startswith("/api/"):
                assert response.status_code == 401, f"{label}: {response.status_code}"
            else:
                _assert_status(response, LOGIN, label)
    incident.refresh_from_db()
    assert (_actions_state(incident), incident.status, _analysis_changed(incident)) == before


MACHINE_ENDPOINTS = [
    ("/hooks/alertmanager", "alertmanager"),
    ("/api/v1/deploys", "deploy"),
    ("/api/v1/gpu-snapshots", "agent"),
]


@pytest.mark.parametrize(("path", "kind"), MACHINE_ENDPOINTS)
def test_machine_endpoints_take_their_own_kind_of_token_only(
    client, integration_token, personas, path, kind
):
    key = _user_key(personas["approver"].username)
    others = [
        integration_token(f"x-{other}", kind=other)[1]
        for _, other in MACHINE_ENDPOINTS
        if other != kind
    ]
    for credential in [key, *others, "vgi_" + "x" * 43, ""]:
        for scheme in ("Bearer", "Token"):
            response = client.post(
                path,
                data="{}",
                content_type="application/json",
                headers={"Authorization": f"{scheme} {credential}"},
            )
            assert response.status_code == 401, f"{scheme} {credential[:8]}… on {path}"


# --- No route changes state on a GET (which CSRF does not cover) ---------------------------------


POST_ONLY = sorted(
    {path for method, path in _entries() if method == "post"}
    - {path for method, path in _entries() if method == "get"}
)


@pytest.mark.parametrize("path", POST_ONLY)
def test_state_changing_routes_refuse_get(client_as, incident, request, path):
    action = _action_for(incident, path, request) if "{xid}" in path else None
    url = path.format(id=incident.pk, aid=incident.analyses.get().pk, xid=action and action.pk)
    before = (_actions_state(incident), incident.status, _analysis_changed(incident))
    response = client_as("approver").get(url)
    assert response.status_code == 405, f"GET {url}: {response.status_code}"
    incident.refresh_from_db()
    assert (_actions_state(incident), incident.status, _analysis_changed(incident)) == before

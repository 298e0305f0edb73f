"""CSRF on every state-changing form and on the API's session auth.

Each POST route of the authorization matrix (pages, login, logout, the review and action forms,
every admin route) is posted by the most privileged user with a session but no CSRF token: 403,
and nothing changes. The same with the token gets through (so the 403 is CSRF's, not a role's).
API calls with a session need the token too; API calls with a user key do not (no cookie is
involved). The templates' forms all carry `{% csrf_token %}`, and htmx sends the token as a
header from <body hx-headers>.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.test import Client

from incidents.models import Incident
from tests.incidents.payloads import firing, group, post
from tests.incidents.test_authorization_matrix import (
    ACTION_BODIES,
    ACTION_PAGE_BODIES,
    ADMIN_URLS,
    BODIES,
    _action_for,
    _actions_state,
    _analysis_changed,
    _entries,
)
from tests.security.conftest import tally

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def incident(client, am_token) -> Incident:
    """The authorization matrix's incident: open, with a ready analysis (a draft) to review."""
    from assistant.models import Analysis
    from assistant.review import record_revision

    post(client, group(firing()), am_token)
    client.logout()
    incident = Incident.objects.get()
    analysis = Analysis.objects.create(incident=incident, status=Analysis.Status.READY)
    record_revision(analysis, "Most likely kv-cache-saturation.", "rules")
    return incident


PAGE_POSTS = sorted(
    {
        path
        for method, path in _entries()
        if method == "post"
        and not path.startswith(("/api/", "/hooks/", "/slack/"))
        and "expire-silence" not in path  # needs a real Alertmanager (e2e); same view wrapper
    }
)
API_POSTS = sorted(
    {
        (method, path)
        for method, path in _entries()
        if method in ("post", "patch")
        and path.startswith("/api/")
        and not path.startswith(("/api/v1/deploys", "/api/v1/gpu-snapshots"))
        and "expire-silence" not in path
    }
)


def _state(incident: Incident) -> tuple:
    incident.refresh_from_db()
    return (
        _actions_state(incident),
        incident.status,
        _analysis_changed(incident),
        incident.analyses.count(),
        incident.timeline.count(),
    )


def _url(path: str, incident: Incident, request) -> str:
    action = _action_for(incident, path, request) if "{xid}" in path else None
    return path.format(id=incident.pk, aid=incident.analyses.get().pk, xid=action and action.pk)


def _csrf_client(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _token(client: Client) -> str:
    """The CSRF token a browser would hold after loading a page."""
    client.get("/accounts/login/")
    return client.cookies["csrftoken"].value


@pytest.mark.parametrize("path", PAGE_POSTS)
def test_a_form_post_without_the_token_is_refused(personas, incident, request, path):
    tally("CSRF: state-changing routes posted without the token")
    client = _csrf_client(personas["approver"])
    url = _url(path, incident, request)
    before = _state(incident)
    body = ACTION_PAGE_BODIES.get(path) or BODIES.get(path) or {}
    response = client.post(url, body)
    assert response.status_code == 403, f"POST {url} without a CSRF token: {response.status_code}"
    assert _state(incident) == before


@pytest.mark.parametrize("path", PAGE_POSTS)
def test_the_same_form_post_with_the_token_is_not_refused_by_csrf(
    personas, incident, request, path
):
    client = _csrf_client(personas["approver"])
    url = _url(path, incident, request)
    body = dict(ACTION_PAGE_BODIES.get(path) or BODIES.get(path) or {})
    response = client.post(url, body, headers={"X-CSRFToken": _token(client)})
    assert response.status_code != 403 or b"CSRF" not in response.content, url


def test_login_itself_needs_the_token(personas):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/accounts/login/", {"username": "approver", "password": "correct-horse-battery-staple"}
    )
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(("method", "path"), API_POSTS)
def test_the_api_with_a_session_needs_the_token(personas, incident, request, method, path):
    tally("CSRF: API operations with a session and no token")
    client = _csrf_client(personas["approver"])
    url = _url(path, incident, request)
    before = _state(incident)
    body = json.dumps(ACTION_BODIES.get(path) or BODIES.get(path) or {})
    response = getattr(client, method)(url, data=body, content_type="application/json")
    assert response.status_code == 403, f"{method.upper()} {url}: {response.status_code}"
    assert _state(incident) == before
    # with the token, the session is enough
    response = getattr(client, method)(
        url, data=body, content_type="application/json", headers={"X-CSRFToken": _token(client)}
    )
    assert response.status_code != 403 or b"CSRF" not in response.content


def test_the_api_with_a_user_key_needs_no_csrf_token(personas, incident):
    """A key is not ambient authority: no cookie, so no CSRF (and no session is needed)."""
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_token", "approver", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        f"/api/v1/incidents/{incident.pk}/actions",
        data=json.dumps({"action": "none", "params": {"steps": "Page the vendor."}}),
        content_type="application/json",
        headers={"Authorization": f"Token {key}"},
    )
    assert response.status_code == 201, response.content


ADMIN_POSTS = [(r, u) for r, u in ADMIN_URLS if r != "admin/logout/"]


@pytest.mark.parametrize(("route", "url"), ADMIN_POSTS, ids=[r for r, _ in ADMIN_POSTS])
def test_every_admin_post_needs_the_token(make_user, incident, route, url):
    tally("CSRF: admin routes posted by a superuser without the token")
    admin = make_user("root")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client = _csrf_client(admin)
    before = _state(incident)
    response = client.post(url, {"name": "x", "post": "yes"})
    assert response.status_code == 403, f"POST {url}: {response.status_code}"
    assert _state(incident) == before
    assert Incident.objects.count() == 1


FORM = re.compile(r"<form\b[^>]*>", re.IGNORECASE)


def _templates() -> list[Path]:
    return sorted((ROOT / "templates").rglob("*.html"))


@pytest.mark.parametrize("template", _templates(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_post_form_in_the_templates_carries_the_token(template):
    text = template.read_text()
    for match in FORM.finditer(text):
        tag = match.group(0)
        if not re.search(r"method=[\"']?post", tag, re.IGNORECASE):
            continue
        end = text.find("</form>", match.end())
        body = text[match.end() : end if end != -1 else None]
        assert "{% csrf_token %}" in body, f"{template.name}: {tag}"


def test_htmx_requests_send_the_token_from_the_page():
    base = (ROOT / "templates" / "base.html").read_text()
    assert """hx-headers='{"X-CSRFToken": "{{ csrf_token }}"}'""" in base
    for template in _templates():
        text = template.read_text()
        if re.search(r"hx-(post|put|patch|delete)=", text):
            # a page with htmx posts extends base (whose body carries the header), or is a
            # partial swapped into such a page
            assert "{% extends" not in text or '{% extends "base.html" %}' in text, template

"""The review over the JSON API: the same steps and permissions as the page, DESIGN's shapes."""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from assistant import review
from assistant.models import Analysis
from incidents.models import TimelineEvent
from tests.assistant.review_support import make_analysis, make_incident

pytestmark = pytest.mark.django_db


@pytest.fixture
def incident(client, am_token):
    return make_incident(client, am_token)


@pytest.fixture
def analysis(incident):
    return make_analysis(incident)


def api_key(username: str, role: str | None) -> str:
    out = StringIO()
    call_command("create_api_token", username, role=role, create=True, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def call(client, method: str, path: str, key: str | None = None, body: dict | None = None):
    headers = {"Authorization": f"Token {key}"} if key else {}
    if method == "get":
        return client.get(path, headers=headers)
    return client.post(
        path,
        data=json.dumps(body) if body is not None else "",
        content_type="application/json",
        headers=headers,
    )


def test_the_incident_api_carries_review_revision_and_llm(client, incident, analysis, personas):
    Analysis.objects.filter(pk=analysis.pk).update(
        source="llm",
        llm_status="ok",
        model="openai:gpt-4o-mini",
        prompt_tokens=3300,
        input_tokens=3412,
        output_tokens=388,
        latency_ms=2140,
        cost_usd=Decimal("0.000745"),
        llm_dropped=["an action outside the catalogue"],
    )
    review.record_revision(analysis, "The narrative.", "llm")
    review.approve(analysis, personas["approver"])
    body = call(client, "get", f"/api/v1/incidents/{incident.pk}", api_key("v", "viewer")).json()
    got = body["analysis"]
    assert {"id", "status", "source", "summary", "hypotheses", "actions"} <= set(got)
    assert (got["source"], got["summary"], got["revision"]) == ("llm", "The narrative.", 2)
    assert got["model"] == "openai:gpt-4o-mini"
    assert got["review"]["status"] == "approved" and got["review"]["by"] == "approver"
    assert got["review"]["at"].endswith("Z") and got["review"]["reason"] is None
    assert got["llm"] == {
        "status": "ok",
        "error": None,
        "dropped": ["an action outside the catalogue"],
        "prompt_tokens": 3300,
        "input_tokens": 3412,
        "output_tokens": 388,
        "latency_ms": 2140,
        "cost_usd": 0.000745,
    }


def test_a_rule_based_draft_says_so_in_the_api(client, incident, analysis):
    got = call(client, "get", f"/api/v1/incidents/{incident.pk}", api_key("v", "viewer")).json()
    got = got["analysis"]
    assert got["review"] == {"status": "draft", "by": None, "at": None, "reason": None}
    assert (got["revision"], got["model"], got["llm"]["status"]) == (1, None, "off")


def test_approve_reject_and_edit_with_a_user_token(client, incident, analysis):
    key = api_key("robot", "responder")
    base = f"/api/v1/analyses/{analysis.pk}"

    edited = call(
        client, "post", f"{base}/summary", key, {"text": "Edited **by** robot.", "revision": 1}
    )
    assert edited.status_code == 200, edited.content
    assert edited.json()["summary"] == "Edited **by** robot." and edited.json()["revision"] == 2

    approved = call(client, "post", f"{base}/approve", key, {"revision": 2})
    assert approved.status_code == 200
    assert approved.json()["review"]["status"] == "approved"
    assert approved.json()["review"]["by"] == "robot"

    rejected = call(client, "post", f"{base}/reject", key, {"reason": "wrong node"})
    assert rejected.status_code == 200
    assert rejected.json()["review"] | {"at": None} == {
        "status": "rejected",
        "by": "robot",
        "at": None,
        "reason": "wrong node",
    }
    actors = list(
        incident.timeline.filter(
            kind__in=["analysis_edited", "analysis_approved", "analysis_rejected"]
        )
        .order_by("id")
        .values_list("kind", "actor")
    )
    assert actors == [
        ("analysis_edited", "robot"),
        ("analysis_approved", "robot"),
        ("analysis_rejected", "robot"),
    ]


def test_approve_takes_no_body_too(client, analysis):
    response = call(
        client, "post", f"/api/v1/analyses/{analysis.pk}/approve", api_key("r", "responder")
    )
    assert response.status_code == 200 and response.json()["review"]["status"] == "approved"


def test_the_revisions_list_every_version_with_its_changes(client, analysis, personas):
    review.edit_summary(analysis, personas["responder"], "New first line.\nSecond.")
    body = call(
        client, "get", f"/api/v1/analyses/{analysis.pk}/revisions", api_key("v", "viewer")
    ).json()
    assert body["analysis"] == analysis.pk and body["current"] == 2
    first, second = body["revisions"]
    assert (first["number"], first["source"], first["author"]) == (1, "rules", None)
    assert (second["number"], second["source"], second["author"]) == (2, "edit", "responder")
    assert (second["added"], second["removed"]) == (2, 1)
    assert second["text"] == "New first line.\nSecond." and second["created_at"].endswith("Z")


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("reject", {"reason": "   "}, "reason is required"),
        ("reject", None, "reason is required"),
        ("summary", {"text": ""}, "cannot be blank"),
        ("summary", {}, "cannot be blank"),
    ],
)
def test_blank_input_is_400(client, analysis, path, body, message):
    response = call(
        client, "post", f"/api/v1/analyses/{analysis.pk}/{path}", api_key("r", "responder"), body
    )
    assert response.status_code == 400 and message in response.json()["detail"]


def test_a_pending_analysis_is_409_and_an_unknown_one_404(client, incident):
    key = api_key("r", "responder")
    pending = Analysis.objects.create(incident=incident, status="pending")
    response = call(client, "post", f"/api/v1/analyses/{pending.pk}/approve", key)
    assert response.status_code == 409 and "pending" in response.json()["detail"]
    assert call(client, "post", "/api/v1/analyses/999999/approve", key).status_code == 404
    assert call(client, "get", "/api/v1/analyses/999999/revisions", key).status_code == 404


def test_a_stale_revision_is_409(client, analysis, personas):
    review.edit_summary(analysis, personas["approver"], "Newer.")
    response = call(
        client,
        "post",
        f"/api/v1/analyses/{analysis.pk}/approve",
        api_key("r", "responder"),
        {"revision": 1},
    )
    assert response.status_code == 409 and "now v2" in response.json()["detail"]


PERSONAS = ("anonymous", "outsider", "viewer", "responder", "approver")
ENDPOINTS = [
    ("post", "approve", {}, (401, 403, 403, 200, 200)),
    ("post", "reject", {"reason": "wrong node"}, (401, 403, 403, 200, 200)),
    ("post", "summary", {"text": "Rewritten."}, (401, 403, 403, 200, 200)),
    ("get", "revisions", None, (401, 403, 200, 200, 200)),
]


@pytest.mark.parametrize(("method", "step", "body", "expected"), ENDPOINTS)
@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("auth", ["session", "token"])
def test_every_role_on_every_endpoint(
    client, personas, analysis, auth, persona, method, step, body, expected
):
    key = None
    if persona != "anonymous":
        if auth == "session":
            client.force_login(personas[persona])
        else:
            role = None if persona == "outsider" else persona
            key = api_key(f"{persona}-bot", role)
    response = call(client, method, f"/api/v1/analyses/{analysis.pk}/{step}", key, body)
    want = expected[PERSONAS.index(persona)]
    assert response.status_code == want, (persona, auth, step, response.content)
    changed = Analysis.objects.get(pk=analysis.pk).review_status != "draft" or (
        analysis.revisions.count() > 1
    )
    assert changed == (method == "post" and want == 200)


def test_integration_tokens_do_not_work_on_the_review_endpoints(
    client, analysis, integration_token
):
    _, token = integration_token("am-1", "alertmanager")
    for header in (f"Bearer {token}", f"Token {token}"):
        response = client.post(
            f"/api/v1/analyses/{analysis.pk}/approve",
            data="{}",
            content_type="application/json",
            headers={"Authorization": header},
        )
        assert response.status_code == 401
    assert Analysis.objects.get(pk=analysis.pk).review_status == "draft"
    assert not TimelineEvent.objects.filter(kind="analysis_approved").exists()


def test_a_session_post_needs_the_csrf_token(analysis, personas):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(personas["responder"])
    response = browser.post(
        f"/api/v1/analyses/{analysis.pk}/approve", data="{}", content_type="application/json"
    )
    assert response.status_code == 403
    assert Analysis.objects.get(pk=analysis.pk).review_status == "draft"

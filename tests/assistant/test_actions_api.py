"""The action endpoints of the JSON API: DESIGN's transitions, permissions and status codes."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from assistant.models import ActionProposal, Analysis
from tests.assistant.actions_support import IMAGE_11, NS, open_world
from tests.assistant.test_remediation import assistant_proposal, make_incident

pytestmark = pytest.mark.django_db

CHAT = {"kind": "Deployment", "namespace": NS, "name": "chat-api"}


@pytest.fixture
def world():
    with open_world() as opened:
        yield opened


@pytest.fixture
def incident(world, settings):
    settings.VIGIL_FOUR_EYES = True
    return make_incident(world)


@pytest.fixture
def keys(db):
    """API keys of a viewer, a responder and two approvers (made by the real command)."""

    def key(username: str, role: str) -> str:
        out = StringIO()
        call_command("create_api_token", username, role=role, create=True, stdout=out)
        return out.getvalue().strip().splitlines()[-1]

    return {
        "viewer": key("vic", "viewer"),
        "responder": key("rita", "responder"),
        "approver": key("alice", "approver"),
        "approver2": key("bob", "approver"),
    }


def call(client, method: str, path: str, key: str | None = None, body=None):
    headers = {"Authorization": f"Token {key}"} if key else {}
    if method == "get":
        return client.get(path, headers=headers)
    return getattr(client, method)(
        path,
        data=json.dumps(body) if body is not None else "",
        content_type="application/json",
        headers=headers,
    )


def test_an_engineer_adds_previews_and_another_approves_a_rollback(
    client, incident, keys, world, django_capture_on_commit_callbacks
):
    Analysis.objects.create(incident=incident, status=Analysis.Status.READY)
    added = call(
        client,
        "post",
        f"/api/v1/incidents/{incident.pk}/actions",
        keys["approver"],
        {
            "action": "rollout-undo",
            "target": CHAT,
            "params": {"to_revision": 11},
            "rationale": "v2.4.0",
        },
    )
    assert added.status_code == 201, added.content
    action = added.json()
    assert {"id", "action", "target", "params", "status", "rationale"} <= set(action)
    assert (action["action"], action["target"], action["params"]) == (
        "rollout-undo",
        CHAT,
        {"to_revision": 11},
    )
    assert (action["status"], action["proposed_by"], action["preview"]) == (
        "proposed",
        "alice",
        None,
    )
    assert action["incident"] == incident.pk
    url = f"/api/v1/actions/{action['id']}"

    previewed = call(client, "post", f"{url}/preview", keys["responder"])
    assert previewed.status_code == 200
    body = previewed.json()
    assert body["status"] == "previewed" and body["preview_error"] is None
    assert body["preview"]["by"] == "rita" and body["preview"]["at"].endswith("Z")
    assert f"+        image: {IMAGE_11}" in body["preview"]["diff"].splitlines()
    assert [(r["method"], r["query"]) for r in body["preview"]["requests"]] == [
        ("PATCH", {"fieldManager": "vigil"})
    ]

    # four eyes: alice added it
    refused = call(client, "post", f"{url}/approve", keys["approver"])
    assert refused.status_code == 403
    assert "Four eyes" in refused.json()["detail"]
    assert call(client, "post", f"{url}/approve", keys["responder"]).status_code == 403

    with django_capture_on_commit_callbacks() as callbacks:
        approved = call(client, "post", f"{url}/approve", keys["approver2"])
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert approved.json()["decided"]["by"] == "bob"
    assert len(callbacks) == 1
    assert all(w.dry_run for w in world.writes())

    again = call(client, "post", f"{url}/approve", keys["approver2"])
    assert again.status_code == 409

    got = call(client, "get", url, keys["viewer"])
    assert got.status_code == 200
    assert [(e["kind"], e["actor"]) for e in got.json()["events"]] == [
        ("added", "alice"),
        ("previewed", "rita"),
        ("approved", "bob"),
    ]
    assert got.json()["allowed"] == {
        "edit": False,
        "preview": False,
        "approve": False,
        "reject": False,
        "cancel": False,
        "expire": False,
    }

    # the incident's actions[] carries the lifecycle too
    detail = call(client, "get", f"/api/v1/incidents/{incident.pk}", keys["viewer"]).json()
    [listed] = [a for a in detail["analysis"]["actions"] if a["id"] == action["id"]]
    assert listed["status"] == "approved" and listed["decided"]["by"] == "bob"
    assert listed["preview"]["fingerprint"] == body["preview"]["fingerprint"]


def test_approval_needs_a_fresh_preview_of_the_target_as_it_is(client, incident, keys, world):
    proposal = assistant_proposal(incident)
    url = f"/api/v1/actions/{proposal.pk}"

    no_preview = call(client, "post", f"{url}/approve", keys["approver"])
    assert no_preview.status_code == 409
    assert no_preview.json() == {"detail": "Preview the action before approving it."}

    assert call(client, "post", f"{url}/preview", keys["responder"]).status_code == 200
    world.apps.patch_namespaced_deployment_scale("chat-api", NS, {"spec": {"replicas": 3}})
    changed = call(client, "post", f"{url}/approve", keys["approver"])
    assert changed.status_code == 409
    assert changed.json()["detail"].startswith("The target changed since the preview")
    proposal.refresh_from_db()
    assert proposal.status == "previewed" and "generation=15" in proposal.preview["fingerprint"]

    assert call(client, "post", f"{url}/approve", keys["approver"]).status_code == 200


def test_reject_cancel_and_params(client, incident, keys, world):
    proposal = assistant_proposal(incident, "scale-deployment", params={})
    url = f"/api/v1/actions/{proposal.pk}"

    needs_replicas = call(client, "post", f"{url}/preview", keys["responder"])
    assert needs_replicas.status_code == 400
    assert needs_replicas.json() == {"detail": "scale-deployment: replicas is required"}

    bad = call(client, "patch", f"{url}/params", keys["responder"], {"params": {"replicas": "x"}})
    assert bad.status_code == 400 and "replicas" in bad.json()["detail"]
    assert call(client, "patch", f"{url}/params", keys["viewer"], {"params": {}}).status_code == 403
    edited = call(client, "patch", f"{url}/params", keys["responder"], {"params": {"replicas": 3}})
    assert edited.status_code == 200
    assert (edited.json()["params"], edited.json()["edited_by"]) == ({"replicas": 3}, "rita")
    posted = call(client, "post", f"{url}/params", keys["responder"], {"params": {"replicas": 4}})
    assert posted.status_code == 200 and posted.json()["params"] == {"replicas": 4}

    assert (
        call(client, "post", f"{url}/reject", keys["responder"], {"reason": "no"}).status_code
        == 403
    )
    blank = call(client, "post", f"{url}/reject", keys["approver"], {"reason": "  "})
    assert blank.status_code == 400
    assert call(client, "post", f"{url}/reject", keys["approver"]).status_code == 400
    rejected = call(client, "post", f"{url}/reject", keys["approver"], {"reason": "HPA owns it"})
    assert rejected.status_code == 200
    assert rejected.json()["decided"] == {
        "by": "alice",
        "at": rejected.json()["decided"]["at"],
        "reason": "HPA owns it",
    }
    assert call(client, "post", f"{url}/cancel", keys["approver"]).status_code == 409

    # a rejected action is reopened by a fresh preview, then approved and cancelled
    assert call(client, "post", f"{url}/preview", keys["responder"]).status_code == 200
    assert call(client, "post", f"{url}/approve", keys["approver"]).status_code == 200
    assert call(client, "post", f"{url}/cancel", keys["responder"]).status_code == 403
    cancelled = call(
        client, "post", f"{url}/cancel", keys["approver"], {"reason": "traffic dropped"}
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["decided"]["reason"] == "traffic dropped"
    assert call(client, "post", f"{url}/cancel", keys["approver"]).status_code == 409
    assert world.state()["Deployment"][0]["spec"]["replicas"] == 2


def test_bad_additions_are_400_and_unknown_things_404(client, incident, keys):
    path = f"/api/v1/incidents/{incident.pk}/actions"
    for body, detail in [
        ({}, "action is required"),
        ({"action": "reboot"}, "unknown action 'reboot'"),
        (
            {"action": "scale-deployment", "target": CHAT, "params": {"replicas": 2, "x": 1}},
            "unknown parameter 'x'",
        ),
        (
            {
                "action": "scale-deployment",
                "target": {"kind": "Deployment", "namespace": "search", "name": "reranker"},
                "params": {"replicas": 2},
            },
            "is not one of this incident's entities",
        ),
        (
            {"action": "scale-deployment", "target": ["chat-api"], "params": {"replicas": 2}},
            "target must be an object",
        ),
        (
            {"action": "scale-deployment", "target": CHAT, "params": [2]},
            "parameters must be an object",
        ),
    ]:
        response = call(client, "post", path, keys["responder"], body)
        assert response.status_code == 400, body
        assert detail in response.json()["detail"], body
    assert ActionProposal.objects.count() == 0
    assert (
        call(
            client, "post", "/api/v1/incidents/99999/actions", keys["responder"], {"action": "none"}
        ).status_code
        == 404
    )
    for path in ("/api/v1/actions/99999", "/api/v1/actions/99999/preview"):
        method = "get" if path.endswith("99999") else "post"
        assert call(client, method, path, keys["responder"]).status_code == 404
    assert call(client, "post", "/api/v1/actions/99999/preview", keys["viewer"]).status_code == 403


ENDPOINTS = [
    ("post", "/api/v1/incidents/{id}/actions"),
    ("get", "/api/v1/actions/{aid}"),
    ("post", "/api/v1/actions/{aid}/preview"),
    ("post", "/api/v1/actions/{aid}/approve"),
    ("post", "/api/v1/actions/{aid}/reject"),
    ("post", "/api/v1/actions/{aid}/cancel"),
    ("post", "/api/v1/actions/{aid}/params"),
    ("patch", "/api/v1/actions/{aid}/params"),
    ("post", "/api/v1/actions/{aid}/expire-silence"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_integration_tokens_are_refused_everywhere(
    client, incident, integration_token, method, path
):
    proposal = assistant_proposal(incident)
    _, token = integration_token("am-hook")
    for header in (f"Bearer {token}", f"Token {token}"):
        url = path.format(id=incident.pk, aid=proposal.pk)
        headers = {"Authorization": header}
        if method == "get":
            response = client.get(url, headers=headers)
        else:
            response = getattr(client, method)(
                url,
                data=json.dumps({"action": "none", "params": {"steps": "x"}, "reason": "x"}),
                content_type="application/json",
                headers=headers,
            )
        assert response.status_code == 401
    assert proposal.events.count() == 0
    assert ActionProposal.objects.count() == 1


def test_a_browser_session_needs_its_csrf_token(incident, personas):
    proposal = assistant_proposal(incident, "none", None, {"steps": "restart by hand"})
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(personas["responder"])
    refused = browser.post(f"/api/v1/actions/{proposal.pk}/preview")
    assert refused.status_code == 403
    browser.get("/incidents/")  # sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    allowed = browser.post(f"/api/v1/actions/{proposal.pk}/preview", headers={"X-CSRFToken": token})
    assert allowed.status_code == 200 and allowed.json()["status"] == "previewed"

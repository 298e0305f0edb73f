"""A silence-alert through the whole lifecycle against a real Alertmanager, then expired."""

from __future__ import annotations

import pytest

from assistant import remediation
from assistant.models import ActionProposal
from incidents.models import TimelineEvent
from tests.assistant.actions_support import open_world
from tests.assistant.test_remediation import kinds, make_incident, timeline
from tests.e2e.alertmanager_server import running_alertmanager

pytestmark = [pytest.mark.django_db, pytest.mark.e2e]
Status = ActionProposal.Status


@pytest.fixture
def alertmanager(tmp_path):
    # Its receiver is never used: no alert is posted to it.
    with running_alertmanager(
        tmp_path, "http://127.0.0.1:9/hooks/alertmanager", "unused"
    ) as server:
        yield server


@pytest.fixture
def incident(alertmanager):
    with open_world() as world:
        yield make_incident(world, alertmanager_url=alertmanager.url)


def silences(alertmanager) -> list[dict]:
    return alertmanager.http.get(f"{alertmanager.url}/api/v2/silences", timeout=5).json()


def test_a_silence_is_previewed_approved_created_and_expired_from_vigil(
    alertmanager, incident, personas, make_user, settings
):
    settings.VIGIL_FOUR_EYES = True
    proposal = remediation.add_action(
        incident,
        personas["responder"],
        "silence-alert",
        None,
        {"comment": "chat-api is being rolled back", "duration": "30m"},
    )
    remediation.preview(proposal, personas["responder"])
    [would_send] = proposal.preview["requests"]
    assert (would_send["method"], would_send["path"]) == ("POST", "/api/v2/silences")
    assert silences(alertmanager) == []  # a silence preview sends nothing

    remediation.approve(proposal, personas["approver"])
    done = remediation.run(proposal.pk)

    assert done.status == Status.SUCCEEDED, done.error
    silence_id = done.outcome["result"]["silence_id"]
    [silence] = silences(alertmanager)
    assert silence["id"] == silence_id and silence["status"]["state"] == "active"
    assert silence["createdBy"] == "vigil:approver"
    assert silence["comment"] == (f"chat-api is being rolled back [vigil action-{proposal.pk}]")
    assert remediation.allowed(done, personas["responder"])["expire"] is True
    assert remediation.allowed(done, personas["viewer"])["expire"] is False

    with pytest.raises(remediation.Forbidden):
        remediation.expire_silence(done, personas["viewer"])
    remediation.expire_silence(done, personas["responder"])

    done.refresh_from_db()
    assert done.outcome["result"]["expired_by"] == "responder"
    assert done.outcome["result"]["expired_at"].endswith("Z")
    assert done.status == Status.SUCCEEDED
    state = alertmanager.http.get(
        f"{alertmanager.url}/api/v2/silence/{silence_id}", timeout=5
    ).json()
    assert state["status"]["state"] == "expired"
    expired = done.events.get(kind="silence_expired")
    assert expired.actor == "responder"
    assert [(r["method"], r["path"]) for r in expired.requests] == [
        ("DELETE", f"/api/v2/silence/{silence_id}")
    ]
    assert expired.responses[0]["status"] == 200
    assert kinds(done) == [
        "added",
        "previewed",
        "approved",
        "executing",
        "succeeded",
        "silence_expired",
    ]
    line = TimelineEvent.objects.get(incident=incident, kind="silence_expired")
    assert (line.actor, line.summary, line.payload["action"]) == (
        "responder",
        f"responder expired silence {silence_id}, created by silence-alert (for 30m)",
        proposal.pk,
    )
    assert timeline(incident)[-1][0] == "action_succeeded"
    assert remediation.allowed(done, personas["responder"])["expire"] is False
    with pytest.raises(remediation.Conflict, match="already expired by responder"):
        remediation.expire_silence(done, personas["responder"])


def test_only_a_succeeded_silence_can_be_expired(incident, personas):
    proposal = remediation.add_action(
        incident, personas["responder"], "silence-alert", None, {"comment": "noisy"}
    )
    with pytest.raises(remediation.Conflict, match="created no silence"):
        remediation.expire_silence(proposal, personas["responder"])

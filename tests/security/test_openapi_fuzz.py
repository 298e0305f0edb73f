"""schemathesis against the JSON API's own OpenAPI document (`/api/v1/schema`): no 5xx anywhere.

The schema is loaded from the real WSGI application and every operation is called through it,
with the key of an approver (so the state-changing endpoints run: adding, previewing, approving,
rejecting actions, reviewing analyses) and the deploy and agent integrations' tokens on the
machine endpoints. Generated inputs are both valid and invalid (schemathesis' positive and
negative modes). Path ids are real ones half of the time, so the endpoints reach their logic and
do not stop at 404: the incident is on a cluster whose Kubernetes is the in-repo stand-in, so
previews run real server-side dry runs.

Checks: `not_a_server_error` (no 5xx), and every answer is JSON. Statuses the schema does not list
(401/403/404/409/400) are not failures: the API's contract for them is DESIGN.md's.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from assistant.models import ActionProposal, Analysis
from tests.assistant.actions_support import open_world
from tests.assistant.test_remediation import assistant_proposal, make_incident
from tests.security.conftest import EXAMPLES, tally
from vigil.api import api

pytestmark = pytest.mark.django_db

# schemathesis' own pytest plugin (`schema.parametrize()`) does not run under pytest 9 (it sets a
# node attribute pytest 9 removed), so each operation is a parametrized test of its own that
# draws cases from the operation's strategies with Hypothesis directly.
OPERATIONS = [
    (method.upper(), path)
    for path, methods in api.get_openapi_schema()["paths"].items()
    for method in methods
]


@pytest.fixture
def world():
    with open_world() as opened:
        yield opened


@pytest.fixture
def api_state(world, settings, api_key, deploy_token, agent_token):
    """Ids of real objects, and the credentials each operation is called with."""
    from assistant.review import record_revision

    settings.VIGIL_FOUR_EYES = True
    incident = make_incident(world)
    analysis = Analysis.objects.create(incident=incident, status=Analysis.Status.READY)
    record_revision(analysis, "Most likely a bad deploy of chat-api [#1].", "rules")
    action = assistant_proposal(incident)
    return {
        "ids": {
            "incident_id": incident.pk,
            "analysis_id": analysis.pk,
            "action_id": action.pk,
        },
        "approver": api_key("alice", "approver"),
        "deploy": deploy_token,
        "agent": agent_token,
    }


@pytest.fixture
def wsgi_app(db):
    """The WSGI application, called in this thread on the test's database connection.

    Django's test client keeps that connection open across requests; a plain WSGI call would
    close it at the end of each request (and with it the test's transaction).
    """
    from vigil.wsgi import application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield application
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _credentials(path: str, state: dict) -> dict:
    if path.endswith("/deploys"):
        return {"Authorization": f"Bearer {state['deploy']}"}
    if path.endswith("/gpu-snapshots"):
        return {"Authorization": f"Bearer {state['agent']}"}
    return {"Authorization": f"Token {state['approver']}"}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_operation_answers_5xx(wsgi_app, api_state, method, path):
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema", wsgi_app)
    operation = schema[path][method]
    real_ids = {name: value for name, value in api_state["ids"].items() if "{" + name + "}" in path}
    strategies = [
        operation.as_strategy(mode, path_parameters=ids)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for ids in ({}, real_ids)
    ]
    headers = _credentials(path, api_state)

    @settings(
        max_examples=max(10, EXAMPLES // 2),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def run(case):
        tally("schemathesis: API cases (approver and integration tokens)")
        response = case.call(headers=headers, app=wsgi_app)
        tally(f"schemathesis: answers {response.status_code}")
        case.validate_response(response, checks=[not_a_server_error])
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/json"), (response.status_code, content_type)

    run()


def test_the_fuzzed_api_reaches_its_state_changing_logic(api_state, client):
    """A sanity check of the set-up the fuzzing relies on: with the approver's key, the real
    objects are reachable and change (not merely refused)."""
    key = api_state["approver"]
    action = ActionProposal.objects.get(pk=api_state["ids"]["action_id"])
    response = client.post(
        f"/api/v1/actions/{action.pk}/preview", headers={"Authorization": f"Token {key}"}
    )
    assert response.status_code == 200, response.content
    action.refresh_from_db()
    assert action.status == "previewed"

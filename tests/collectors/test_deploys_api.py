"""POST /api/v1/deploys: CI/CD change events with a deploy integration's token, nobody else's."""

from __future__ import annotations

import json

import pytest

from collectors.models import DeployEvent

pytestmark = pytest.mark.django_db


def send(client, body, token: str | None, scheme: str = "Bearer"):
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(
        "/api/v1/deploys", data=data, content_type="application/json", headers=headers
    )


@pytest.fixture
def deploy_token(integration_token) -> str:
    return integration_token("ci", kind="deploy")[1]


def test_a_deploy_is_recorded_for_the_integrations_cluster(client, deploy_token):
    body = {
        "service": "chat-api",
        "namespace": "llm",
        "version": "v0.6.4-r42",
        "previous_version": "v0.6.3",
        "model": "llama-3.1-8b-chat@r42",
        "at": "2026-11-23T10:00:00Z",
        "author": "ci-bot",
        "description": "tokenizer update",
        "url": "https://ci.example/run/42",
    }
    response = send(client, body, deploy_token)
    assert response.status_code == 201
    event = DeployEvent.objects.get()
    assert response.json() == {
        "id": event.pk,
        "cluster": "default",
        "service": "chat-api",
        "namespace": "llm",
        "version": "v0.6.4-r42",
        "at": "2026-11-23T10:00:00Z",
    }
    assert (event.previous_version, event.model, event.author) == (
        "v0.6.3",
        "llama-3.1-8b-chat@r42",
        "ci-bot",
    )
    assert event.integration.name == "ci"


def test_at_defaults_to_now(client, deploy_token):
    from django.utils import timezone

    before = timezone.now()
    assert send(client, {"service": "s", "version": "1"}, deploy_token).status_code == 201
    assert DeployEvent.objects.get().at >= before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": "1"}, "service"),
        ({"service": "s"}, "version"),
        ({"service": "s", "version": "1", "at": "soon"}, "at"),
    ],
)
def test_invalid_bodies_are_refused_naming_the_field(client, deploy_token, body, field):
    response = send(client, body, deploy_token)
    assert response.status_code == 422
    assert field in json.dumps(response.json()["detail"])
    assert not DeployEvent.objects.exists()


def test_malformed_json_is_refused(client, deploy_token):
    assert send(client, "{nope", deploy_token).status_code in (400, 422)
    assert not DeployEvent.objects.exists()


def test_other_tokens_are_refused(client, integration_token, personas):
    _, am_token = integration_token("am", kind="alertmanager")
    body = {"service": "s", "version": "1"}
    assert send(client, body, None).status_code == 401
    assert send(client, body, "vgi_wrong").status_code == 401
    assert send(client, body, am_token).status_code == 401
    client.force_login(personas["approver"])  # a session is not a deploy integration either
    assert send(client, body, None).status_code == 401
    assert not DeployEvent.objects.exists()

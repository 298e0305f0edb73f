"""Management commands: the secret alone on the last line (a contract), reprocessing, demo set-up."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from incidents.models import ApiToken, Incident, Integration, WebhookDelivery
from incidents.tokens import hash_secret
from tests.incidents.payloads import firing, group, post

pytestmark = pytest.mark.django_db


def run(*args, **kwargs) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **kwargs)
    return out.getvalue().strip().splitlines()


def test_create_integration_prints_the_token_last_and_stores_only_its_hash():
    lines = run("create_integration", "prod-am", kind="alertmanager")
    token = lines[-1]
    assert token.startswith("vgi_") and " " not in token
    integration = Integration.objects.get(name="prod-am")
    assert integration.token_hash == hash_secret(token)
    assert token not in integration.token_hash
    assert integration.cluster.name == "default"


def test_create_integration_with_an_unknown_cluster_is_an_error():
    with pytest.raises(CommandError, match="No cluster named 'nowhere'"):
        run("create_integration", "x", cluster="nowhere")


def test_create_integration_refuses_a_duplicate_name():
    run("create_integration", "dup")
    with pytest.raises(CommandError, match="already exists"):
        run("create_integration", "dup")


def test_default_cluster_follows_the_environment(settings):
    settings.VIGIL_PROMETHEUS_URL = "http://prom.example:9090"
    run("create_integration", "p")
    assert Integration.objects.get(name="p").cluster.prometheus_url == "http://prom.example:9090"


def test_create_api_token_for_an_unknown_user_needs_create():
    with pytest.raises(CommandError, match="pass --create"):
        run("create_api_token", "ghost")


def test_create_api_token_gives_the_role_and_prints_the_key_last(client):
    key = run("create_api_token", "bot", role="responder", create=True)[-1]
    assert key.startswith("vgk_")
    token = ApiToken.objects.get()
    assert token.key_hash == hash_secret(key)
    assert list(token.user.groups.values_list("name", flat=True)) == ["responder"]
    # Changing the role replaces it.
    run("create_api_token", "bot", role="viewer")
    assert list(token.user.groups.values_list("name", flat=True)) == ["viewer"]
    assert (
        client.get("/api/v1/incidents", headers={"Authorization": f"Token {key}"}).status_code
        == 200
    )


def test_reprocess_deliveries_replays_failed_and_unprocessed_ones(client, am_token):
    post(client, group(firing("A")), am_token)
    delivery = WebhookDelivery.objects.get()
    Incident.objects.all().delete()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", error="boom")

    lines = run("reprocess_deliveries")
    assert lines[-1] == "1 processed, 0 rejected, 0 failed"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.error, delivery.attempts) == ("processed", "", 2)
    assert Incident.objects.get().alert_count == 1
    # Idempotent: a second replay of the same delivery creates nothing new.
    run("reprocess_deliveries", delivery.pk)
    assert Incident.objects.get().alert_count == 1


def test_reprocess_leaves_rejected_ones_unless_asked(client, am_token):
    post(client, b"{broken", am_token)
    assert run("reprocess_deliveries")[-1] == "0 processed, 0 rejected, 0 failed"
    assert (
        run("reprocess_deliveries", include_rejected=True)[-1]
        == "0 processed, 1 rejected, 0 failed"
    )


def test_an_unexpected_ingest_error_keeps_the_delivery_as_failed(client, am_token, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("bug in ingest")

    monkeypatch.setattr("incidents.ingest.ingest_notification", explode)
    response = post(client, group(firing("A")), am_token)
    assert response.status_code == 500
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and "bug in ingest" in delivery.error
    monkeypatch.undo()
    assert run("reprocess_deliveries")[-1] == "1 processed, 0 rejected, 0 failed"
    assert Incident.objects.count() == 1


def test_setup_demo_creates_a_user_who_can_log_in(client, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    lines = run("setup_demo", password="demo-password-1")
    assert lines[-1] == "Demo login: username 'demo', password 'demo-password-1'"
    assert client.login(username="demo", password="demo-password-1")
    token = (tmp_path / "demo-token").read_text()
    assert Integration.objects.get(name="demo-alertmanager").token_hash == hash_secret(token)

"""The admin manages clusters and integrations; an integration's token is shown exactly once."""

from __future__ import annotations

import re

import pytest

from incidents.models import Cluster, Integration
from incidents.tokens import hash_secret

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, make_user):
    user = make_user("root")
    user.is_staff = user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


def test_adding_an_integration_shows_its_token_once(admin_client):
    cluster = Cluster.objects.create(name="gpu-west", prometheus_url="http://prom:9090")
    response = admin_client.post(
        "/admin/incidents/integration/add/",
        {"name": "west-am", "kind": "alertmanager", "cluster": cluster.pk, "is_active": "on"},
        follow=True,
    )
    assert response.status_code == 200
    shown = re.findall(r"Token for west-am: (vgi_[\w-]+)", response.content.decode())
    assert len(shown) == 1
    integration = Integration.objects.get(name="west-am")
    assert integration.token_hash == hash_secret(shown[0])
    assert integration.cluster == cluster

    change_page = admin_client.get(f"/admin/incidents/integration/{integration.pk}/change/")
    assert shown[0].encode() not in change_page.content
    assert integration.token_prefix.encode() in change_page.content


def test_rotating_a_token_invalidates_the_old_one(admin_client, integration_token):
    integration, old = integration_token()
    response = admin_client.post(
        "/admin/incidents/integration/",
        {"action": "rotate_token", "_selected_action": [integration.pk]},
        follow=True,
    )
    new = re.findall(r"Token for am: (vgi_[\w-]+)", response.content.decode())[0]
    integration.refresh_from_db()
    assert integration.token_hash == hash_secret(new) != hash_secret(old)

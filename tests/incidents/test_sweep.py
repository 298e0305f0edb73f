"""The beat sweep: deliveries stored but never processed are ingested; nothing is left behind."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from incidents.models import Incident, WebhookDelivery
from incidents.tasks import process_pending_deliveries, sweep
from tests.incidents.payloads import firing, group

pytestmark = pytest.mark.django_db


def stored(integration, body, age_seconds: int = 120) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        integration=integration,
        body=body if isinstance(body, bytes) else json.dumps(body).encode(),
        received_at=timezone.now() - timedelta(seconds=age_seconds),
    )


def test_the_sweep_ingests_deliveries_left_unprocessed(integration_token):
    integration, _ = integration_token()
    old = stored(integration, group(firing("A")))
    fresh = stored(integration, group(firing("B")), age_seconds=0)  # the request may still be at it
    broken = stored(integration, b"{", age_seconds=300)

    result = sweep()

    assert result["deliveries"] == 2
    for delivery in (old, fresh, broken):
        delivery.refresh_from_db()
    assert (old.status, fresh.status, broken.status) == ("processed", "received", "rejected")
    assert list(Incident.objects.values_list("alerts__alertname", flat=True)) == ["A"]


def test_a_stored_firing_and_its_resolution_end_resolved(integration_token):
    integration, _ = integration_token()
    stored(integration, group(firing("A")), age_seconds=200)
    from tests.incidents.payloads import resolved

    stored(integration, group(resolved("A")), age_seconds=100)
    assert process_pending_deliveries() == 2
    assert Incident.objects.get().status == "resolved"

"""POST /api/v1/gpu-snapshots: NVML readings with an agent integration's token, nobody else's."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from collectors.models import GpuSnapshot

pytestmark = pytest.mark.django_db


def send(client, body, token: str | None, scheme: str = "Bearer"):
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(
        "/api/v1/gpu-snapshots", data=data, content_type="application/json", headers=headers
    )


@pytest.fixture
def agent_token(integration_token) -> str:
    return integration_token("gpu-agent", kind="agent")[1]


def gpu(index: int = 0, **overrides) -> dict:
    base = {
        "index": index,
        "uuid": f"GPU-0000000{index}-aaaa-bbbb-cccc-dddddddddddd",
        "name": "NVIDIA H100 80GB HBM3",
        "temperature_c": 71,
        "power_w": 512.25,
        "power_limit_w": 700.0,
        "utilization_pct": 98,
        "memory_utilization_pct": 40,
        "memory_used_bytes": 60 * 2**30,
        "memory_total_bytes": 80 * 2**30,
        "clocks_event_reasons": ["SwPowerCap"],
        "clocks_event_reasons_mask": 4,
        "ecc_volatile_double_bit": 0,
        "ecc_volatile_single_bit": 3,
        "retired_pages_single_bit": None,
        "retired_pages_double_bit": None,
        "retired_pages_pending": None,
        "remapped_rows_correctable": 0,
        "remapped_rows_uncorrectable": 1,
        "remapped_rows_pending": True,
        "remapped_rows_failure": False,
        "xid_events": [{"code": 63, "at": "2026-11-23T09:59:58Z"}],
        "errors": {},
    }
    return {**base, **overrides}


def snapshot(**overrides) -> dict:
    base = {
        "node": "gpu-node-1",
        "taken_at": "2026-11-23T10:00:00Z",
        "gpus": [gpu(0), gpu(1, ecc_volatile_double_bit=None, ecc_volatile_single_bit=None)],
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
        "agent_version": "0.1.0",
    }
    return {**base, **overrides}


def test_a_snapshot_is_stored_for_the_integrations_cluster(client, agent_token):
    body = snapshot()
    response = send(client, body, agent_token)
    assert response.status_code == 201, response.content
    stored = GpuSnapshot.objects.get()
    assert response.json() == {"id": stored.pk, "node": "gpu-node-1", "gpus": 2}
    assert stored.cluster.name == "default"
    assert stored.integration.name == "gpu-agent"
    assert stored.node == "gpu-node-1"
    assert stored.taken_at == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert (stored.driver_version, stored.cuda_version, stored.agent_version) == (
        "550.54.15",
        "12.4",
        "0.1.0",
    )
    # Stored as sent (times as RFC 3339 UTC), unsupported values kept as None.
    assert stored.gpus == body["gpus"]
    assert stored.gpus[1]["ecc_volatile_double_bit"] is None
    assert stored.gpu_count == 2


def test_optional_fields_default_and_taken_at_defaults_to_now(client, agent_token):
    from django.utils import timezone

    before = timezone.now()
    body = {"node": "n1", "gpus": [{"index": 0}]}
    assert send(client, body, agent_token).status_code == 201
    stored = GpuSnapshot.objects.get()
    assert stored.taken_at >= before
    assert stored.gpus[0]["index"] == 0
    assert stored.gpus[0]["temperature_c"] is None
    assert stored.gpus[0]["xid_events"] is None  # not watched, unlike [] (watched, none)
    assert (stored.driver_version, stored.cuda_version, stored.agent_version) == ("", "", "")


def test_a_node_without_visible_gpus_is_still_a_snapshot(client, agent_token):
    response = send(client, {"node": "n1", "gpus": []}, agent_token)
    assert response.status_code == 201
    assert response.json()["gpus"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"gpus": []}, "node"),
        ({"node": "", "gpus": []}, "node"),
        ({"node": "n" * 254, "gpus": []}, "node"),
        ({"node": "n1"}, "gpus"),
        ({"node": "n1", "gpus": [gpu(i) for i in range(65)]}, "gpus"),
        ({"node": "n1", "gpus": [gpu(0), gpu(0)]}, "gpus"),
        ({"node": "n1", "gpus": [], "taken_at": "soon"}, "taken_at"),
        ({"node": "n1", "gpus": [], "driver_version": "9" * 81}, "driver_version"),
        ({"node": "n1", "gpus": [{"uuid": "GPU-1"}]}, "index"),
        ({"node": "n1", "gpus": [gpu(0, temperature_c="hot")]}, "temperature_c"),
        ({"node": "n1", "gpus": [gpu(0, utilization_pct=101)]}, "utilization_pct"),
        ({"node": "n1", "gpus": [gpu(0, power_w=-1)]}, "power_w"),
        ({"node": "n1", "gpus": [gpu(0, name="x" * 201)]}, "name"),
        (
            {"node": "n1", "gpus": [gpu(0, clocks_event_reasons=["x" * 65])]},
            "clocks_event_reasons",
        ),
        ({"node": "n1", "gpus": [gpu(0, xid_events=[{"code": 79}])]}, "xid_events"),
        (
            {
                "node": "n1",
                "gpus": [gpu(0, xid_events=[{"code": -1, "at": "2026-11-23T10:00:00Z"}])],
            },
            "xid_events",
        ),
        ({"node": "n1", "gpus": [gpu(0, errors={"temperature_c": "x" * 501})]}, "errors"),
    ],
)
def test_invalid_bodies_are_refused_naming_the_field(client, agent_token, body, field):
    response = send(client, body, agent_token)
    assert response.status_code == 422
    assert field in json.dumps(response.json()["detail"])
    assert not GpuSnapshot.objects.exists()


def test_malformed_json_is_refused(client, agent_token):
    assert send(client, "{nope", agent_token).status_code in (400, 422)
    assert not GpuSnapshot.objects.exists()


def test_other_tokens_are_refused(client, integration_token, personas):
    _, am_token = integration_token("am", kind="alertmanager")
    _, deploy_token = integration_token("ci", kind="deploy")
    body = snapshot()
    assert send(client, body, None).status_code == 401
    assert send(client, body, "vgi_wrong").status_code == 401
    assert send(client, body, am_token).status_code == 401
    assert send(client, body, deploy_token).status_code == 401
    client.force_login(personas["approver"])  # a session is not an agent integration either
    assert send(client, body, None).status_code == 401
    assert not GpuSnapshot.objects.exists()


def test_a_disabled_agent_integration_is_refused(client, integration_token):
    integration, token = integration_token("gpu-agent", kind="agent")
    integration.is_active = False
    integration.save()
    assert send(client, snapshot(), token).status_code == 401
    assert not GpuSnapshot.objects.exists()


def test_a_user_api_key_is_refused(client, personas):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_token", "approver", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    assert send(client, snapshot(), key, scheme="Token").status_code == 401
    assert send(client, snapshot(), key).status_code == 401
    assert not GpuSnapshot.objects.exists()

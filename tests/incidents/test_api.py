"""GET /api/v1/incidents and /api/v1/incidents/<id>: shapes, paging, filters and auth (DESIGN.md)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.test.utils import CaptureQueriesContext

from incidents.models import Incident
from tests.incidents.payloads import firing, group, post, resolved

pytestmark = pytest.mark.django_db


def api_key(username: str, role: str | None = "viewer", create: bool = True) -> str:
    out = StringIO()
    call_command("create_api_token", username, role=role, create=create, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def get(client, path: str, key: str | None = None, **params):
    headers = {"Authorization": f"Token {key}"} if key else {}
    return client.get(path, params, headers=headers)


@pytest.fixture
def three_incidents(client, am_token):
    post(client, group(firing("A", pod="a1", team="ml")), am_token)
    post(client, group(firing("B", pod="b1", team="web", severity="critical")), am_token)
    post(client, group(firing("C", pod="c1", team="ml")), am_token)
    return list(Incident.objects.order_by("pk"))


def test_list_is_newest_first_with_the_documented_shape(client, three_incidents):
    body = get(client, "/api/v1/incidents", api_key("v")).json()
    assert body["count"] == 3
    assert body["next"] is None and body["previous"] is None
    assert [r["id"] for r in body["results"]] == [i.pk for i in reversed(three_incidents)]
    first = body["results"][0]
    assert first["status"] == "open"
    assert first["cluster"] == "default"
    assert first["alert_count"] == 1
    assert first["url"].endswith(f"/incidents/{first['id']}/")


def test_list_pages(client, three_incidents):
    key = api_key("v")
    page1 = get(client, "/api/v1/incidents", key, page_size=2).json()
    assert len(page1["results"]) == 2
    assert "page=2" in page1["next"] and "page_size=2" in page1["next"]
    page2 = get(client, "/api/v1/incidents", key, page_size=2, page=2).json()
    assert [r["id"] for r in page2["results"]] == [three_incidents[0].pk]
    assert page2["next"] is None and "page=1" in page2["previous"]


def test_page_size_is_capped_at_200(client, three_incidents):
    assert get(client, "/api/v1/incidents", api_key("v"), page_size=201).status_code == 422


def test_filters_by_status_and_severity(client, three_incidents):
    key = api_key("v")
    Incident.objects.filter(pk=three_incidents[0].pk).update(status="resolved")
    body = get(client, "/api/v1/incidents", key, status="resolved").json()
    assert [r["id"] for r in body["results"]] == [three_incidents[0].pk]
    body = get(client, "/api/v1/incidents", key, severity="critical").json()
    assert [r["id"] for r in body["results"]] == [three_incidents[1].pk]


def test_label_filters_are_anded_over_any_alert(client, three_incidents):
    key = api_key("v")
    body = get(client, "/api/v1/incidents?label=team:ml", key).json()
    assert {r["id"] for r in body["results"]} == {three_incidents[0].pk, three_incidents[2].pk}
    body = get(client, "/api/v1/incidents?label=team:ml&label=pod:c1", key).json()
    assert [r["id"] for r in body["results"]] == [three_incidents[2].pk]
    body = get(client, "/api/v1/incidents?label=team:nobody", key).json()
    assert body["count"] == 0


def test_a_malformed_label_filter_is_400(client, three_incidents):
    response = get(client, "/api/v1/incidents?label=nocolon", api_key("v"))
    assert response.status_code == 400
    assert "key:value" in response.json()["detail"]


def test_detail_has_alerts_evidence_and_a_null_analysis(client, three_incidents):
    incident = three_incidents[0]
    body = get(client, f"/api/v1/incidents/{incident.pk}", api_key("v")).json()
    assert body["id"] == incident.pk
    assert body["analysis"] is None
    assert body["evidence"] == []
    (alert,) = body["alerts"]
    assert set(alert) >= {"fingerprint", "status", "labels", "annotations", "startsAt", "endsAt"}
    assert alert["labels"]["pod"] == "a1"
    assert alert["status"] == "firing"
    assert alert["endsAt"] is None
    assert alert["startsAt"].startswith("2026-11-23T10:00:00")


def _alerts_as_the_api_writes_them(incident: Incident) -> list[dict]:
    """Each alert's stored values under the API's names, through Django's JSON encoder."""
    rows = [
        {
            "id": a.pk,
            "fingerprint": a.fingerprint,
            "status": a.status,
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": a.starts_at,
            "endsAt": a.ends_at,
            "generatorURL": a.generator_url,
            "notification_count": a.notification_count,
        }
        for a in incident.alerts.all()
    ]
    return json.loads(json.dumps(rows, cls=DjangoJSONEncoder))


def test_detail_lists_every_alert_with_every_field_in_a_query_count_that_does_not_grow(
    client, am_token
):
    """An incident from a storm holds thousands of alerts, all of them in its detail: each
    with every field as stored, in the incident's order, and no query per alert."""
    link = {"generatorURL": "http://prometheus:9090/graph?g0.expr=up"}
    small = group(*[firing("Small", pod=f"s{i}") for i in range(2)])
    post(client, small, am_token)
    post(client, small, am_token)  # re-notified: counted twice
    post(client, group(resolved("Small", pod="s1")), am_token)
    post(client, group(*[{**firing("Large", pod=f"l{i}"), **link} for i in range(12)]), am_token)
    key = api_key("v")
    get(client, "/api/v1/incidents", key)  # the key's first use notes when it was used
    queries = {}
    for incident in Incident.objects.order_by("pk"):
        with CaptureQueriesContext(connection) as ctx:
            body = get(client, f"/api/v1/incidents/{incident.pk}", key).json()
        queries[incident.alert_count] = len(ctx.captured_queries)
        assert body["alerts"] == _alerts_as_the_api_writes_them(incident)
    assert set(queries) == {2, 12}
    assert queries[2] == queries[12]
    small_alerts = Incident.objects.order_by("pk").first().alerts.order_by("pk")
    assert [a.notification_count for a in small_alerts] == [2, 3]
    assert [a.status for a in small_alerts] == ["firing", "resolved"]


def test_unknown_incident_is_404(client, three_incidents):
    assert get(client, "/api/v1/incidents/999999", api_key("v")).status_code == 404


def test_session_auth_works_for_a_logged_in_viewer(client_as, three_incidents):
    client = client_as("viewer")
    assert client.get("/api/v1/incidents").status_code == 200


@pytest.mark.parametrize("persona", ["anonymous", "outsider"])
def test_no_role_means_no_api(client_as, persona, three_incidents):
    client = client_as(persona)
    expected = 401 if persona == "anonymous" else 403
    assert client.get("/api/v1/incidents").status_code == expected
    assert client.get(f"/api/v1/incidents/{three_incidents[0].pk}").status_code == expected


def test_a_user_key_without_a_role_is_403(client, three_incidents):
    assert get(client, "/api/v1/incidents", api_key("nobody", role=None)).status_code == 403


def test_integration_tokens_are_refused_on_user_endpoints(
    client, integration_token, three_incidents
):
    _, token = integration_token("am2")
    for header in (f"Token {token}", f"Bearer {token}"):
        response = client.get("/api/v1/incidents", headers={"Authorization": header})
        assert response.status_code == 401


def test_a_wrong_key_is_401(client, three_incidents):
    assert get(client, "/api/v1/incidents", "vgk_not-a-real-key").status_code == 401


def test_a_deactivated_users_key_stops_working(client, three_incidents):
    from django.contrib.auth import get_user_model

    key = api_key("leaver")
    get_user_model().objects.filter(username="leaver").update(is_active=False)
    assert get(client, "/api/v1/incidents", key).status_code == 401


def test_openapi_schema_is_served_and_describes_the_endpoints(client):
    response = client.get("/api/v1/schema")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/incidents" in schema["paths"]
    assert "/api/v1/incidents/{incident_id}" in schema["paths"]

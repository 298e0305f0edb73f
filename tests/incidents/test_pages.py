"""Incident pages: list with filters and self-updating rows, detail, actions, timeline permalinks."""

from __future__ import annotations

import pytest

from incidents.models import Incident, TimelineEvent
from tests.incidents.payloads import firing, group, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def incident(client, am_token) -> Incident:
    post(client, group(firing("KVCacheHigh", pod="vllm-0")), am_token)
    client.logout()
    return Incident.objects.get()


def test_list_shows_incidents_and_filters(client_as, incident, am_token):
    client = client_as("viewer")
    post(client, group(firing("GPUXid", severity="critical")), am_token)
    page = client.get("/incidents/")
    assert page.status_code == 200
    assert b"KVCacheHigh summary" in page.content and b"GPUXid summary" in page.content
    page = client.get("/incidents/", {"severity": "critical"})
    assert b"GPUXid summary" in page.content and b"KVCacheHigh summary" not in page.content
    page = client.get("/incidents/", {"status": "resolved"})
    assert b"No incidents match these filters" in page.content


def test_list_poll_answers_204_until_something_changes(client_as, incident, am_token):
    client = client_as("viewer")
    page = client.get("/incidents/")
    version = page.context["version"]
    poll = client.get("/incidents/", {"since": version}, headers={"HX-Request": "true"})
    assert poll.status_code == 204

    post(client, group(firing("NewAlert")), am_token)
    poll = client.get("/incidents/", {"since": version}, headers={"HX-Request": "true"})
    assert poll.status_code == 200
    assert b'id="incident-rows"' in poll.content and b"NewAlert summary" in poll.content
    assert b"<html" not in poll.content
    assert poll.context["version"] != version


def test_list_rows_follow_their_incident(client_as, incident, am_token):
    """Rows are kept rendered per state of their incident (incidents/views.py): never stale."""
    client = client_as("viewer")
    assert b"1 firing / 1" in client.get("/incidents/").content
    post(client, group(firing("KVCacheHigh", pod="vllm-1")), am_token)
    assert b"2 firing / 2" in client.get("/incidents/").content
    Incident.objects.filter(pk=incident.pk).update(status="acknowledged", title="Renamed")
    page = client.get("/incidents/").content
    assert b'class="badge status-acknowledged"' in page and b"Renamed" in page
    assert b"KVCacheHigh summary" not in page


def test_detail_shows_alerts_and_timeline(client_as, incident):
    page = client_as("viewer").get(f"/incidents/{incident.pk}/")
    assert page.status_code == 200
    assert b"vllm-0" in page.content
    assert b"Opened by KVCacheHigh" in page.content
    assert b'data-action="acknowledge"' not in page.content  # viewers get no buttons


def test_responder_acknowledges_with_htmx_and_it_is_on_the_timeline(client_as, incident):
    client = client_as("responder")
    page = client.get(f"/incidents/{incident.pk}/")
    assert b'data-action="acknowledge"' in page.content
    response = client.post(f"/incidents/{incident.pk}/acknowledge", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert b'id="incident-live"' in response.content and b"<html" not in response.content
    incident.refresh_from_db()
    assert incident.status == "acknowledged" and incident.acknowledged_at
    event = incident.timeline.get(kind="incident_acknowledged")
    assert event.actor == "responder"
    assert f'id="event-{event.pk}"'.encode() in response.content


def test_resolve_and_reopen_are_recorded_with_the_actor(client_as, incident):
    client = client_as("approver")
    client.post(f"/incidents/{incident.pk}/resolve")
    incident.refresh_from_db()
    assert incident.status == "resolved"
    client.post(f"/incidents/{incident.pk}/reopen")
    incident.refresh_from_db()
    assert incident.status == "open" and incident.resolved_at is None
    kinds = list(incident.timeline.filter(actor="approver").values_list("kind", flat=True))
    assert kinds == ["incident_resolved", "incident_reopened"]


def test_an_invalid_transition_is_explained_not_applied(client_as, incident):
    client = client_as("responder")
    response = client.post(f"/incidents/{incident.pk}/reopen", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert b"Cannot reopen an incident that is open" in response.content
    assert not incident.timeline.filter(kind="incident_reopened").exists()


def test_unknown_action_is_refused(client_as, incident):
    response = client_as("responder").post(
        f"/incidents/{incident.pk}/explode", headers={"HX-Request": "true"}
    )
    assert b"Unknown action" in response.content


def test_actions_need_csrf(personas, incident):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(personas["responder"])
    assert client.post(f"/incidents/{incident.pk}/acknowledge").status_code == 403
    page = client.get(f"/incidents/{incident.pk}/")
    token = page.cookies["csrftoken"].value
    response = client.post(f"/incidents/{incident.pk}/acknowledge", headers={"X-CSRFToken": token})
    assert response.status_code == 302
    incident.refresh_from_db()
    assert incident.status == "acknowledged"


def test_timeline_permalink_lands_on_the_highlighted_event(client_as, incident):
    event = incident.timeline.get(kind="incident_opened")
    assert (
        event.get_absolute_url()
        == f"/incidents/{incident.pk}/timeline?event={event.pk}#event-{event.pk}"
    )
    page = client_as("viewer").get(f"/incidents/{incident.pk}/timeline", {"event": event.pk})
    assert page.status_code == 200
    assert (
        f'id="event-{event.pk}" class="event kind-incident_opened highlighted"'.encode()
        in page.content
    )


def test_timeline_permalink_finds_the_page_holding_an_old_event(client_as, incident, settings):
    from incidents import views

    events = [
        TimelineEvent(incident=incident, kind="note", actor="x", summary=f"note {i}")
        # More than half a page past the first: a second page of its own.
        for i in range(views.TIMELINE_PAGE_SIZE + views.TIMELINE_PAGE_SIZE // 2 + 10)
    ]
    TimelineEvent.objects.bulk_create(events)
    last = incident.timeline.order_by("-at", "-id").first()
    page = client_as("viewer").get(f"/incidents/{incident.pk}/timeline", {"event": last.pk})
    assert page.context["page"].number == 2
    assert page.context["highlighted"] == last.pk


def test_timeline_filters_by_kind(client_as, incident):
    page = client_as("viewer").get(f"/incidents/{incident.pk}/timeline", {"kind": "alert_firing"})
    kinds = {e.kind for e in page.context["page"]}
    assert kinds == {"alert_firing"}


def test_permalink_survives_login(client, personas, incident):
    event = incident.timeline.first()
    url = f"/incidents/{incident.pk}/timeline?event={event.pk}"
    response = client.get(url)
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/?next=")
    login = client.post(
        response.url,
        {"username": "viewer", "password": "correct-horse-battery-staple", "next": url},
    )
    assert login.status_code == 302 and login.url == url


def test_pages_send_a_csp_without_inline_script(client_as, incident):
    response = client_as("viewer").get("/incidents/")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert b"<script>" not in response.content
    assert b"hx-on" not in response.content
    assert b'"includeIndicatorStyles": false' in response.content

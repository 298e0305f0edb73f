"""The incident page's cached fragments (incidents/fragments.py): never stale, never another
user's buttons, and the story read from the few alerts it can show is the full story."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone, translation

from assistant import presentation
from assistant.facts import facts_for
from assistant.models import ActionProposal
from assistant.presentation import story_of
from assistant.timeline import build_timeline
from collectors.models import Evidence
from incidents.fragments import FragmentCache
from incidents.models import Alert, TimelineEvent
from tests.assistant.review_support import make_analysis, make_incident
from tests.incidents.payloads import T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def incident(client, am_token):
    incident = make_incident(client, am_token)
    incident.collection_started_at = incident.collection_finished_at = timezone.now()
    incident.save()
    return incident


@pytest.fixture
def analysis(incident):
    analysis = make_analysis(incident)
    ActionProposal.objects.create(
        incident=incident,
        analysis=analysis,
        rank=0,
        action="rollout-undo",
        target_kind="Deployment",
        target_namespace="llm",
        target_name="chat-api",
        params={},
        rationale="Revision 11 served cleanly before revision 12.",
    )
    return analysis


def page(client, incident) -> str:
    response = client.get(f"/incidents/{incident.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_an_alert_row_shows_its_alert_as_it_is_now(client_as, incident, analysis):
    client = client_as("viewer")
    html = page(client, incident)
    assert "<div>KVCacheHigh summary</div>" in html and "<code>pod=p-1</code>" in html
    alert = incident.alerts.get()
    Alert.objects.filter(pk=alert.pk).update(
        status="resolved",
        ends_at=alert.starts_at + timedelta(minutes=5),
        labels={**alert.labels, "pod": "p-2"},
        annotations={"summary": "Now something else"},
        notification_count=7,
    )
    html = page(client, incident)
    assert "<div>Now something else</div>" in html
    assert "<div>KVCacheHigh summary</div>" not in html
    assert "<code>pod=p-2</code>" in html and "<code>pod=p-1</code>" not in html
    assert "<td>7×</td>" in html and '<tr class="status-resolved">' in html


def test_a_recent_event_shows_its_event_as_it_is_now(client_as, incident):
    client = client_as("viewer")
    event = incident.timeline.order_by("id").first()
    assert f'id="event-{event.pk}"' in page(client, incident)
    TimelineEvent.objects.filter(pk=event.pk).update(summary="Rewritten", actor="someone-else")
    html = page(client, incident)
    assert "Rewritten" in html and "by someone-else" in html
    live = client.get(f"/incidents/{incident.pk}/?part=live", headers={"HX-Request": "true"})
    assert "Rewritten" in live.content.decode()


def test_evidence_panels_show_the_rows_as_they_are_now(client_as, incident, analysis):
    client = client_as("viewer")
    row = incident.evidence.get()
    html = page(client, incident)
    assert f'<tr id="evidence-{row.pk}">' in html and "<td>Running</td>" in html
    Evidence.objects.filter(pk=row.pk).update(data={"phase": "Failed", "reason": "Evicted"})
    assert "<td>Failed (Evicted)</td>" in page(client, incident)
    new = Evidence.objects.create(
        incident=incident,
        collector="kubernetes",
        kind="pod_status",
        title="pod p-9",
        entity_kind="Pod",
        entity_namespace="llm",
        entity_name="p-9",
        data={"phase": "Pending"},
    )
    html = page(client, incident)
    assert f'<tr id="evidence-{new.pk}"><td>llm/p-9</td><td>Pending</td>' in html
    row.delete()
    html = page(client, incident)
    assert f'id="evidence-{row.pk}"' not in html and f'id="evidence-{new.pk}"' in html


def test_the_story_is_the_full_story_read_from_fewer_alerts(client_as, incident, analysis):
    assert story_of(incident) == build_timeline(facts_for(incident))
    first = incident.alerts.get()
    Alert.objects.bulk_create(
        Alert(
            cluster_id=first.cluster_id,
            incident=incident,
            fingerprint=f"fp{i:04d}",
            starts_at=T0 + timedelta(seconds=30 * (i + 1)),
            # Many alerts end at the same moment: ties ordered as the full list orders them.
            ends_at=None if i % 3 == 0 else T0 + timedelta(hours=2, minutes=i % 7),
            status="firing" if i % 3 == 0 else "resolved",
            alertname=f"A{i % 5}",
            labels={"alertname": f"A{i % 5}", "i": str(i)},
            group_hash=first.group_hash,
        )
        for i in range(200)
    )
    expected = build_timeline(facts_for(incident))
    assert len(expected) == 80
    assert story_of(incident) == expected
    assert len(presentation._story_alerts(incident)) < incident.alerts.count()
    html = page(client_as("viewer"), incident)
    listed = re.findall(r'<li class="story-alert">.*?</li>', html)
    assert len(listed) == 80 and listed[-1].endswith(f"{expected[-1].title}</li>")


@pytest.mark.parametrize("first", ["responder", "viewer"])
def test_no_one_gets_the_buttons_of_another_role(client_as, incident, analysis, first):
    """The cached fragments hold no buttons: whoever renders them first, a viewer gets none."""
    buttons = (
        'data-action="acknowledge"',
        'data-action="reanalyse"',
        'data-action="refresh-evidence"',
        'data-action="approve-analysis"',
        'data-action="preview-action"',
    )
    second = "viewer" if first == "responder" else "responder"
    for role in (first, second, first, second):
        html = page(client_as(role), incident)
        for button in buttons:
            assert (button in html) == (role == "responder"), (role, button)


def test_a_fragment_is_kept_per_language_and_time_zone_and_the_cache_is_bounded():
    cache = FragmentCache(2)

    def rendering(text):
        return lambda: text

    assert cache.get("k", rendering("utc")) == "utc"
    assert cache.get("k", rendering("not rendered again")) == "utc"
    with timezone.override("Europe/Paris"):
        assert cache.get("k", rendering("paris")) == "paris"
    with translation.override("de"):
        assert cache.get("k", rendering("german")) == "german"  # full: cleared first
    assert len(cache) == 1
    assert cache.get("k", rendering("utc again")) == "utc again"


def timeline(client, incident, query: str = "") -> str:
    response = client.get(f"/incidents/{incident.pk}/timeline{query}")
    assert response.status_code == 200
    return response.content.decode()


def event_li(html: str, event_id: int) -> str:
    match = re.search(rf'<li id="event-{event_id}"[^>]*>.*?</li>', html, re.S)
    assert match, f"event {event_id} not on the page"
    return match[0]


def test_timeline_rows_follow_the_highlight_and_the_filter(client_as, incident):
    """A cached timeline row carries what the page adds to its event: the highlight of a
    permalinked event, and the note when the filter hides its kind, each only where it applies."""
    client = client_as("viewer")
    opened = incident.timeline.get(kind="incident_opened")
    firing = incident.timeline.filter(kind="alert_firing").first()
    plain = event_li(timeline(client, incident), opened.pk)
    assert "highlighted" not in plain and "outside-filter" not in plain

    linked = timeline(client, incident, f"?event={opened.pk}")
    assert 'class="event kind-incident_opened highlighted"' in event_li(linked, opened.pk)
    assert "highlighted" not in event_li(linked, firing.pk)

    # The alerts family only: the linked "opened" event stays, marked as outside the filter.
    filtered = timeline(client, incident, f"?family=alerts&event={opened.pk}")
    assert "Linked event, shown although the filter hides its kind." in event_li(
        filtered, opened.pk
    )
    assert "outside-filter" not in event_li(filtered, firing.pk)
    # And the plain page again, from the cache: no highlight or note left behind.
    assert event_li(timeline(client, incident), opened.pk) == plain


def test_a_timeline_row_shows_its_event_as_it_is_now(client_as, incident):
    client = client_as("viewer")
    event = incident.timeline.get(kind="incident_opened")
    assert "Opened by" in event_li(timeline(client, incident), event.pk)
    TimelineEvent.objects.filter(pk=event.pk).update(
        summary="Edited summary", payload={"note": "changed"}
    )
    row = event_li(timeline(client, incident), event.pk)
    assert "Edited summary" in row and "&quot;note&quot;: &quot;changed&quot;" in row

"""The incident timeline page: family and kind filters, pagination, permalinks, the live poll.

The page itself is in incidents/views.py (incident_timeline); the browser side (a phone, a login
redirect, a live event arriving) is in tests/e2e/test_timeline_browser.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from incidents import views
from incidents.models import Cluster, Incident, TimelineEvent

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
HX = {"HX-Request": "true"}
# One kind of every family, and two the model does not know yet (say, from the Slack integration).
KINDS_BY_FAMILY = {
    "alerts": ["alert_firing", "alert_resolved", "silence_expired"],
    "status": ["incident_opened", "incident_acknowledged", "incident_resolved"],
    "evidence": ["collection_requested", "collection_finished"],
    "analysis": ["analysis_ready", "analysis_approved"],
    "actions": ["action_added", "action_failed"],
    "notes": ["note", "notification_failed", "slack_posted"],
}


@pytest.fixture
def incident(db) -> Incident:
    cluster = Cluster.objects.create(name="gpu-east")
    return Incident.objects.create(
        cluster=cluster, title="KV cache full", grouping_key="{}:{}", group_hash="h" * 64
    )


def add(incident: Incident, kind: str, at: datetime, summary: str = "", **payload) -> TimelineEvent:
    return TimelineEvent.objects.create(
        incident=incident, kind=kind, at=at, actor="vigil", summary=summary or kind, payload=payload
    )


def url(incident: Incident) -> str:
    return f"/incidents/{incident.pk}/timeline"


def shown(response) -> list[str]:
    return [event.kind for event in response.context["page"]]


def one_of_each(incident: Incident) -> dict[str, TimelineEvent]:
    events = {}
    at = T0
    for kinds in KINDS_BY_FAMILY.values():
        for kind in kinds:
            at += timedelta(seconds=10)
            events[kind] = add(incident, kind, at)
    return events


def poll_params(response) -> dict[str, list[str]]:
    """The query of the poller the page (or a poll's answer) carries."""
    match = re.search(r'id="timeline-poll" hx-get="([^"]+)"', response.content.decode())
    assert match, "no poller on this page"
    return parse_qs(urlsplit(match.group(1).replace("&amp;", "&")).query)


def poll(client, incident: Incident, params: dict[str, list[str]]):
    return client.get(url(incident), params, headers=HX)


def inserts(response) -> list[tuple[str, int]]:
    """(where, event id) of each event a poll's answer inserts, in order."""
    return [
        (where, int(pk))
        for where, pk in re.findall(
            r'hx-swap-oob="([^"]+)"><li id="event-(\d+)"', response.content.decode()
        )
    ]


# Families and kinds ------------------------------------------------------------------------------


def test_every_kind_has_a_family_and_the_database_filter_agrees(client_as, incident):
    expected = {kind: family for family, kinds in KINDS_BY_FAMILY.items() for kind in kinds}
    for kind in TimelineEvent.Kind.values:
        expected.setdefault(kind, views.timeline_family(kind))
    assert {k: views.timeline_family(k) for k in expected} == expected
    assert {views.timeline_family(k) for k in TimelineEvent.Kind.values} == {
        f.key for f in views.TIMELINE_FAMILIES
    }
    for kind in expected:
        add(incident, kind, T0)
    client = client_as("viewer")
    for family in views.TIMELINE_FAMILIES:
        page = client.get(url(incident), {"family": family.key})
        assert sorted(shown(page)) == sorted(k for k, f in expected.items() if f == family.key)


def test_families_and_kinds_show_their_union(client_as, incident):
    one_of_each(incident)
    client = client_as("viewer")
    page = client.get(url(incident), {"family": ["alerts", "actions"]})
    assert shown(page) == [
        "alert_firing",
        "alert_resolved",
        "silence_expired",
        "action_added",
        "action_failed",
    ]
    page = client.get(url(incident), {"family": "notes", "kind": "incident_acknowledged"})
    assert shown(page) == ["incident_acknowledged", "note", "notification_failed", "slack_posted"]
    # The old single-kind filter still works.
    assert shown(client.get(url(incident), {"kind": "analysis_ready"})) == ["analysis_ready"]


def test_everything_unknown_families_and_odd_kinds(client_as, incident):
    events = one_of_each(incident)
    client = client_as("viewer")
    everything = shown(client.get(url(incident)))
    assert len(everything) == len(events)
    all_families = [f.key for f in views.TIMELINE_FAMILIES]
    page = client.get(url(incident), {"family": all_families})
    assert shown(page) == everything and not page.context["selection"].active
    page = client.get(url(incident), {"family": "bogus", "kind": "x' OR 1=1 --"})
    assert shown(page) == everything


def test_the_filter_form_works_without_js_and_swaps_the_list_with_htmx(client_as, incident):
    one_of_each(incident)
    client = client_as("viewer")
    page = client.get(url(incident), {"family": "alerts", "kind": "note"})
    html = page.content.decode()
    form = re.search(r"<form method=\"get\" action=\"([^\"]+)\"[^>]*>", html)
    assert form and form.group(1) == url(incident)
    assert f'hx-get="{url(incident)}" hx-target="#timeline"' in html
    assert 'id="family-alerts" checked' in html and 'id="family-actions">' in html
    assert 'name="kind" value="note" id="kind-note" checked' in html
    assert 'data-filter-reset aria-current="true"' not in html
    assert 'data-filter-reset aria-current="true"' in client.get(url(incident)).content.decode()

    partial = client.get(url(incident), {"family": "alerts"}, headers=HX)
    body = partial.content.decode()
    assert '<section class="card timeline-card" id="timeline"' in body
    assert "<html" not in body and "<form" not in body
    assert "HX-Request" in partial["Vary"]
    assert [e.kind for e in partial.context["page"]] == KINDS_BY_FAMILY["alerts"]

    # Going back to a pushed URL after htmx's history cache missed asks for the whole page.
    restore = client.get(
        url(incident), {"family": "alerts"}, headers={**HX, "HX-History-Restore-Request": "true"}
    )
    assert b"<html" in restore.content and b"<form" in restore.content


def test_payloads_are_shown_escaped_and_the_date_only_when_it_changes(client_as, incident):
    long_pod = "vllm-llama-3-70b-instruct-deployment-7f9c8d6b5-" + "x" * 80
    first = add(
        incident, "alert_firing", T0, labels={"pod": long_pod, "note": "<script>x</script>"}
    )
    same_day = add(incident, "note", T0 + timedelta(hours=1))
    next_day = add(incident, "note", T0 + timedelta(days=1))
    html = client_as("viewer").get(url(incident)).content.decode()
    assert long_pod in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>x</script>" not in html

    def time_of(event):
        return re.search(rf'id="event-{event.pk}".*?(<time .*?</time>)', html, re.S).group(1)

    assert 'datetime="2026-11-23T10:00:00+00:00"' in time_of(first)
    assert '<span class="date">2026-11-23</span> 10:00:00' in time_of(first)
    assert 'class="date"' not in time_of(same_day) and ">11:00:00</time>" in time_of(same_day)
    assert '<span class="date">2026-11-24</span> 10:00:00' in time_of(next_day)


# Pages and permalinks -----------------------------------------------------------------------------


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(views, "TIMELINE_PAGE_SIZE", 5)
    return 5


def test_the_newest_page_is_the_default_and_pages_keep_the_filter(client_as, incident, small_pages):
    for i in range(12):
        add(incident, "note", T0 + timedelta(minutes=i), f"note {i}")
        add(incident, "alert_firing", T0 + timedelta(minutes=i, seconds=1), f"alert {i}")
    client = client_as("viewer")
    page = client.get(url(incident), {"family": "notes"})
    # 12 notes, 5 a page: the last 2 would make a page of their own, too few for the page people
    # open, so they join the page before it (up to half a page does).
    assert page.context["page"].number == 2
    assert [e.summary for e in page.context["page"]] == [f"note {i}" for i in range(5, 12)]
    html = page.content.decode()
    assert 'href="?family=notes&amp;page=1">← earlier</a>' in html
    assert 'id="timeline-poll"' in html

    older = client.get(url(incident), {"family": "notes", "page": 1})
    assert [e.summary for e in older.context["page"]] == [f"note {i}" for i in range(5)]
    html = older.content.decode()
    assert 'href="?family=notes&amp;page=2">later →</a>' in html
    assert 'id="timeline-poll"' not in html and "Not live on an older page" in html


def test_a_permalink_opens_the_page_holding_the_event_under_a_filter(
    client_as, incident, small_pages
):
    notes = [add(incident, "note", T0 + timedelta(minutes=i), f"note {i}") for i in range(12)]
    for i in range(12):
        add(incident, "alert_firing", T0 + timedelta(minutes=i, seconds=1))
    client = client_as("viewer")
    # Unfiltered, note 4 is the 9th event (page 2); among the notes it is the 5th (page 1).
    page = client.get(url(incident), {"event": notes[4].pk})
    assert page.context["page"].number == 2
    page = client.get(url(incident), {"event": notes[4].pk, "family": "notes"})
    assert page.context["page"].number == 1
    html = page.content.decode()
    assert (
        f'id="event-{notes[4].pk}" class="event kind-note highlighted" aria-current="true"' in html
    )
    assert html.count("highlighted") == 1
    # The filter and the permalink both survive paging and a filter change.
    assert f'href="?family=notes&amp;event={notes[4].pk}&amp;page=2">' in html
    assert f'<input type="hidden" name="event" value="{notes[4].pk}">' in html


def test_a_permalinked_event_the_filter_hides_is_shown_anyway(client_as, incident, small_pages):
    alerts = [add(incident, "alert_firing", T0 + timedelta(minutes=i)) for i in range(12)]
    note = add(incident, "note", T0 + timedelta(minutes=3, seconds=30), "the linked note")
    client = client_as("viewer")
    page = client.get(url(incident), {"event": note.pk, "family": "alerts"})
    assert page.context["page"].number == 1
    events = list(page.context["page"])
    assert [e.pk for e in events] == [a.pk for a in alerts[:4]] + [note.pk]
    assert [e.pk for e in events if e.outside_filter] == [note.pk]
    html = page.content.decode()
    assert "Linked event, shown although the filter hides its kind." in html
    assert 'id="family-alerts" checked' in html  # the filter stays as it was
    # Without the permalink the note is filtered out.
    assert note.pk not in [
        e.pk for e in client.get(url(incident), {"family": "alerts"}).context["page"]
    ]


def test_an_unknown_permalinked_event_opens_the_newest_page(client_as, incident, small_pages):
    for i in range(8):  # 5 a page: pages of 5 and 3
        add(incident, "note", T0 + timedelta(minutes=i))
    page = client_as("viewer").get(url(incident), {"event": 999999})
    assert page.context["page"].number == 2
    assert "highlighted" not in page.content.decode()


def test_logging_in_from_a_permalink_comes_back_to_the_event(client, personas, incident):
    event = add(incident, "incident_opened", T0)
    link = f"{url(incident)}?event={event.pk}"
    response = client.get(link)
    assert response.status_code == 302
    login_url = response.url
    next_url = unquote(parse_qs(urlsplit(login_url).query)["next"][0])
    assert next_url == f"{link}#event-{event.pk}"
    page = client.get(login_url)
    assert f'name="next" value="{link}#event-{event.pk}"' in page.content.decode()
    login = client.post(
        login_url,
        {"username": "viewer", "password": "correct-horse-battery-staple", "next": next_url},
    )
    assert login.status_code == 302 and login.url == f"{link}#event-{event.pk}"
    landed = client.get(link)
    assert f'id="event-{event.pk}" class="event kind-incident_opened highlighted"' in (
        landed.content.decode()
    )


# Live updates -------------------------------------------------------------------------------------


def test_the_poll_answers_204_until_an_event_arrives(client_as, incident):
    first = add(incident, "incident_opened", T0)
    last = add(incident, "note", T0 + timedelta(minutes=1))
    client = client_as("viewer")
    page = client.get(url(incident))
    params = poll_params(page)
    assert params["after"] == [str(last.pk)] and params["seen"] == ["2"]
    assert params["first"] == [str(first.pk)]
    assert poll(client, incident, params).status_code == 204

    new = add(incident, "action_added", T0 + timedelta(minutes=2), "scale up")
    answer = poll(client, incident, params)
    assert answer.status_code == 200
    assert inserts(answer) == [(f"afterend:#event-{last.pk}", new.pk)]
    body = answer.content.decode()
    assert "<html" not in body and "scale up" in body
    assert f'id="event-{new.pk}" class="event kind-action_added fresh"' in body
    assert f'href="#event-{new.pk}">1 new event ↓</a>' in body
    # The poller comes back with the new cursor; asked again, nothing is new.
    params = poll_params(answer)
    assert params["after"] == [str(new.pk)] and params["seen"] == ["3"]
    assert poll(client, incident, params).status_code == 204


def test_the_poll_places_an_event_after_the_one_it_follows(client_as, incident):
    """Alert events carry the alert's start time, so a new one may belong mid-page."""
    a = add(incident, "incident_opened", T0)
    b = add(incident, "analysis_ready", T0 + timedelta(minutes=5))
    c = add(incident, "note", T0 + timedelta(minutes=9))
    client = client_as("viewer")
    params = poll_params(client.get(url(incident)))
    late_alert = add(incident, "alert_firing", T0 + timedelta(minutes=1))
    newest = add(incident, "note", T0 + timedelta(minutes=10))
    also_late = add(incident, "alert_firing", T0 + timedelta(minutes=1, seconds=30))
    answer = poll(client, incident, params)
    assert inserts(answer) == [
        (f"afterend:#event-{a.pk}", late_alert.pk),
        (f"afterend:#event-{late_alert.pk}", also_late.pk),
        (f"afterend:#event-{c.pk}", newest.pk),
    ]
    assert b.pk not in [pk for _, pk in inserts(answer)]


def test_the_poll_keeps_the_filter_and_the_highlight(client_as, incident):
    opened = add(incident, "incident_opened", T0)
    alert = add(incident, "alert_firing", T0 + timedelta(minutes=1))
    client = client_as("viewer")
    page = client.get(url(incident), {"family": "alerts", "event": opened.pk})
    params = poll_params(page)
    assert params["family"] == ["alerts"] and params["event"] == [str(opened.pk)]
    add(incident, "note", T0 + timedelta(minutes=2))  # filtered out
    answer = poll(client, incident, params)
    assert answer.status_code == 200 and inserts(answer) == []
    params = poll_params(answer)
    assert poll(client, incident, params).status_code == 204
    new_alert = add(incident, "alert_resolved", T0 + timedelta(minutes=3))
    answer = poll(client, incident, params)
    assert inserts(answer) == [(f"afterend:#event-{alert.pk}", new_alert.pk)]
    assert poll_params(answer)["event"] == [str(opened.pk)]


def test_the_poll_skips_events_that_belong_on_an_earlier_page(client_as, incident, small_pages):
    events = [add(incident, "note", T0 + timedelta(minutes=i)) for i in range(8)]
    client = client_as("viewer")
    page = client.get(url(incident))
    assert page.context["page"].number == 2
    params = poll_params(page)
    assert params["first"] == [str(events[5].pk)]
    add(incident, "alert_firing", T0 + timedelta(minutes=1, seconds=1))  # page 1's time
    answer = poll(client, incident, params)
    assert answer.status_code == 200 and inserts(answer) == []


def test_the_first_event_replaces_the_empty_list(client_as, incident):
    client = client_as("viewer")
    page = client.get(url(incident))
    assert 'id="timeline-empty"' in page.content.decode()
    params = poll_params(page)
    assert params["after"] == ["0"] and "first" not in params
    event = add(incident, "incident_opened", T0)
    answer = poll(client, incident, params)
    assert inserts(answer) == [("afterbegin:#timeline-events", event.pk)]
    assert '<div id="timeline-empty" hx-swap-oob="delete"></div>' in answer.content.decode()
    assert poll_params(answer)["first"] == [str(event.pk)]


def test_a_late_commit_below_the_cursor_re_renders_the_list(client_as, incident):
    add(incident, "incident_opened", T0)
    doomed = add(incident, "note", T0 + timedelta(minutes=1))
    add(incident, "note", T0 + timedelta(minutes=2))
    client = client_as("viewer")
    params = poll_params(client.get(url(incident)))
    doomed.delete()  # the same as an event committed late with a lower id: the count moved
    answer = poll(client, incident, params)
    assert answer.status_code == 200
    assert answer["HX-Retarget"] == "#timeline" and answer["HX-Reswap"] == "outerHTML"
    assert '<section class="card timeline-card" id="timeline"' in answer.content.decode()
    assert len(answer.context["page"]) == 2


def test_odd_numbers_in_the_query_string_are_ignored_or_refused(client_as, incident):
    add(incident, "note", T0)
    client = client_as("viewer")
    for odd in ("x", "²", "-1", "9" * 40):
        page = client.get(url(incident), {"event": odd, "page": odd})
        assert page.status_code == 200 and page.context["highlighted"] is None
        assert client.get(url(incident), {"after": odd, "seen": "1"}, headers=HX).status_code == 400
    assert client.get(url(incident), {"after": "1"}, headers=HX).status_code == 400


def test_the_poll_needs_the_same_rights_as_the_page(client_as, incident):
    params = {"after": "0", "seen": "0"}
    assert client_as("outsider").get(url(incident), params, headers=HX).status_code == 403
    # A session that ran out sends the whole page (not the poller) to the login page.
    page = f"http://testserver{url(incident)}?family=alerts"
    expired = client_as("anonymous").get(
        url(incident), params, headers={**HX, "HX-Current-URL": page}
    )
    assert expired.status_code == 200
    assert expired["HX-Redirect"] == "/accounts/login/?next=" + quote(
        f"{url(incident)}?family=alerts", safe="/"
    )
    assert (
        client_as("viewer").get("/incidents/999999/timeline", params, headers=HX).status_code == 404
    )


# Query counts ------------------------------------------------------------------------------------


def _queries(client, path, params=None, headers=None) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path, params or {}, headers=headers or {})
    assert response.status_code in (200, 204)
    return len(queries)


def test_query_counts_do_not_grow_with_the_events(
    client_as, incident, django_assert_max_num_queries
):
    client = client_as("viewer")
    for i in range(3):
        add(incident, "note", T0 + timedelta(minutes=i), labels={"i": i})
    few = {
        "page": _queries(client, url(incident)),
        "filtered": _queries(client, url(incident), {"family": ["notes", "alerts"]}),
        "permalink": _queries(client, url(incident), {"event": incident.timeline.first().pk}),
        "htmx": _queries(client, url(incident), {"family": "notes"}, HX),
    }
    TimelineEvent.objects.bulk_create(
        TimelineEvent(
            incident=incident,
            kind=["note", "alert_firing", "analysis_edited"][i % 3],
            at=T0 + timedelta(minutes=10 + i),
            actor="vigil",
            summary=f"event {i}",
            payload={"analysis": 1, "previous_revision": 1, "revision": 2},
        )
        for i in range(120)
    )
    many = {
        "page": _queries(client, url(incident)),
        "filtered": _queries(client, url(incident), {"family": ["notes", "alerts"]}),
        "permalink": _queries(client, url(incident), {"event": incident.timeline.first().pk}),
        "htmx": _queries(client, url(incident), {"family": "notes"}, HX),
    }
    assert many == few
    # Session, user, permissions (2), incident, cursor, count, page; a permalink adds 2.
    with django_assert_max_num_queries(8):
        client.get(url(incident), {"family": "notes"})
    oldest = incident.timeline.first().pk
    with django_assert_max_num_queries(10):
        client.get(url(incident), {"event": oldest, "family": "notes"})

    params = poll_params(client.get(url(incident)))
    # Session, user, permissions (2), incident, one aggregate.
    with django_assert_max_num_queries(6):
        assert poll(client, incident, params).status_code == 204
    TimelineEvent.objects.bulk_create(
        TimelineEvent(
            incident=incident,
            kind="note",
            at=T0 + timedelta(hours=5, minutes=i),
            actor="v",
            summary="s",
        )
        for i in range(40)
    )
    # And the new events, the page's first event, the page's (time, id) pairs.
    with django_assert_max_num_queries(9):
        answer = poll(client, incident, params)
    assert len(inserts(answer)) == 40


def test_a_permalink_into_the_remainder_opens_the_newest_page(client_as, incident, small_pages):
    """12 events, 5 a page: the 11th and 12th are on page 2 (which holds the remainder), not on
    a page 3 that does not exist."""
    notes = [add(incident, "note", T0 + timedelta(minutes=i), f"note {i}") for i in range(12)]
    page = client_as("viewer").get(url(incident), {"event": notes[11].pk})
    assert page.context["page"].number == 2
    assert page.context["highlighted"] == notes[11].pk
    assert f'id="event-{notes[11].pk}" class="event kind-note highlighted"' in (
        page.content.decode()
    )

"""The timeline on a phone, as someone following a Slack link at 3 a.m. meets it.

Logged out, they open an event's permalink, log in, and land on that event, highlighted and in
view; the page never scrolls sideways; a filter chip swaps the list without a reload; new events
arrive while they read, without moving what they are looking at; the CSP is never violated.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

import pytest

from tests.conftest import PASSWORD
from tests.e2e.browser import LIVE_TIMEOUT_MS, PageWatch, launch_chromium
from tests.e2e.test_browser import count_navigations, post_alert
from tests.incidents.payloads import firing, group

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
LONG_POD = "vllm-llama-3-70b-instruct-deployment-7f9c8d6b5-abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class Story:
    url: str
    incident_id: int
    linked_id: int  # the event the Slack message announced
    after_id: int  # an event early on the page, for a late alert to follow
    payload_id: int  # an event with a long JSON payload


def orm(fn):
    """Run `fn` against the database in a thread of its own, and close its connection.

    While Playwright's sync API runs, this thread has an event loop and Django refuses the ORM
    here (see tests/e2e/test_browser.py), so events made during the test are made there.
    """
    from django.db import connections

    outcome: dict = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # re-raised below, in the test's thread
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def add_event(incident_id: int, kind: str, summary: str, *, at=None, **payload) -> int:
    from django.utils import timezone

    from incidents.models import TimelineEvent

    return orm(
        lambda: (
            TimelineEvent.objects.create(
                incident_id=incident_id,
                kind=kind,
                at=at or timezone.now(),
                actor="vigil",
                summary=summary,
                payload=payload,
            ).pk
        )
    )


@pytest.fixture
def story(live_server, personas, am_token) -> Story:
    """An incident with forty events of every family, made before Playwright starts."""
    from django.utils import timezone

    from incidents.models import TimelineEvent

    incident_id = post_alert(
        live_server.url,
        am_token,
        group(firing("VLLMKVCacheUtilisationCriticallyHighOnEveryReplica", pod=LONG_POD)),
    )
    base = timezone.now() - timedelta(hours=1)
    kinds = ["collection_finished", "analysis_ready", "action_added", "note", "alert_resolved"]
    events = TimelineEvent.objects.bulk_create(
        TimelineEvent(
            incident_id=incident_id,
            kind=kinds[i % len(kinds)],
            at=base + timedelta(seconds=30 * i),
            actor="vigil",
            summary=f"step {i} on https://grafana.example.com/d/{'a' * 60}?var-pod={LONG_POD}",
            payload={"labels": {"pod": LONG_POD, "url": "https://x.example/" + "y" * 120}, "i": i},
        )
        for i in range(40)
    )
    linked = next(e for e in events[24:] if e.kind == "note")
    return Story(live_server.url, incident_id, linked.pk, events[5].pk, events[3].pk)


@pytest.fixture
def phone(story):
    """(page, watch) in a fresh phone-sized, touch context with no cookies."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            context.set_default_timeout(LIVE_TIMEOUT_MS)
            page = context.new_page()
            watch = PageWatch()
            watch.attach(context, page)
            yield page, watch
        finally:
            browser.close()


def assert_no_sideways_scroll(page, where: str) -> None:
    widths = page.evaluate(
        "({scroll: document.documentElement.scrollWidth,"
        " client: document.documentElement.clientWidth})"
    )
    assert widths["client"] == PHONE["width"], widths
    assert widths["scroll"] <= widths["client"], f"{where} scrolls sideways on a phone: {widths}"


def top_of(page, selector: str) -> float:
    return page.evaluate(f"document.querySelector('{selector}').getBoundingClientRect().top")


def order(page) -> list[int]:
    return page.evaluate(
        "[...document.querySelectorAll('#timeline-events > li.event')].map(e => +e.id.slice(6))"
    )


def test_a_slack_link_on_a_phone_lands_on_the_event_and_stays_live(story, phone):
    from playwright.sync_api import expect

    page, watch = phone
    base, incident_id, linked = story.url, story.incident_id, story.linked_id
    permalink = f"/incidents/{incident_id}/timeline?event={linked}#event-{linked}"

    # Logged out: the login page keeps the event, fragment included, for afterwards.
    page.goto(f"{base}{permalink}")
    assert "/accounts/login/?next=" in page.url
    assert quote(f"#event-{linked}", safe="") in page.url
    assert_no_sideways_scroll(page, "the login page")
    page.fill("input[name=username]", "responder")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.locator("form[action$='/accounts/login/'] button[type=submit]").tap()
    page.wait_for_url(f"**{permalink}")

    event = page.locator(f"#event-{linked}")
    expect(event).to_have_class(re.compile(r"\bhighlighted\b"))
    expect(event).to_have_attribute("aria-current", "true")
    expect(event).to_be_in_viewport()
    expect(page.locator(".timeline .event.highlighted")).to_have_count(1)
    assert page.evaluate("window.scrollY") > 0, "the event should have needed a scroll"
    assert_no_sideways_scroll(page, "the timeline")

    # Long payloads wrap or scroll inside their own box.
    details = page.locator(f"#event-{story.payload_id} details.payload")
    details.locator("summary").tap()
    expect(details.locator("pre")).to_contain_text(LONG_POD)
    assert_no_sideways_scroll(page, "the timeline with a payload open")
    event.scroll_into_view_if_needed()
    page.evaluate("window.__marker = 1")
    navigations = count_navigations(page)
    expect(page.locator("#timeline-poll")).to_contain_text("Live")

    # Live: a new event at the end, and a late alert that belongs near the top of the page.
    highlighted_top = top_of(page, ".event.highlighted")
    scroll_y = page.evaluate("window.scrollY")
    newest = add_event(incident_id, "note", "Paged the model-serving on-call")
    expect(page.locator(f"#event-{newest}")).to_be_attached(timeout=LIVE_TIMEOUT_MS)
    expect(page.locator(f"#event-{newest}")).to_contain_text("Paged the model-serving on-call")
    expect(page.locator("#timeline-poll")).to_contain_text("1 new event")
    assert order(page)[-1] == newest
    assert page.evaluate("window.scrollY") == scroll_y
    assert abs(top_of(page, ".event.highlighted") - highlighted_top) < 2
    expect(page.locator(".timeline .event.highlighted")).to_have_count(1)
    expect(details).to_have_attribute("open", "")  # nothing was re-rendered under the reader

    from incidents.models import TimelineEvent

    after_at = orm(lambda: TimelineEvent.objects.get(pk=story.after_id).at)
    late = add_event(
        incident_id,
        "alert_firing",
        "GPUXid firing (node=gpu-7)",
        at=after_at + timedelta(seconds=1),
    )
    expect(page.locator(f"#event-{late}")).to_be_attached(timeout=LIVE_TIMEOUT_MS)
    ids = order(page)
    assert ids[ids.index(story.after_id) + 1] == late
    assert abs(top_of(page, ".event.highlighted") - highlighted_top) < 2, "the reader was moved"
    expect(event).to_be_in_viewport()
    assert page.evaluate("window.__marker") == 1 and navigations == []

    # A filter chip swaps the list, not the page; the linked event stays, marked as outside it.
    page.evaluate("window.scrollTo(0, 0)")
    expect(page.locator(".timeline-filters .apply")).to_be_hidden()  # JS submits on change
    page.locator("label[for=family-alerts]").tap()
    page.wait_for_url(re.compile(r"[?&]family=alerts\b"))
    expect(page.locator(f"#event-{newest}")).to_have_count(0)
    events = page.locator("#timeline-events > li.event")
    kinds = {
        cls.split()[1]
        for cls in page.eval_on_selector_all(
            "#timeline-events > li.event:not(.highlighted)", "els => els.map(e => e.className)"
        )
    }
    assert kinds <= {"kind-alert_firing", "kind-alert_resolved"} and kinds, kinds
    expect(event).to_have_class(re.compile(r"\bhighlighted\b"))
    expect(event.locator(".outside-filter")).to_be_visible()
    expect(page.locator("[data-filter-reset]")).not_to_have_attribute("aria-current", "true")
    assert f"event={linked}" in page.url
    assert page.evaluate("window.__marker") == 1, "the filter reloaded the page"
    assert_no_sideways_scroll(page, "the filtered timeline")

    # Still live under the filter: an alert arrives, a note does not.
    count = events.count()
    hidden_note = add_event(incident_id, "note", "not an alert")
    alert = add_event(incident_id, "alert_firing", "KVCacheHigh firing (pod=vllm-9)")
    expect(page.locator(f"#event-{alert}")).to_be_attached(timeout=LIVE_TIMEOUT_MS)
    expect(events).to_have_count(count + 1)
    expect(page.locator(f"#event-{hidden_note}")).to_have_count(0)

    # "Everything" brings every family back and clears the chips.
    page.locator("[data-filter-reset]").tap()
    expect(page.locator(f"#event-{hidden_note}")).to_be_attached()
    expect(page.locator("#family-alerts")).not_to_be_checked()
    expect(page.locator("[data-filter-reset]")).to_have_attribute("aria-current", "true")
    assert page.evaluate("window.__marker") == 1
    assert_no_sideways_scroll(page, "the timeline after the filter was cleared")
    watch.assert_clean()

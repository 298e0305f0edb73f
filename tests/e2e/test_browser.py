"""The pages in a real browser: live updates over htmx, actions, permalinks, CSP, a phone screen."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
import requests

from tests.conftest import PASSWORD
from tests.e2e.browser import LIVE_TIMEOUT_MS, PageWatch, launch_chromium, login
from tests.incidents.payloads import firing, group

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@dataclass(frozen=True)
class Site:
    url: str
    token: str


@pytest.fixture
def site(live_server, personas, am_token) -> Site:
    """The live server, with the personas and an Alertmanager token in the database.

    Everything the tests need from the ORM happens here, before Playwright starts: Playwright's
    sync API keeps an asyncio loop running in this thread, and while it does, Django refuses sync
    ORM calls, and asgiref (which keys Django's connections by context) hands out a second
    connection, one pytest-django never closes. So the browser closes before pytest-django's
    flush, and the test body asks the pages, not the ORM.
    """
    return Site(url=live_server.url, token=am_token)


@pytest.fixture
def open_page(site):
    """open_page(viewport=None) -> (page, watch): a fresh context (no cookies) per call."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:

            def make(viewport: dict | None = None):
                context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
                context.set_default_timeout(LIVE_TIMEOUT_MS)
                page = context.new_page()
                watch = PageWatch()
                watch.attach(context, page)
                return page, watch

            yield make
        finally:
            browser.close()


def post_alert(base_url: str, token: str, payload: dict) -> int:
    """Deliver one notification over HTTP, as Alertmanager does; the incident's id."""
    response = requests.post(
        f"{base_url}/hooks/alertmanager",
        data=json.dumps(payload),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    (incident_id,) = response.json()["incidents"]
    return incident_id


def count_navigations(page) -> list[str]:
    """Every main-frame navigation from now on (an htmx swap is none)."""
    navigations: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )
    return navigations


def test_a_responder_sees_a_new_incident_arrive_and_acknowledges_it(site, open_page):
    from playwright.sync_api import expect

    base = site.url
    page, watch = open_page()
    login(page, base, "responder", PASSWORD)

    # The list is open before the alert fires; the row must arrive through the 3s poll.
    expect(page.locator("#incident-rows")).to_be_attached()
    page.evaluate("window.__marker = 1")
    navigations = count_navigations(page)
    incident_id = post_alert(base, site.token, group(firing("E2EQueueBacklog", pod="vllm-e2e-0")))
    row = page.locator(f"#incident-{incident_id}")
    expect(row).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(row).to_contain_text("E2EQueueBacklog summary")
    expect(row.locator(".badge.status-open")).to_have_text("open")
    assert page.evaluate("window.__marker") == 1, "the list reloaded instead of swapping rows"
    assert navigations == []
    assert page.url == f"{base}/incidents/"

    # The incident page: acknowledge through the htmx button.
    with page.expect_navigation():
        row.locator(f"a[href='/incidents/{incident_id}/']").click()
    assert page.url == f"{base}/incidents/{incident_id}/"
    expect(page.locator("#incident-status")).to_have_text("open")
    page.evaluate("window.__marker = 2")
    navigations = count_navigations(page)
    page.locator("#incident-live button[data-action='acknowledge']").click()
    expect(page.locator("#incident-status")).to_have_text("acknowledged")
    acknowledged = page.locator("#incident-live .timeline .event.kind-incident_acknowledged")
    expect(acknowledged).to_have_count(1)
    expect(acknowledged.locator(".actor")).to_have_text("by responder")
    expect(page.locator("#incident-live button[data-action='acknowledge']")).to_have_count(0)
    assert page.evaluate("window.__marker") == 2, "acknowledging reloaded the page"
    assert navigations == []

    expect(acknowledged).to_have_attribute("id", re.compile(r"^event-\d+$"))
    event_id = int(acknowledged.get_attribute("id").removeprefix("event-"))

    # The full timeline: the event carries its permalink.
    with page.expect_navigation():
        page.locator("#incident-live a[href$='/timeline']").click()
    assert page.url == f"{base}/incidents/{incident_id}/timeline"
    item = page.locator(f"#event-{event_id}")
    expect(item).to_contain_text("by responder")
    expect(item).not_to_have_class(re.compile(r"\bhighlighted\b"))
    permalink = item.locator("a.permalink")
    expect(permalink).to_have_attribute(
        "href", f"/incidents/{incident_id}/timeline?event={event_id}#event-{event_id}"
    )

    # Following the permalink (and opening the bare ?event= link, as after a login redirect)
    # highlights the event and only that one.
    permalink.click()
    page.wait_for_url(f"**/incidents/{incident_id}/timeline?event={event_id}#event-{event_id}")
    expect(page.locator(f"#event-{event_id}")).to_have_class(re.compile(r"\bhighlighted\b"))
    page.goto(f"{base}/incidents/{incident_id}/timeline?event={event_id}")
    expect(page.locator(f"#event-{event_id}")).to_have_class(re.compile(r"\bhighlighted\b"))
    expect(page.locator(".timeline .event.highlighted")).to_have_count(1)
    expect(page.locator(f"#event-{event_id}")).to_be_in_viewport()

    watch.assert_clean()


def test_a_viewer_sees_the_incident_but_no_action_buttons(site, open_page):
    from playwright.sync_api import expect

    base = site.url
    incident_id = post_alert(base, site.token, group(firing("E2EViewerOnly")))
    page, watch = open_page()
    login(page, base, "viewer", PASSWORD)
    expect(page.locator(f"#incident-{incident_id}")).to_be_visible()

    page.goto(f"{base}/incidents/{incident_id}/")
    expect(page.locator("#incident-status")).to_have_text("open")
    expect(page.locator("#incident-live .timeline .event")).not_to_have_count(0)
    expect(page.locator("[data-action]")).to_have_count(0)
    expect(page.locator("[hx-post]")).to_have_count(0)
    expect(page.locator("#incident-live .actions")).to_have_count(0)
    watch.assert_clean()


def test_the_timeline_fits_a_phone_screen(site, open_page):
    from playwright.sync_api import expect

    base = site.url
    # Long unbroken label values and names are what push a narrow page sideways.
    payload = group(
        firing(
            "VLLMKVCacheUtilisationCriticallyHighOnEveryReplica",
            pod="vllm-llama-3-70b-instruct-deployment-7f9c8d6b5-abcdefghijklmnop",
            service="inference-gateway-with-an-uncommonly-long-service-name",
        )
    )
    incident_id = post_alert(base, site.token, payload)
    page, watch = open_page(viewport={"width": 375, "height": 740})
    login(page, base, "responder", PASSWORD)

    for path in (f"/incidents/{incident_id}/timeline", f"/incidents/{incident_id}/"):
        page.goto(f"{base}{path}")
        expect(page.locator(".timeline .event").first).to_be_visible()
        widths = page.evaluate(
            "({scroll: document.documentElement.scrollWidth,"
            " client: document.documentElement.clientWidth})"
        )
        assert widths["client"] == 375
        assert widths["scroll"] <= widths["client"], f"{path} scrolls sideways on a phone: {widths}"
    watch.assert_clean()

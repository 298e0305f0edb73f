"""A Slack button, followed on a phone: log in, land on the announced event, highlighted.

The URL comes from what Vigil posted to the Slack stand-in (the real slack_sdk client sent it),
not from a template: whatever Slack would show is what the browser opens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from django.test import Client

from tests.conftest import PASSWORD
from tests.e2e.browser import LIVE_TIMEOUT_MS, PageWatch, launch_chromium
from tests.incidents.payloads import firing, group, post
from tests.incidents.slack_support import configure, event_of, ready_analysis
from tests.slack_standin import SlackStandin

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


@dataclass(frozen=True)
class Posted:
    base: str
    incident_id: int
    event_id: int
    button_url: str


@pytest.fixture
def posted(live_server, personas, am_token, settings) -> Posted:
    """An incident with a long timeline, announced to the stand-in; the analysis reply's button.

    All ORM work happens here, before Playwright starts (see tests/e2e/test_browser.py).
    """
    from incidents import slack
    from incidents.models import Incident, TimelineEvent

    with SlackStandin() as standin:
        configure(settings, standin)
        settings.VIGIL_BASE_URL = live_server.url
        # Many alerts: the announced event sits far below the first screen of a phone.
        alerts = [
            firing("SlackPhoneQueueBacklog", pod=f"vllm-llama-3-70b-instruct-7f9c8d6b5-{n:02d}")
            for n in range(18)
        ]
        assert post(Client(), group(*alerts), am_token).status_code == 200
        incident = Incident.objects.get()
        slack.announce(event_of(incident, TimelineEvent.Kind.INCIDENT_OPENED).pk)
        _, ready = ready_analysis(incident)
        slack.announce(ready.pk)
        reply = standin.calls("chat.postMessage")[1]
        (button,) = reply.json["blocks"][-1]["elements"]
        assert button["text"]["text"] == "Review"
        return Posted(live_server.url, incident.pk, ready.pk, button["url"])


def test_a_slack_button_lands_on_its_event_after_login_on_a_phone(posted):
    from playwright.sync_api import expect, sync_playwright

    base, incident_id, event_id = posted.base, posted.incident_id, posted.event_id
    assert posted.button_url == (
        f"{base}/incidents/{incident_id}/timeline?event={event_id}#event-{event_id}"
    )
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            context.set_default_timeout(LIVE_TIMEOUT_MS)
            page = context.new_page()
            watch = PageWatch()
            watch.attach(context, page)

            # Logged out: the login page, remembering where the button pointed.
            page.goto(posted.button_url)
            assert page.url.startswith(f"{base}/accounts/login/?next=")
            assert f"event%3D{event_id}" in page.url or f"event={event_id}" in page.url
            page.fill("input[name=username]", "viewer")
            page.fill("input[name=password]", PASSWORD)
            with page.expect_navigation():
                page.click("form[action$='/accounts/login/'] button[type=submit]")

            assert re.match(
                rf"^{re.escape(base)}/incidents/{incident_id}/timeline\?event={event_id}(#.*)?$",
                page.url,
            ), page.url
            item = page.locator(f"#event-{event_id}")
            expect(item).to_have_class(re.compile(r"\bhighlighted\b"))
            expect(page.locator(".timeline .event.highlighted")).to_have_count(1)
            expect(item).to_be_in_viewport()
            expect(item).to_contain_text("Analysis ready")
            # Far below the first screen: it is in view because the page went to it.
            assert page.evaluate("window.scrollY") > PHONE["height"]

            widths = page.evaluate(
                "({scroll: document.documentElement.scrollWidth,"
                " client: document.documentElement.clientWidth})"
            )
            assert widths["client"] == PHONE["width"]
            assert widths["scroll"] <= widths["client"], f"the page scrolls sideways: {widths}"
            watch.assert_clean()
        finally:
            browser.close()

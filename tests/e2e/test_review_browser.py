"""The analysis review in a real browser: edit the summary over htmx, approve, see the timeline."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from tests.conftest import PASSWORD
from tests.e2e.browser import PageWatch, launch_chromium, login
from tests.e2e.test_browser import count_navigations, post_alert
from tests.incidents.payloads import firing, group

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@dataclass(frozen=True)
class Reviewable:
    url: str
    incident_id: int
    analysis_id: int
    evidence_id: int


@pytest.fixture
def reviewable(live_server, personas, am_token) -> Reviewable:
    """An incident with evidence and a ready rule-based draft, all made before Playwright starts
    (see tests/e2e/test_browser.py: no ORM calls while its event loop runs)."""
    from assistant.models import Analysis
    from collectors.models import Evidence
    from incidents.models import Incident
    from tests.assistant.review_support import make_analysis

    incident_id = post_alert(live_server.url, am_token, group(firing("E2EReview", pod="p-1")))
    incident = Incident.objects.get(pk=incident_id)
    evidence = Evidence.objects.create(
        incident=incident,
        collector="kubernetes",
        kind="pod_status",
        title="pod p-1",
        entity_kind="Pod",
        entity_namespace="llm",
        entity_name="p-1",
        data={"phase": "Running"},
    )
    analysis = make_analysis(incident, "Most likely oom-killed of Deployment llm/chat-api (90%).")
    assert Analysis.objects.filter(incident=incident).count() == 1
    return Reviewable(live_server.url, incident_id, analysis.pk, evidence.pk)


def test_a_responder_edits_the_summary_and_approves_it(reviewable):
    from playwright.sync_api import expect, sync_playwright

    base, incident_id = reviewable.url, reviewable.incident_id
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(15_000)
            page = context.new_page()
            watch = PageWatch()
            watch.attach(context, page)
            login(page, base, "responder", PASSWORD)
            page.goto(f"{base}/incidents/{incident_id}/")
            card = page.locator("#analysis")
            expect(card.locator(".badge.review-draft")).to_have_text("draft")
            expect(card.locator(".badge.source-rules")).to_have_text("Rule-based")
            page.evaluate("window.__marker = 1")
            navigations = count_navigations(page)

            # Edit: the form arrives over htmx holding the current markdown.
            card.locator("[data-action='edit-summary']").click()
            textarea = page.locator("#analysis textarea[name='text']")
            expect(textarea).to_have_value(re.compile(r"^Most likely oom-killed"))
            textarea.fill(
                f"**Node** gpu-7 lost its GPU; see [#{reviewable.evidence_id}].\n\n"
                "<script>window.__pwned = 1</script>"
            )
            page.locator("#analysis [data-action='save-summary']").click()
            summary = page.locator("#analysis .summary")
            expect(summary.locator("strong")).to_have_text("Node")
            citation = summary.locator("a.evidence-ref")
            expect(citation).to_have_attribute("href", f"#evidence-{reviewable.evidence_id}")
            expect(summary).to_contain_text("<script>window.__pwned = 1</script>")
            assert page.evaluate("window.__pwned") is None
            expect(page.locator("#analysis .versions-link")).to_have_text("v2 · history")
            expect(page.locator("#analysis textarea")).to_have_count(0)

            # Approve the edited version.
            page.locator("#analysis [data-action='approve-analysis']").click()
            expect(page.locator("#analysis .badge.review-approved")).to_contain_text(
                "approved by responder"
            )
            expect(page.locator("#analysis [data-action='approve-analysis']")).to_have_count(0)
            assert page.evaluate("window.__marker") == 1, "a review step reloaded the page"
            assert navigations == []

            # The citation leads to the evidence panel on the same page.
            page.locator("#analysis .summary a.evidence-ref").click()
            page.wait_for_url(f"**/incidents/{incident_id}/#evidence-{reviewable.evidence_id}")
            expect(page.locator(f"#evidence-{reviewable.evidence_id}")).to_be_attached()

            # Both steps are on the timeline with their actor.
            page.goto(f"{base}/incidents/{incident_id}/timeline")
            edited = page.locator(".timeline .event.kind-analysis_edited")
            approved = page.locator(".timeline .event.kind-analysis_approved")
            expect(edited).to_have_count(1)
            expect(approved).to_have_count(1)
            expect(edited.locator(".actor")).to_have_text("by responder")
            expect(approved.locator(".actor")).to_have_text("by responder")
            expect(edited).to_contain_text("responder edited the summary (v1 → v2")
            expect(approved).to_contain_text("responder approved the analysis (v2)")

            # The diff link from the timeline shows what changed, escaped.
            with page.expect_navigation():
                edited.locator("a.diff-link").click()
            expect(page.locator(".diff-add").first).to_be_visible()
            expect(page.locator("#compare-result")).to_contain_text("v1 → v2")
            watch.assert_clean()
        finally:
            browser.close()


def test_the_review_fits_a_phone_screen(reviewable):
    from playwright.sync_api import expect, sync_playwright

    base, incident_id = reviewable.url, reviewable.incident_id
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport={"width": 375, "height": 740})
            context.set_default_timeout(15_000)
            page = context.new_page()
            watch = PageWatch()
            watch.attach(context, page)
            login(page, base, "responder", PASSWORD)
            for path in (
                f"/incidents/{incident_id}/",
                f"/incidents/{incident_id}/analyses/{reviewable.analysis_id}/versions",
            ):
                page.goto(f"{base}{path}")
                expect(page.locator(".review-state").first).to_be_visible()
                widths = page.evaluate(
                    "({scroll: document.documentElement.scrollWidth,"
                    " client: document.documentElement.clientWidth})"
                )
                assert widths["scroll"] <= widths["client"], f"{path} scrolls sideways: {widths}"
            page.goto(f"{base}/incidents/{incident_id}/")
            page.locator("[data-action='reject-analysis']").click()
            expect(page.locator("#analysis textarea[name='reason']")).to_be_visible()
            widths = page.evaluate(
                "({scroll: document.documentElement.scrollWidth,"
                " client: document.documentElement.clientWidth})"
            )
            assert widths["scroll"] <= widths["client"], (
                f"the reject form scrolls sideways: {widths}"
            )
            watch.assert_clean()
        finally:
            browser.close()

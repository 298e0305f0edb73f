"""Issue 8's "done when" in a real browser: a replayed bad deploy, previewed, approved, rolled back.

scenarios/01-bad-deploy.yaml is replayed into the live server (ReplayWorld: its Kubernetes
stand-in is the incident's cluster); the real Celery worker collects, analyses and, once an
approver approves, executes. In chromium an approver previews the assistant's rollout-undo (the
diff shows the image going back), a responder finds no Approve button and gets 403 posting the
approve URL anyway, the approver approves and the card turns succeeded without a reload; the
stand-in received exactly one write that was not a dry run, the rollback PATCH, and the audit
page shows every step with the request. Four eyes is on: the assistant's proposal has no human
proposer, so any approver may approve it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from assistant.models import ActionEvent, ActionProposal, Analysis
from replay.scenario import load_scenario
from replay.world import ReplayWorld
from tests.conftest import PASSWORD
from tests.e2e.browser import PageWatch, launch_chromium, login
from tests.e2e.test_browser import count_navigations
from tests.support import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT = 90
OLD_IMAGE = "registry.acme.internal/ml/chat-api-vllm:v0.6.3-r41"
NEW_IMAGE = "registry.acme.internal/ml/chat-api-vllm:v0.6.4-r42"
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/llm/deployments/chat-api"


@dataclass(frozen=True)
class Replayed:
    base: str
    incident_id: int
    action_id: int
    world: ReplayWorld


def _rollback(incident_id: int) -> ActionProposal | None:
    analysis = Analysis.objects.filter(incident_id=incident_id, status="ready").first()
    if analysis is None:
        return None
    return analysis.actions.filter(action="rollout-undo").first()


@pytest.fixture
def replayed(celery_worker_process, live_server, personas, settings, monkeypatch):
    """The scenario delivered and analysed by the worker; everything from the ORM happens here,
    before Playwright starts (tests/e2e/test_browser.py says why)."""
    monkeypatch.delenv("VIGIL_LLM", raising=False)
    settings.VIGIL_LLM = ""
    settings.VIGIL_FOUR_EYES = True
    worker_log = celery_worker_process[1]
    scenario = load_scenario(ROOT / "scenarios" / "01-bad-deploy.yaml")
    with ReplayWorld(scenario, with_metrics=False) as world:
        (incident_id,) = world.deliver(live_server.url).incident_ids
        proposal = wait_for(
            lambda: _rollback(incident_id),
            timeout=WORKER_TIMEOUT,
            message=f"the rollout-undo proposal; worker log:\n{worker_log.read_text()[-3000:]}",
        )
        assert proposal.target == {"kind": "Deployment", "namespace": "llm", "name": "chat-api"}
        assert proposal.proposed_by is None
        world.kube.requests.clear()  # from here on: only what the actions send
        yield Replayed(live_server.url, incident_id, proposal.pk, world)


def test_an_approver_previews_and_approves_the_rollback_and_a_responder_cannot(replayed):
    from playwright.sync_api import expect, sync_playwright

    base, incident_id, action_id = replayed.base, replayed.incident_id, replayed.action_id
    card_selector = f"#action-{action_id}"
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            approver_context = browser.new_context(viewport={"width": 1280, "height": 900})
            approver_context.set_default_timeout(15_000)
            page = approver_context.new_page()
            watch = PageWatch()
            watch.attach(approver_context, page)
            login(page, base, "approver", PASSWORD)
            page.goto(f"{base}/incidents/{incident_id}/")
            page.evaluate("window.__marker = 1")
            navigations = count_navigations(page)
            card = page.locator(card_selector)
            expect(card.locator(".action-status")).to_have_text("proposed")
            expect(card).to_contain_text("proposed by the assistant")
            expect(page.locator(".approval-rule")).to_contain_text(
                "Nothing runs without an approver's approval"
            )

            # Preview: a server-side dry run; the diff takes the image back to revision 11.
            card.locator("[data-action='preview-action']").click()
            card = page.locator(card_selector)
            expect(card.locator(".action-status")).to_have_text("previewed")
            expect(card.locator(".diff-add", has_text=OLD_IMAGE)).to_have_count(1)
            expect(card.locator(".diff-del", has_text=NEW_IMAGE)).to_have_count(1)
            card.locator(".preview-requests summary").click()
            expect(card.locator(".preview-requests .request-line")).to_contain_text(
                f"PATCH {DEPLOYMENT_PATH}"
            )
            sent = list(replayed.world.kube.requests)
            assert sent and all(r.dry_run for r in sent), "the preview changed something"

            # A responder sees the card but no Approve button, and posting anyway is refused.
            responder_context = browser.new_context(viewport={"width": 1280, "height": 900})
            responder_context.set_default_timeout(15_000)
            other = responder_context.new_page()
            other_watch = PageWatch()
            other_watch.attach(responder_context, other)
            login(other, base, "responder", PASSWORD)
            other.goto(f"{base}/incidents/{incident_id}/")
            responder_card = other.locator(card_selector)
            expect(responder_card.locator(".action-status")).to_have_text("previewed")
            expect(responder_card.locator("[data-action='preview-action']")).to_have_count(1)
            expect(other.locator("[data-action='approve-action']")).to_have_count(0)
            csrf = next(c["value"] for c in responder_context.cookies() if c["name"] == "csrftoken")
            refused = other.request.post(
                f"{base}/incidents/{incident_id}/actions/{action_id}/approve",
                headers={"X-CSRFToken": csrf, "HX-Request": "true"},
            )
            assert refused.status == 403, refused.status
            other_watch.assert_clean()
            responder_context.close()

            # The approver approves: the card polls until the worker's rollback succeeded.
            page.locator(f"{card_selector} [data-action='approve-action']").click()
            card = page.locator(card_selector)
            expect(card.locator(".decision")).to_contain_text("Approved by approver")
            expect(card.locator(".action-status")).to_have_text("succeeded", timeout=45_000)
            expect(card.locator(".outcome-message")).to_contain_text("Succeeded")
            expect(card.locator("[data-action='approve-action']")).to_have_count(0)
            assert page.evaluate("window.__marker") == 1, "the page reloaded"
            assert navigations == []

            # Exactly the rollback reached the Kubernetes API.
            writes = [r for r in replayed.world.kube.requests if not r.dry_run]
            assert [(r.method, r.path) for r in writes] == [("PATCH", DEPLOYMENT_PATH)], writes
            (patch,) = writes
            assert patch.applied and patch.status == 200
            assert patch.content_type == "application/json-patch+json"
            template = next(op["value"] for op in patch.body if op["path"] == "/spec/template")
            assert template["spec"]["containers"][0]["image"] == OLD_IMAGE
            stored = replayed.world.kube.list_objects("Deployment")
            chat = next(d for d in stored if d["metadata"]["name"] == "chat-api")
            assert chat["spec"]["template"]["spec"]["containers"][0]["image"] == OLD_IMAGE

            # The settled card, its diff and its requests fit a phone screen.
            page.set_viewport_size({"width": 375, "height": 740})
            card.locator(".outcome-requests summary").click()
            widths = page.evaluate(
                "({scroll: document.documentElement.scrollWidth,"
                " client: document.documentElement.clientWidth})"
            )
            assert widths["scroll"] <= widths["client"], f"the card scrolls sideways: {widths}"
            page.set_viewport_size({"width": 1280, "height": 900})

            # The audit shows each step, by whom, with the request sent.
            page.goto(f"{base}/incidents/{incident_id}/audit")
            kinds = page.locator(f".audit-event:has(a[href$='#action-{action_id}']) .audit-kind")
            expect(kinds.first).to_be_visible()
            seen = [k.get_attribute("class").split("kind-")[-1] for k in kinds.all()]
            for step in ("proposed", "previewed", "approved", "executing", "succeeded"):
                assert step in seen, f"{step} missing from the audit: {seen}"
            approved = page.locator(".audit-event.kind-approved")
            expect(approved.locator(".actor")).to_contain_text("approver")
            succeeded = page.locator(".audit-event.kind-succeeded").first
            succeeded.locator("details.requests summary").click()
            expect(succeeded.locator(".request-line")).to_contain_text(f"PATCH {DEPLOYMENT_PATH}")
            expect(succeeded.locator(".request-body")).to_contain_text(OLD_IMAGE)
            with page.expect_navigation():
                page.locator("nav a[href='/audit/']").click()
            expect(
                page.locator(f".incident-link[href='/incidents/{incident_id}/']").first
            ).to_be_visible()
            watch.assert_clean()
        finally:
            browser.close()

    proposal = ActionProposal.objects.get(pk=action_id)
    assert proposal.status == "succeeded"
    assert proposal.decided_by.username == "approver"
    kinds = list(ActionEvent.objects.filter(action=proposal).values_list("kind", flat=True))
    assert kinds.index("approved") < kinds.index("executing") < kinds.index("succeeded")
    assert re.search(r"revision 11", proposal.outcome.get("message", "")), proposal.outcome

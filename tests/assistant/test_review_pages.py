"""The analysis card and its review on the incident page: provenance, badges, forms, versions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from assistant import review
from assistant.models import Analysis
from collectors.models import Evidence
from incidents.models import TimelineEvent
from tests.assistant.review_support import make_analysis, make_incident

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


@pytest.fixture
def incident(client, am_token):
    incident = make_incident(client, am_token)
    # A finished collection round, so the card stops polling once its analysis is there.
    incident.collection_started_at = incident.collection_finished_at = timezone.now()
    incident.save()
    return incident


@pytest.fixture
def analysis(incident):
    return make_analysis(incident)


@pytest.fixture
def evidence_id(incident):
    return incident.evidence.get().pk


def page(client, incident) -> str:
    response = client.get(f"/incidents/{incident.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def card(client, incident) -> str:
    response = client.get(f"/incidents/{incident.pk}/?part=analysis", headers=HTMX)
    assert response.status_code == 200
    return response.content.decode()


def url(analysis, step: str) -> str:
    return f"/incidents/{analysis.incident_id}/analyses/{analysis.pk}/{step}"


# --- provenance: one line per llm_status ---


def test_no_llm_configured_says_so(client_as, incident, analysis):
    html = page(client_as("viewer"), incident)
    assert "Rule-based analysis: no LLM is configured" in html
    assert 'class="badge source-rules"' in html and ">Rule-based<" in html


def test_an_llm_narrative_shows_model_tokens_latency_and_cost(client_as, incident, analysis):
    Analysis.objects.filter(pk=analysis.pk).update(
        llm_status="ok",
        source="llm",
        model="openai:gpt-4o-mini",
        prompt_tokens=3300,
        input_tokens=3412,
        output_tokens=388,
        latency_ms=2140,
        cost_usd=Decimal("0.000745"),
    )
    html = page(client_as("viewer"), incident)
    assert "openai:gpt-4o-mini · 3,412 in / 388 out tokens · 2.1 s · ≈ $0.0007" in html
    assert ">LLM narrative<" in html and "no LLM is configured" not in html


def test_a_pending_narrative_shows_the_draft_and_keeps_polling(client_as, incident, analysis):
    Analysis.objects.filter(pk=analysis.pk).update(llm_status="pending")
    html = card(client_as("viewer"), incident)
    assert "The LLM is writing the narrative; the rule-based draft is shown meanwhile" in html
    assert 'hx-trigger="every 3s"' in html
    assert "Most likely oom-killed" in html
    Analysis.objects.filter(pk=analysis.pk).update(llm_status="ok")
    assert 'hx-trigger="every 3s"' not in card(client_as("viewer"), incident)


def test_a_failed_llm_is_visible_and_the_draft_stands(client_as, incident, analysis):
    Analysis.objects.filter(pk=analysis.pk).update(
        llm_status="fallback",
        llm_error="timeout after 30 s (3 attempts).",
        llm_dropped=["hypothesis citing evidence #999 (not in this incident)", "action rm-rf"],
    )
    html = page(client_as("viewer"), incident)
    assert (
        "LLM narrative unavailable: timeout after 30 s (3 attempts). "
        "The deterministic draft below stands."
    ) in html
    assert 'class="provenance warning"' in html
    assert "The code check removed 2 items from the LLM's answer" in html
    assert "action rm-rf" in html
    assert "Most likely oom-killed" in html


# --- the summary: markdown, citations ---


def test_the_summary_is_rendered_markdown_with_citations_linked(
    client_as, incident, analysis, evidence_id
):
    review.record_revision(
        analysis,
        f"**Bold** cause [#{evidence_id}], not [#999999]. <script>alert(1)</script>",
        "llm",
    )
    html = page(client_as("viewer"), incident)
    assert "<strong>Bold</strong>" in html
    assert f'<a href="#evidence-{evidence_id}" class="evidence-ref"' in html
    assert f'id="evidence-{evidence_id}"' in html  # the panel it leads to
    assert "[#999999]" in html and 'href="#evidence-999999"' not in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_citations_of_a_failed_source_and_an_empty_one_lead_to_their_lines(
    client_as, incident, analysis
):
    """An LLM may cite any evidence row the prompt listed, failures included: each such link
    must land on something the page shows."""
    failed = Evidence.objects.create(
        incident=incident,
        collector="prometheus",
        kind="source_error",
        status=Evidence.Status.FAILED,
        title="prometheus failed",
        reason="unreachable: connection refused",
    )
    empty = Evidence.objects.create(
        incident=incident, collector="gpu", kind="empty", title="gpu: nothing relevant found"
    )
    review.record_revision(
        analysis, f"Metrics missing [#{failed.pk}], no GPU [#{empty.pk}].", "llm"
    )
    html = page(client_as("viewer"), incident)
    for row in (failed, empty):
        assert f'<a href="#evidence-{row.pk}" class="evidence-ref"' in html
    assert f'id="evidence-{failed.pk}">failed: unreachable: connection refused</span>' in html
    assert f'id="evidence-{empty.pk}">(gpu: nothing relevant found)</span>' in html


def test_hypothesis_citations_without_a_panel_are_not_links(client_as, incident, analysis):
    hypotheses = [{**analysis.hypotheses[0], "evidence": [123456]}]
    Analysis.objects.filter(pk=analysis.pk).update(hypotheses=hypotheses)
    html = page(client_as("viewer"), incident)
    assert "#123456" in html and 'href="#evidence-123456"' not in html


# --- who sees the review controls ---


def test_a_viewer_sees_the_review_state_but_no_review_buttons(client_as, incident, analysis):
    html = page(client_as("viewer"), incident)
    assert ">draft<" in html and "v1 · history" in html
    for action in ("approve-analysis", "edit-summary", "reject-analysis"):
        assert f'data-action="{action}"' not in html
    assert url(analysis, "approve") not in html


def test_a_responder_sees_approve_edit_and_reject(client_as, incident, analysis):
    html = page(client_as("responder"), incident)
    for action in ("approve-analysis", "edit-summary", "reject-analysis"):
        assert f'data-action="{action}"' in html
    assert f'hx-post="{url(analysis, "approve")}"' in html
    assert 'name="revision" value="1"' in html


# --- the review steps through the page ---


def test_approve_over_htmx_returns_the_refreshed_card(client_as, incident, analysis):
    response = client_as("responder").post(url(analysis, "approve"), {"revision": 1}, headers=HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="analysis"')
    assert "approved by responder" in html and 'data-action="approve-analysis"' not in html
    assert Analysis.objects.get(pk=analysis.pk).review_status == "approved"


def test_approve_without_htmx_redirects_to_the_incident(client_as, incident, analysis):
    response = client_as("approver").post(url(analysis, "approve"))
    assert response.status_code == 302 and response.url == f"/incidents/{incident.pk}/"


def test_the_edit_form_holds_the_current_markdown_and_saving_swaps_the_card(
    client_as, incident, analysis
):
    client = client_as("responder")
    form = client.get(url(analysis, "summary"), headers=HTMX)
    assert form.status_code == 200
    html = form.content.decode()
    assert '<textarea id="summary-text-' in html
    assert "Most likely oom-killed of Deployment llm/chat-api (90%)." in html
    assert 'hx-trigger="every 3s"' not in html  # no poll wipes the form while someone types

    saved = client.post(
        url(analysis, "summary"),
        {"text": "## Cause\r\n\r\nThe *node* failed.", "revision": 1},
        headers=HTMX,
    )
    assert saved.status_code == 200
    html = saved.content.decode()
    assert "<h4>Cause</h4>" in html and "<em>node</em>" in html
    assert "v2 · history" in html and "<textarea" not in html
    event = incident.timeline.get(kind=TimelineEvent.Kind.ANALYSIS_EDITED)
    assert event.actor == "responder" and "v1 → v2" in event.summary


def test_a_blank_summary_keeps_the_form_with_the_error(client_as, incident, analysis):
    client = client_as("responder")
    response = client.post(url(analysis, "summary"), {"text": "  "}, headers=HTMX)
    assert response.status_code == 200  # htmx swaps 2xx only: the form comes back with its error
    assert "The summary cannot be blank." in response.content.decode()
    assert "<textarea" in response.content.decode()
    plain = client.post(url(analysis, "summary"), {"text": "  "})
    assert plain.status_code == 400 and b"The summary cannot be blank." in plain.content
    assert analysis.revisions.count() == 1


def test_reject_asks_for_a_reason_then_shows_it(client_as, incident, analysis):
    client = client_as("responder")
    form = client.get(url(analysis, "reject"), headers=HTMX).content.decode()
    assert 'name="reason"' in form and "required" in form

    blank = client.post(url(analysis, "reject"), {"reason": ""}, headers=HTMX)
    assert blank.status_code == 200
    assert "a reason is required" in blank.content.decode() and 'name="reason"' in (
        blank.content.decode()
    )
    assert client.post(url(analysis, "reject"), {"reason": ""}).status_code == 400

    done = client.post(url(analysis, "reject"), {"reason": "wrong <b>node</b>"}, headers=HTMX)
    html = done.content.decode()
    assert "rejected by responder" in html and "wrong &lt;b&gt;node&lt;/b&gt;" in html
    event = incident.timeline.get(kind=TimelineEvent.Kind.ANALYSIS_REJECTED)
    assert event.summary == "responder rejected the analysis: wrong <b>node</b>"


def test_a_stale_approval_is_refused_with_the_reason(client_as, incident, analysis, personas):
    review.edit_summary(analysis, personas["approver"], "A newer text.")
    response = client_as("responder").post(url(analysis, "approve"), {"revision": 1}, headers=HTMX)
    assert response.status_code == 200
    assert "The summary changed since you loaded it" in response.content.decode()
    assert client_as("responder").post(url(analysis, "approve"), {"revision": 1}).status_code == 409
    assert Analysis.objects.get(pk=analysis.pk).review_status == "draft"


def test_a_pending_analysis_cannot_be_reviewed_from_the_page(client_as, incident):
    pending = Analysis.objects.create(incident=incident, status="pending")
    client = client_as("responder")
    assert client.post(url(pending, "approve")).status_code == 409
    assert client.get(url(pending, "summary")).status_code == 409
    htmx = client.post(url(pending, "approve"), headers=HTMX)
    assert htmx.status_code == 200 and "this one is pending" in htmx.content.decode()


def test_an_analysis_of_another_incident_is_404(client_as, incident, analysis, am_token, client):
    from tests.incidents.payloads import firing, group, post

    post(client, group(firing("Other", pod="p-9")), am_token)
    other = incident.__class__.objects.exclude(pk=incident.pk).get()
    client = client_as("responder")
    assert client.post(f"/incidents/{other.pk}/analyses/{analysis.pk}/approve").status_code == 404
    assert client.get(f"/incidents/{other.pk}/analyses/{analysis.pk}/versions").status_code == 404


# --- a re-analysis starts a new draft and keeps the reviewed one visible ---


def test_the_reviewed_analysis_stays_visible_under_a_newer_draft(
    client_as, incident, analysis, personas
):
    review.approve(analysis, personas["approver"])
    newer = make_analysis(incident, "Most likely node-failure of Node gpu-7 (70%).")
    html = page(client_as("viewer"), incident)
    assert "Most likely node-failure" in html  # the new draft leads
    assert f'id="reviewed-analysis-{analysis.pk}"' in html
    assert "Reviewed analysis — approved by approver at" in html
    assert "Most likely oom-killed" in html  # the reviewed summary, still readable
    assert html.index("node-failure") < html.index("Reviewed analysis")

    review.reject(newer, personas["responder"], "gpu-7 is healthy")
    html = page(client_as("viewer"), incident)
    assert "Reviewed analysis" not in html  # the newest is itself reviewed now


def test_a_rejected_analysis_stays_visible_too(client_as, incident, analysis, personas):
    review.reject(analysis, personas["responder"], "wrong node")
    make_analysis(incident, "Second opinion.")
    html = page(client_as("viewer"), incident)
    assert "Reviewed analysis — rejected by responder" in html and "wrong node" in html


# --- versions ---


def test_the_versions_page_lists_every_version_with_escaped_diffs(
    client_as, incident, analysis, personas, evidence_id
):
    review.record_revision(analysis, f"LLM line one [#{evidence_id}].\nLLM line two.", "llm")
    review.edit_summary(
        analysis, personas["responder"], f"LLM line one [#{evidence_id}].\n<script>x</script>"
    )
    response = client_as("viewer").get(url(analysis, "versions"))
    assert response.status_code == 200
    html = response.content.decode()
    for n in (1, 2, 3):
        assert f'id="v{n}"' in html
    assert "by assistant" in html and "by responder" in html
    assert '<span class="diff-line diff-add">+ &lt;script&gt;x&lt;/script&gt;</span>' in html
    assert '<span class="diff-line diff-del">- LLM line two.</span>' in html
    assert "<script>x</script>" not in html
    # Citations lead to the evidence panels, which are on the incident page.
    assert f'href="/incidents/{incident.pk}/#evidence-{evidence_id}"' in html
    assert f'href="#evidence-{evidence_id}"' not in html

    compare = client_as("viewer").get(url(analysis, "versions") + "?from=1&to=3")
    assert compare.status_code == 200
    assert "v1 → v3" in compare.content.decode()
    assert client_as("viewer").get(url(analysis, "versions") + "?from=1&to=9").status_code == 404
    assert client_as("viewer").get(url(analysis, "versions") + "?from=x&to=1").status_code == 400


def test_the_card_links_to_the_versions_and_the_timeline_to_the_diff(
    client_as, incident, analysis, personas
):
    review.edit_summary(analysis, personas["responder"], "New text.")
    html = page(client_as("viewer"), incident)
    assert f'href="{url(analysis, "versions")}">v2 · history</a>' in html
    timeline = client_as("viewer").get(f"/incidents/{incident.pk}/timeline").content.decode()
    assert f'href="{url(analysis, "versions")}?from=1&amp;to=2">diff</a>' in timeline
    assert "responder edited the summary (v1 → v2" in timeline


def test_a_rule_based_analysis_from_before_the_llm_was_configured_says_so(
    client_as, incident, analysis, settings
):
    settings.VIGIL_LLM = "openai:gpt-4o-mini"
    html = page(client_as("responder"), incident)
    assert (
        "it ran before an LLM was configured" in html and "Re-analyse for an LLM narrative" in html
    )
    assert "no LLM is configured" not in html


def test_the_form_for_an_older_analysis_opens_in_the_card_too(
    client_as, incident, analysis, personas
):
    review.approve(analysis, personas["approver"])
    make_analysis(incident, "Newer draft.")
    html = client_as("responder").get(url(analysis, "reject"), headers=HTMX).content.decode()
    assert f'id="reject-reason-{analysis.pk}"' in html and "Newer draft." in html
    done = client_as("responder").post(
        url(analysis, "reject"), {"reason": "hindsight"}, headers=HTMX
    )
    assert "Reviewed analysis — rejected by responder" in done.content.decode()


def test_an_edit_over_a_newer_version_keeps_both_texts_for_the_reviewer(
    client_as, incident, analysis, personas
):
    review.edit_summary(analysis, personas["approver"], "Approver's **v2**.")
    response = client_as("responder").post(
        url(analysis, "summary"), {"text": "Responder's v2.", "revision": 1}, headers=HTMX
    )
    html = response.content.decode()
    assert "The summary changed since you loaded it: it is now v2" in html
    assert "Responder&#x27;s v2.</textarea>" in html  # their text is not lost
    assert "Approver's <strong>v2</strong>." in html  # and the newer one is shown
    assert 'name="revision" value="2"' in html  # saving again now is a deliberate overwrite
    assert analysis.revisions.count() == 2


def test_the_latest_and_the_reviewed_analysis_are_read_in_one_query(
    incident, personas, django_assert_num_queries
):
    from assistant.presentation import latest_and_reviewed

    with django_assert_num_queries(1):
        assert latest_and_reviewed(incident) == (None, None)

    approved = make_analysis(incident, "first")
    review.approve(approved, personas["approver"])
    with django_assert_num_queries(1):
        assert latest_and_reviewed(incident) == (approved, None)  # the newest is reviewed

    rejected = make_analysis(incident, "second")
    review.reject(rejected, personas["responder"], "no")
    draft = make_analysis(incident, "third")
    pending = Analysis.objects.create(incident=incident, status=Analysis.Status.PENDING)
    with django_assert_num_queries(1):
        latest, reviewed = latest_and_reviewed(incident)
        assert reviewed.reviewed_by == personas["responder"]  # joined, no query of its own
    # The newest reviewed one is shown under a newer one that is running: the rejected one, not
    # the draft between them nor the older approved one.
    assert (latest, reviewed) == (pending, rejected)

    pending.delete()
    assert latest_and_reviewed(incident) == (draft, rejected)
    rejected.delete()
    assert latest_and_reviewed(incident) == (draft, approved)
    draft.delete()
    approved.delete()
    failed = Analysis.objects.create(incident=incident, status=Analysis.Status.FAILED)
    assert latest_and_reviewed(incident) == (failed, None)

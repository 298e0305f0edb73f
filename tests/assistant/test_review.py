"""The review services: versions, approve / reject / edit transitions, the timeline, refusals."""

from __future__ import annotations

import pytest

from assistant import review
from assistant.models import Analysis, SummaryRevision
from incidents.models import TimelineEvent
from tests.assistant.review_support import make_analysis, make_incident

pytestmark = pytest.mark.django_db


@pytest.fixture
def incident(client, am_token):
    return make_incident(client, am_token)


@pytest.fixture
def analysis(incident):
    return make_analysis(incident, "Line one.\nLine two.")


def events(incident, kind):
    return list(incident.timeline.filter(kind=kind).order_by("id"))


def test_record_revision_numbers_versions_and_sets_the_summary(analysis):
    first = analysis.revisions.get()
    assert (first.number, first.source, first.author) == (1, "rules", None)
    second = review.record_revision(analysis, "The LLM's narrative.", "llm")
    third = review.record_revision(analysis, "And another.", "llm")
    assert [second.number, third.number] == [2, 3]
    analysis.refresh_from_db()
    assert analysis.summary == "And another."
    assert [r.number for r in analysis.revisions.order_by("number")] == [1, 2, 3]


def test_numbering_stays_unique_when_a_writer_holds_a_stale_instance(analysis):
    """Two writers with their own copies of the row: the second takes the next number, no clash."""
    stale_a = Analysis.objects.get(pk=analysis.pk)
    stale_b = Analysis.objects.get(pk=analysis.pk)
    a = review.record_revision(stale_a, "A", "edit")
    b = review.record_revision(stale_b, "B", "edit")
    assert (a.number, b.number) == (2, 3)
    assert Analysis.objects.get(pk=analysis.pk).summary == "B"


def test_record_revision_refuses_an_unknown_source(analysis):
    with pytest.raises(ValueError, match="unknown revision source"):
        review.record_revision(analysis, "x", "magic")


def test_edit_records_a_version_with_its_diff_and_a_timeline_event(analysis, personas):
    carol = personas["responder"]
    new = review.edit_summary(analysis, carol, "Line one.\nLine 2, corrected.\nLine three.\r\n")
    assert (new.number, new.source, new.author) == (2, "edit", carol)
    assert new.text == "Line one.\nLine 2, corrected.\nLine three."  # CRLF and trailing space go
    assert analysis.summary == new.text  # the caller's instance is up to date
    assert Analysis.objects.get(pk=analysis.pk).summary == new.text
    assert review.diff_stats("Line one.\nLine two.", new.text) == (2, 1)
    (event,) = events(analysis.incident, TimelineEvent.Kind.ANALYSIS_EDITED)
    assert event.actor == "responder"
    assert event.summary == "responder edited the summary (v1 → v2, +2 −1 lines)"
    assert event.payload == {
        "analysis": analysis.pk,
        "revision": 2,
        "previous_revision": 1,
        "added": 2,
        "removed": 1,
        "previous_review": "draft",
    }


def test_the_diff_keeps_every_line_and_marks_additions_and_removals():
    lines = review.diff_lines("a\nb\nc", "a\nB\nc\nd")
    assert [(x.kind, x.text) for x in lines] == [
        ("same", "a"),
        ("del", "b"),
        ("add", "B"),
        ("same", "c"),
        ("add", "d"),
    ]


@pytest.mark.parametrize("text", ["", "   \n\t", "Line one.\nLine two.  \n"])
def test_a_blank_or_unchanged_summary_is_refused(analysis, personas, text):
    with pytest.raises(review.InvalidReview) as caught:
        review.edit_summary(analysis, personas["responder"], text)
    assert "blank" in str(caught.value) or "unchanged" in str(caught.value)
    assert analysis.revisions.count() == 1
    assert not events(analysis.incident, TimelineEvent.Kind.ANALYSIS_EDITED)


def test_approve_marks_the_reviewer_and_the_version(analysis, personas):
    alice = personas["approver"]
    approved = review.approve(analysis, alice)
    assert approved is analysis
    analysis.refresh_from_db()
    assert (analysis.review_status, analysis.reviewed_by) == ("approved", alice)
    assert analysis.reviewed_at is not None
    (event,) = events(analysis.incident, TimelineEvent.Kind.ANALYSIS_APPROVED)
    assert (event.actor, event.summary) == ("approver", "approver approved the analysis (v1)")
    assert event.payload == {"analysis": analysis.pk, "revision": 1, "previous_review": "draft"}


def test_approving_twice_is_refused(analysis, personas):
    review.approve(analysis, personas["approver"])
    with pytest.raises(review.NotReviewable, match="already approved by approver"):
        review.approve(analysis, personas["responder"])
    assert len(events(analysis.incident, TimelineEvent.Kind.ANALYSIS_APPROVED)) == 1


def test_reject_needs_a_reason(analysis, personas):
    for blank in ("", "   ", "\r\n"):
        with pytest.raises(review.InvalidReview, match="reason is required"):
            review.reject(analysis, personas["responder"], blank)
    with pytest.raises(ValueError):  # InvalidReview is a ValueError for callers that want one
        review.reject(analysis, personas["responder"], "")
    analysis.refresh_from_db()
    assert analysis.review_status == "draft"
    assert not events(analysis.incident, TimelineEvent.Kind.ANALYSIS_REJECTED)


def test_reject_then_approve_then_reject_again_each_on_the_timeline(analysis, personas):
    bob, alice = personas["responder"], personas["approver"]
    review.reject(analysis, bob, "  wrong node  ")
    analysis.refresh_from_db()
    assert (analysis.review_status, analysis.review_reason) == ("rejected", "wrong node")
    (rejected,) = events(analysis.incident, TimelineEvent.Kind.ANALYSIS_REJECTED)
    assert (rejected.actor, rejected.summary) == (
        "responder",
        "responder rejected the analysis: wrong node",
    )
    assert rejected.payload["reason"] == "wrong node" and rejected.payload["revision"] == 1
    with pytest.raises(review.NotReviewable, match="already rejected"):
        review.reject(analysis, alice, "still wrong")

    review.approve(analysis, alice)  # people change their minds
    analysis.refresh_from_db()
    assert (analysis.review_status, analysis.reviewed_by, analysis.review_reason) == (
        "approved",
        alice,
        "",
    )
    (approved,) = events(analysis.incident, TimelineEvent.Kind.ANALYSIS_APPROVED)
    assert approved.summary == "approver approved the analysis (v1), rejected earlier by responder"
    assert approved.payload["previous_review"] == "rejected"

    review.reject(analysis, bob, "the GPU is fine after all")
    analysis.refresh_from_db()
    assert analysis.review_status == "rejected"
    assert len(events(analysis.incident, TimelineEvent.Kind.ANALYSIS_REJECTED)) == 2


def test_editing_an_approved_analysis_returns_it_to_draft(analysis, personas):
    review.approve(analysis, personas["approver"])
    review.edit_summary(analysis, personas["responder"], "Line one.\nLine two.\nLine three.")
    analysis.refresh_from_db()
    assert analysis.review_status == "draft"
    assert (analysis.reviewed_by, analysis.reviewed_at) == (None, None)
    (event,) = events(analysis.incident, TimelineEvent.Kind.ANALYSIS_EDITED)
    assert event.summary == (
        "responder edited the summary (v1 → v2, +1 −0 line); back to draft (was approved by approver)"
    )
    assert event.payload["previous_review"] == "approved"
    review.approve(analysis, personas["approver"])  # the new text needs, and gets, its approval
    assert events(analysis.incident, TimelineEvent.Kind.ANALYSIS_APPROVED)[-1].summary.endswith(
        "(v2)"
    )


def test_a_review_of_a_version_nobody_saw_is_refused(analysis, personas):
    review.edit_summary(analysis, personas["responder"], "Someone else's v2.", revision=1)
    with pytest.raises(review.StaleRevision, match="now v2"):
        review.approve(analysis, personas["approver"], revision=1)
    with pytest.raises(review.StaleRevision):
        review.edit_summary(analysis, personas["approver"], "My v2.", revision=1)
    with pytest.raises(review.StaleRevision):
        review.reject(analysis, personas["approver"], "no", revision=1)
    review.approve(analysis, personas["approver"], revision=2)
    assert Analysis.objects.get(pk=analysis.pk).review_status == "approved"


@pytest.mark.parametrize("status", ["pending", "failed"])
def test_only_a_ready_analysis_can_be_reviewed(incident, personas, status):
    analysis = Analysis.objects.create(incident=incident, status=status)
    user = personas["approver"]
    for step in (
        lambda: review.approve(analysis, user),
        lambda: review.reject(analysis, user, "wrong"),
        lambda: review.edit_summary(analysis, user, "text"),
    ):
        with pytest.raises(review.NotReviewable, match=f"this one is {status}"):
            step()
    assert not SummaryRevision.objects.exists()
    assert not incident.timeline.filter(kind__startswith="analysis_").exists()


@pytest.mark.parametrize("persona", ["viewer", "outsider"])
def test_viewers_and_outsiders_cannot_review(analysis, personas, persona):
    from django.core.exceptions import PermissionDenied

    user = personas[persona]
    with pytest.raises(PermissionDenied):
        review.approve(analysis, user)
    with pytest.raises(PermissionDenied):
        review.reject(analysis, user, "wrong")
    with pytest.raises(PermissionDenied):
        review.edit_summary(analysis, user, "mine now")
    analysis.refresh_from_db()
    assert analysis.review_status == "draft" and analysis.revisions.count() == 1


def test_an_analysis_without_versions_gets_its_first_one_when_reviewed(incident, personas):
    """Analyses stored before versions existed: the review still names a version."""
    analysis = Analysis.objects.create(
        incident=incident, status="ready", source="llm", summary="Old narrative."
    )
    review.edit_summary(analysis, personas["responder"], "New words.")
    revisions = list(analysis.revisions.order_by("number"))
    assert [(r.number, r.source, r.text) for r in revisions] == [
        (1, "llm", "Old narrative."),
        (2, "edit", "New words."),
    ]


def test_untouched_by_people_until_someone_reviews_or_edits(incident, personas):
    edited, approved = make_analysis(incident), make_analysis(incident)
    assert review.untouched_by_people(edited) and review.untouched_by_people(approved)
    review.record_revision(edited, "The LLM's narrative.", "llm")
    assert review.untouched_by_people(edited)  # the assistant's own versions do not count
    review.edit_summary(edited, personas["responder"], "A human's words.")
    review.approve(approved, personas["approver"])
    assert not review.untouched_by_people(edited)  # still a draft, but a human rewrote it
    assert not review.untouched_by_people(approved)

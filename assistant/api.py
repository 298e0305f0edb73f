"""Analysis review endpoints of the JSON API (mounted by vigil/api.py): session or user token.

The same steps as the incident page's buttons (assistant/review.py), the same permissions
(incidents.permissions): 401 without a user, 403 for a viewer or outsider, 404 for an unknown
analysis, 409 when it cannot be reviewed now (not ready, already in that state, or the summary
changed since the `revision` the client names), 400 for a blank reason or summary.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Field, Router, Schema
from ninja.errors import HttpError

from incidents import permissions

from . import review
from .models import Analysis
from .presentation import analysis_dict, revision_json

router = Router(tags=["analyses"])


class ReviewIn(Schema):
    revision: int | None = Field(
        None, description="The summary version reviewed; 409 if the summary has moved on"
    )


class RejectIn(ReviewIn):
    reason: str = Field("", description="Why the analysis is wrong (required)")


class SummaryIn(ReviewIn):
    text: str = Field("", description="The new summary, markdown; evidence cited as [#12]")


class RevisionOut(Schema):
    number: int
    source: str
    author: str | None
    created_at: str
    text: str
    added: int
    removed: int


class RevisionsOut(Schema):
    analysis: int
    current: int | None
    revisions: list[RevisionOut]


def _analysis(request: HttpRequest, analysis_id: int, *, respond: bool) -> Analysis:
    if not permissions.can_view(request.user):
        raise HttpError(403, "You have no role in Vigil; ask an administrator for one.")
    if respond and not permissions.can_respond(request.user):
        raise HttpError(403, "Only responders can review analyses.")
    analysis = (
        Analysis.objects.select_related("reviewed_by", "incident").filter(pk=analysis_id).first()
    )
    if analysis is None:
        raise HttpError(404, "No such analysis")
    return analysis


def _reviewed(analysis: Analysis, step) -> dict:
    try:
        step()
    except review.ReviewError as exc:
        raise HttpError(exc.status_code, str(exc)) from exc
    analysis.refresh_from_db()
    return analysis_dict(analysis)


@router.post("/analyses/{analysis_id}/approve", response=dict)
def approve_analysis(request: HttpRequest, analysis_id: int, body: ReviewIn | None = None) -> dict:
    """Approve the analysis's current summary; returns the analysis."""
    analysis = _analysis(request, analysis_id, respond=True)
    seen = body.revision if body else None
    return _reviewed(analysis, lambda: review.approve(analysis, request.user, revision=seen))


@router.post("/analyses/{analysis_id}/reject", response=dict)
def reject_analysis(request: HttpRequest, analysis_id: int, body: RejectIn | None = None) -> dict:
    """Reject the analysis with a reason; returns the analysis."""
    analysis = _analysis(request, analysis_id, respond=True)
    body = body or RejectIn()
    return _reviewed(
        analysis,
        lambda: review.reject(analysis, request.user, body.reason, revision=body.revision),
    )


@router.post("/analyses/{analysis_id}/summary", response=dict)
def edit_analysis_summary(
    request: HttpRequest, analysis_id: int, body: SummaryIn | None = None
) -> dict:
    """Save a new summary version (source "edit"); the analysis returns to draft."""
    analysis = _analysis(request, analysis_id, respond=True)
    body = body or SummaryIn()
    return _reviewed(
        analysis,
        lambda: review.edit_summary(analysis, request.user, body.text, revision=body.revision),
    )


@router.get("/analyses/{analysis_id}/revisions", response=RevisionsOut)
def analysis_revisions(request: HttpRequest, analysis_id: int) -> dict:
    """Every summary version, oldest first, each with its line changes from the one before."""
    analysis = _analysis(request, analysis_id, respond=False)
    revisions = list(analysis.revisions.select_related("author").order_by("number"))
    out = [
        revision_json(revision, revisions[index - 1] if index else None)
        for index, revision in enumerate(revisions)
    ]
    return {
        "analysis": analysis.pk,
        "current": revisions[-1].number if revisions else None,
        "revisions": out,
    }

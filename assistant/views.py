"""The review of an analysis on the incident page: approve, edit the summary, reject, versions.

htmx requests get the analysis card back (with the form and its error when the input was wrong,
as incidents/views.py does: htmx swaps only 2xx answers by default); plain form posts are
redirected to the incident, or get a page of their own with the error (400, or 409 when the
analysis cannot be reviewed now). Who may do what is decided by incidents.permissions.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from collectors.presentation import evidence_context
from incidents import permissions
from incidents.models import Incident

from . import review
from .models import Analysis
from .presentation import analysis_card, analysis_context, evidence_anchor_ids
from .rendering import render_markdown
from .review import ReviewError, current_revision, diff_lines, diff_stats


def _target(
    request: HttpRequest, incident_id: int, analysis_id: int, *, respond: bool
) -> tuple[Incident, Analysis]:
    incident = permissions.access_incident(request.user, incident_id, respond=respond)
    analysis = get_object_or_404(
        Analysis.objects.select_related("reviewed_by", "incident"),
        pk=analysis_id,
        incident=incident,
    )
    return incident, analysis


def _seen_revision(request: HttpRequest) -> int | None:
    value = request.POST.get("revision", "")
    return int(value) if value.isdigit() else None


def _card(request: HttpRequest, incident: Incident, **extra) -> HttpResponse:
    context = {**evidence_context(incident), **analysis_context(incident), **extra}
    return render(request, "partials/analysis.html", context)


def _form_context(analysis: Analysis, mode: str, text: str | None = None, error: str = "") -> dict:
    revision = current_revision(analysis)
    if text is None:
        text = analysis.summary if mode == "edit" else ""
    return {
        "mode": mode,
        "form_analysis": analysis,
        "form_revision": revision.number if revision else None,
        "form_text": text,
        "form_error": error,
    }


def _page(request: HttpRequest, incident: Incident, analysis: Analysis, status: int, **extra):
    context = {
        "incident": incident,
        "form_analysis": analysis,
        "standalone": True,
        "summary_html": analysis_card(analysis, evidence_anchor_ids(incident))["summary_html"],
        **extra,
    }
    return render(request, "assistant/review_form.html", context, status=status)


def _done(request: HttpRequest, incident: Incident) -> HttpResponse:
    if request.htmx:
        return _card(request, incident)
    return redirect(incident)


def _refused(
    request: HttpRequest,
    incident: Incident,
    analysis: Analysis,
    exc: ReviewError,
    *,
    mode: str | None = None,
    text: str = "",
) -> HttpResponse:
    """Wrong input keeps the form open with the error; a step the state forbids says why."""
    analysis.refresh_from_db()
    keep_form = mode is not None and isinstance(exc, review.InvalidReview | review.StaleRevision)
    if keep_form:
        extra = _form_context(analysis, mode, text, str(exc))
        if isinstance(exc, review.StaleRevision):
            # The text that moved on, next to the reviewer's own (kept in the form).
            extra["form_current_html"] = render_markdown(
                analysis.summary, evidence_anchor_ids(incident)
            )
    else:
        extra = {"review_error": str(exc)}
    if request.htmx:
        return _card(request, incident, **extra)
    return _page(request, incident, analysis, exc.status_code, **extra)


@require_POST
@login_required
def analysis_approve(request: HttpRequest, incident_id: int, analysis_id: int) -> HttpResponse:
    incident, analysis = _target(request, incident_id, analysis_id, respond=True)
    try:
        review.approve(analysis, request.user, revision=_seen_revision(request))
    except ReviewError as exc:
        return _refused(request, incident, analysis, exc)
    return _done(request, incident)


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def analysis_reject(request: HttpRequest, incident_id: int, analysis_id: int) -> HttpResponse:
    """GET: the form asking for a reason; POST: reject."""
    return _review_form(request, incident_id, analysis_id, "reject")


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def analysis_summary(request: HttpRequest, incident_id: int, analysis_id: int) -> HttpResponse:
    """GET: the summary's markdown in a form; POST: save it as a new version."""
    return _review_form(request, incident_id, analysis_id, "edit")


def _review_form(request: HttpRequest, incident_id: int, analysis_id: int, mode: str):
    incident, analysis = _target(request, incident_id, analysis_id, respond=True)
    if request.method == "GET":
        if analysis.status != Analysis.Status.READY:
            exc = review.NotReviewable(
                f"Only a ready analysis can be reviewed; this one is {analysis.status}."
            )
            return _refused(request, incident, analysis, exc)
        extra = _form_context(analysis, mode)
        if request.htmx:
            return _card(request, incident, **extra)
        return _page(request, incident, analysis, 200, **extra)
    field = "text" if mode == "edit" else "reason"
    text = request.POST.get(field, "")
    try:
        if mode == "edit":
            review.edit_summary(analysis, request.user, text, revision=_seen_revision(request))
        else:
            review.reject(analysis, request.user, text, revision=_seen_revision(request))
    except ReviewError as exc:
        return _refused(request, incident, analysis, exc, mode=mode, text=text)
    return _done(request, incident)


@require_GET
@login_required
def analysis_versions(request: HttpRequest, incident_id: int, analysis_id: int) -> HttpResponse:
    """Every summary version with its diff to the one before; `?from=&to=` diffs any two."""
    incident, analysis = _target(request, incident_id, analysis_id, respond=False)
    revisions = list(analysis.revisions.select_related("author").order_by("number"))
    anchors = evidence_anchor_ids(incident)
    page = incident.get_absolute_url()  # the evidence panels are there, not on this page
    versions = []
    previous = None
    for revision in revisions:
        entry = {
            "revision": revision,
            "current": revision is revisions[-1],
            "html": render_markdown(revision.text, anchors, evidence_page=page),
            "lines": None,
        }
        if previous is not None:
            added, removed = diff_stats(previous.text, revision.text)
            entry.update(
                previous=previous.number,
                lines=diff_lines(previous.text, revision.text),
                added=added,
                removed=removed,
                changed=added + removed,
            )
        versions.append(entry)
        previous = revision
    versions.reverse()  # the newest first
    compare = None
    if "from" in request.GET or "to" in request.GET:
        by_number = {r.number: r for r in revisions}
        numbers = [request.GET.get("from", ""), request.GET.get("to", "")]
        if not all(n.isdigit() for n in numbers):
            return HttpResponseBadRequest("from and to are version numbers, e.g. ?from=1&to=3")
        old_n, new_n = (int(n) for n in numbers)
        if old_n not in by_number or new_n not in by_number:
            raise Http404("No such version")
        old, new = by_number[old_n].text, by_number[new_n].text
        added, removed = diff_stats(old, new)
        compare = {
            "from": old_n,
            "to": new_n,
            "lines": diff_lines(old, new),
            "added": added,
            "removed": removed,
            "changed": added + removed,
        }
    context = {
        "incident": incident,
        "analysis": analysis,
        "card": {"analysis": analysis, "revision": revisions[-1] if revisions else None},
        "revisions": revisions,
        "versions": versions,
        "compare": compare,
        # What the compare form shows selected: the pair compared, else the newest change.
        "picked": compare
        or {
            "from": revisions[-2].number if len(revisions) > 1 else None,
            "to": revisions[-1].number if revisions else None,
        },
    }
    return render(request, "assistant/versions.html", context)

"""Incident pages. Each page includes its partials; htmx requests get the partial alone."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from assistant.presentation import analysis_context
from collectors.presentation import evidence_context

from . import permissions
from .api import filter_incidents
from .models import Incident, TimelineEvent
from .services import ACTIONS, TransitionError, allowed_actions, incident_transition

LIST_PAGE_SIZE = 50
ALERTS_PAGE_SIZE = 50
RECENT_EVENTS = 20
TIMELINE_PAGE_SIZE = 500


def _list_version() -> str:
    """Changes whenever any incident changes: the list's poll answers 204 while it stays the same."""
    latest = Incident.objects.aggregate(latest=Max("updated_at"), newest=Max("id"))
    return f"{latest['newest'] or 0}-{latest['latest'].timestamp() if latest['latest'] else 0}"


@require_GET
@login_required
@vary_on_headers("HX-Request")
def incident_list(request: HttpRequest) -> HttpResponse:
    permissions.require_view(request.user)
    status = request.GET.get("status") or ""
    severity = request.GET.get("severity") or ""
    version = _list_version()
    if request.htmx and request.GET.get("since") == version:
        return HttpResponse(status=204)
    queryset = filter_incidents(
        Incident.objects.select_related("cluster"),
        status=status or None,
        severity=severity or None,
        labels=[],
    ).order_by("-opened_at", "-id")
    page = Paginator(queryset, LIST_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "status": status,
        "severity": severity,
        "statuses": Incident.Status.choices,
        "severities": _known_severities(),
        "version": version,
        "filter_query": _query(status=status, severity=severity, page=request.GET.get("page", "")),
    }
    if request.htmx:
        return render(request, "partials/incident_rows.html", context)
    return render(request, "incidents/list.html", context)


def _known_severities() -> list[str]:
    return list(
        Incident.objects.exclude(severity="")
        .order_by("-severity_rank", "severity")
        .values_list("severity", flat=True)
        .distinct()[:20]
    )


def _query(**params: str) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in params.items() if v})


@require_GET
@login_required
@vary_on_headers("HX-Request")
def incident_detail(request: HttpRequest, incident_id: int) -> HttpResponse:
    incident = permissions.access_incident(request.user, incident_id)
    if request.htmx and request.GET.get("part") == "live":
        return render(request, "partials/incident_live.html", _live_context(incident))
    if request.htmx and request.GET.get("part") == "evidence":
        return render(request, "partials/evidence.html", evidence_context(incident))
    if request.htmx and request.GET.get("part") == "analysis":
        return render(
            request,
            "partials/analysis.html",
            {**evidence_context(incident), **analysis_context(incident)},
        )
    alerts = Paginator(incident.alerts.all(), ALERTS_PAGE_SIZE).get_page(
        request.GET.get("alerts_page")
    )
    context = {
        "incident": incident,
        "alerts": alerts,
        **_live_context(incident),
        **evidence_context(incident),
        **analysis_context(incident),
    }
    return render(request, "incidents/detail.html", context)


@require_POST
@login_required
def incident_reanalyse(request: HttpRequest, incident_id: int) -> HttpResponse:
    """ "Re-analyse": run the rules again over the evidence as it is now."""
    from assistant.engine import run_analysis

    incident = permissions.access_incident(request.user, incident_id, respond=True)
    run_analysis(incident.pk)
    if request.htmx:
        return render(
            request,
            "partials/analysis.html",
            {**evidence_context(incident), **analysis_context(incident)},
        )
    return redirect(incident)


@require_POST
@login_required
def incident_refresh_evidence(request: HttpRequest, incident_id: int) -> HttpResponse:
    """ "Refresh evidence": collect again now (a round already running is followed by this one)."""
    from collectors.tasks import request_collection

    incident = permissions.access_incident(request.user, incident_id, respond=True)
    TimelineEvent.objects.create(
        incident=incident,
        kind=TimelineEvent.Kind.COLLECTION_REQUESTED,
        actor=request.user.get_username(),
        summary=f"Evidence refresh requested by {request.user.get_username()}",
    )
    request_collection(incident.pk, debounce=False)
    incident.refresh_from_db()
    if request.htmx:
        return render(request, "partials/evidence.html", evidence_context(incident))
    return redirect(incident)


def _live_context(incident: Incident, error: str = "") -> dict:
    recent = list(incident.timeline.order_by("-at", "-id")[:RECENT_EVENTS])
    recent.reverse()
    return {
        "incident": incident,
        "actions": allowed_actions(incident),
        "recent_events": recent,
        "event_total": incident.timeline.count(),
        "error": error,
    }


@require_POST
@login_required
def incident_action(request: HttpRequest, incident_id: int, action: str) -> HttpResponse:
    incident = permissions.access_incident(request.user, incident_id, respond=True)
    error = ""
    if action not in ACTIONS:
        error = f"Unknown action {action!r}."
    else:
        try:
            incident_transition(
                incident=incident,
                action=action,
                by=request.user.get_username(),
                note=request.POST.get("note", "")[:400],
            )
        except TransitionError as exc:
            error = str(exc)
    if request.htmx:
        return render(request, "partials/incident_live.html", _live_context(incident, error))
    return redirect(incident)


@require_GET
@login_required
def incident_timeline(request: HttpRequest, incident_id: int) -> HttpResponse:
    incident = permissions.access_incident(request.user, incident_id)
    kinds = [k for k in request.GET.getlist("kind") if k]
    events = incident.timeline.all()
    if kinds:
        events = events.filter(kind__in=kinds)
    highlighted = request.GET.get("event", "")
    page_number = request.GET.get("page")
    paginator = Paginator(events, TIMELINE_PAGE_SIZE)
    if highlighted.isdigit() and page_number is None:
        page_number = _page_holding(events, int(highlighted))
    page = paginator.get_page(page_number)
    context = {
        "incident": incident,
        "page": page,
        "highlighted": int(highlighted) if highlighted.isdigit() else None,
        "kinds": kinds,
        "all_kinds": incident.timeline.model.Kind.choices,
    }
    if request.htmx:
        return render(request, "partials/timeline_events.html", context)
    return render(request, "incidents/timeline.html", context)


def _page_holding(events, event_id: int) -> int:
    """The timeline page on which a permalinked event appears (events sort by time, then id)."""
    event = events.filter(pk=event_id).first()
    if event is None:
        return 1
    before = events.filter(Q(at__lt=event.at) | Q(at=event.at, pk__lt=event.pk)).count()
    return before // TIMELINE_PAGE_SIZE + 1

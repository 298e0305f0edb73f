"""Incident pages. Each page includes its partials; htmx requests get the partial alone."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import get_template
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from assistant.presentation import analysis_context
from collectors.presentation import evidence_context

from . import permissions
from .api import filter_incidents
from .fragments import FragmentCache, render_fragment, value_key
from .models import Incident, TimelineEvent
from .services import ACTIONS, TransitionError, allowed_actions, incident_transition

LIST_PAGE_SIZE = 50
ALERTS_PAGE_SIZE = 50
RECENT_EVENTS = 20
TIMELINE_PAGE_SIZE = 200


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
        "rows": [_incident_row(incident) for incident in page],
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


# Rendered list rows by everything a row shows, per process (incidents/fragments.py): the list is
# polled every few seconds (and by every open tab), while a row changes only when its incident
# does, so during an alert storm most rows are served from here instead of being rendered again.
_ROWS = FragmentCache(4096)


def _incident_row(incident: Incident) -> str:
    key = (
        incident.pk,
        incident.title,
        incident.cluster.name,
        incident.namespace,
        incident.status,
        incident.severity,
        incident.service,
        incident.firing_count,
        incident.alert_count,
        incident.opened_at,
    )
    return _ROWS.get(
        key, lambda: get_template("partials/incident_row.html").render({"incident": incident})
    )


def _known_severities() -> list[str]:
    return list(
        Incident.objects.exclude(severity="")
        .order_by("-severity_rank", "severity")
        .values_list("severity", flat=True)
        .distinct()[:20]
    )


def _query(**params: str) -> str:
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
        return render(request, "partials/analysis.html", _evidence_and_analysis(incident))
    alerts = Paginator(incident.alerts.values(*ALERT_ROW_FIELDS), ALERTS_PAGE_SIZE).get_page(
        request.GET.get("alerts_page")
    )
    context = {
        "incident": incident,
        "alerts": alerts,
        "alert_rows": [_alert_row(alert) for alert in alerts],
        **_live_context(incident),
        **_evidence_and_analysis(incident),
    }
    return render(request, "incidents/detail.html", context)


def _evidence_and_analysis(incident: Incident) -> dict:
    """The evidence panels' and the analysis' context, the evidence read once for both."""
    evidence = evidence_context(incident)
    return {**evidence, **analysis_context(incident, evidence["evidence_rows"])}


# Rendered alert rows and timeline events of the incident page, keyed on every value they show
# (incidents/fragments.py): an alert row changes only when its alert does, an event never.
_ALERT_ROWS = FragmentCache(8192)
_EVENT_ROWS = FragmentCache(4096)


# What partials/alert_row.html shows of an alert. The page reads these as values, not as Alert
# instances: building 50 instances, with the columns no row shows (two of them timestamps), was
# about a quarter of reading the page's alerts (py-spy, docs/performance.md).
ALERT_ROW_FIELDS = (
    "id",
    "status",
    "alertname",
    "annotations",
    "generator_url",
    "labels",
    "starts_at",
    "ends_at",
    "notification_count",
)


def _alert_row(alert: dict) -> str:
    """One row of the page's alerts table, from an alert's ALERT_ROW_FIELDS."""
    key = tuple(
        value_key(alert[name]) if name in ("annotations", "labels") else alert[name]
        for name in ALERT_ROW_FIELDS
    )
    return _ALERT_ROWS.get(
        key, lambda: render_fragment("partials/alert_row.html", {"alert": alert})
    )


def _event_row(event: TimelineEvent) -> str:
    """One event of the page's recent timeline, as partials/timeline_event.html renders it
    without the timeline page's decorations (filters, highlighting, fresh events)."""
    return _EVENT_ROWS.get(
        _event_key(event),
        lambda: get_template("partials/timeline_event.html").render({"event": event}),
    )


def _event_key(event: TimelineEvent) -> tuple:
    """Every field of an event that partials/timeline_event.html shows."""
    return (
        event.pk,
        event.incident_id,
        event.at,
        event.kind,
        event.actor,
        event.summary,
        value_key(event.payload),
    )


@require_POST
@login_required
def incident_reanalyse(request: HttpRequest, incident_id: int) -> HttpResponse:
    """ "Re-analyse": run the rules again over the evidence as it is now."""
    from assistant.engine import run_analysis

    incident = permissions.access_incident(request.user, incident_id, respond=True)
    run_analysis(incident.pk)
    if request.htmx:
        return render(request, "partials/analysis.html", _evidence_and_analysis(incident))
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
        "recent_event_rows": [_event_row(event) for event in recent],
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


# The timeline page. Events read oldest first; a page is TIMELINE_PAGE_SIZE events and the page
# shown by default is the newest one, the only one that polls for new events.
#
# Filters: `?family=` (repeatable) picks families of kinds, `?kind=` (repeatable) exact kinds; both
# together show the union, none shows everything. A permalinked event (`?event=<id>`) is always
# shown, even when the filter hides its kind (marked as such), so a Slack link never lands on a
# page without its event; the filter stays as it was.
#
# Live updates: the newest page carries a poller asking `?after=<newest id>&seen=<event count>
# &first=<first id on the page>` with the same filters. The answer is 204 while nothing changed,
# else the new events, each placed out-of-band right after its predecessor on the page (alert
# events carry the alert's start time, so a new event is not always the last one), and a poller
# with the new cursor. An event that appears below the cursor (a late commit) or a deletion makes
# it re-render the list instead.

_KIND_VALUE = re.compile(r"^[a-z0-9_]{1,40}$")


@dataclass(frozen=True)
class TimelineFamily:
    key: str
    label: str
    prefixes: tuple[str, ...]


# Kinds join a family by prefix, so new kinds land in theirs without a change here; a kind no
# prefix claims (notes, notifications, anything new) is in the last, catch-all family.
TIMELINE_FAMILIES = (
    TimelineFamily("alerts", "Alerts", ("alert_", "silence_")),
    TimelineFamily("status", "Status", ("incident_",)),
    TimelineFamily("evidence", "Evidence", ("collection_", "evidence_")),
    TimelineFamily("analysis", "Analysis & review", ("analysis_",)),
    TimelineFamily("actions", "Actions", ("action_",)),
    TimelineFamily("notes", "Notes & notifications", ()),
)
_FAMILIES = {family.key: family for family in TIMELINE_FAMILIES}
_CLAIMED_PREFIXES = tuple(prefix for family in TIMELINE_FAMILIES for prefix in family.prefixes)


def timeline_family(kind: str) -> str:
    """The key of the family a timeline event kind belongs to."""
    for family in TIMELINE_FAMILIES:
        if family.prefixes and kind.startswith(family.prefixes):
            return family.key
    return TIMELINE_FAMILIES[-1].key


def _prefixes_q(prefixes: tuple[str, ...]) -> Q:
    q = Q()
    for prefix in prefixes:
        q |= Q(kind__startswith=prefix)
    return q


def _family_q(key: str) -> Q:
    family = _FAMILIES[key]
    if family.prefixes:
        return _prefixes_q(family.prefixes)
    return ~_prefixes_q(_CLAIMED_PREFIXES)


@dataclass(frozen=True)
class TimelineSelection:
    """What the query string asks of the timeline: families, kinds, and the permalinked event."""

    families: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    highlighted: int | None = None

    @classmethod
    def from_request(cls, request: HttpRequest) -> TimelineSelection:
        asked = set(request.GET.getlist("family"))
        families = tuple(f.key for f in TIMELINE_FAMILIES if f.key in asked)
        kinds = tuple(dict.fromkeys(k for k in request.GET.getlist("kind") if _KIND_VALUE.match(k)))
        if len(families) == len(TIMELINE_FAMILIES):  # every family is everything
            families, kinds = (), ()
        return cls(families, kinds, _id_param(request, "event"))

    @property
    def active(self) -> bool:
        return bool(self.families or self.kinds)

    def matches(self, kind: str) -> bool:
        return not self.active or kind in self.kinds or timeline_family(kind) in self.families

    def apply(self, events):
        if not self.active:
            return events
        q = Q(kind__in=self.kinds) if self.kinds else Q()
        for key in self.families:
            q |= _family_q(key)
        if self.highlighted is not None:
            q |= Q(pk=self.highlighted)
        return events.filter(q)

    def params(self, **extra: object) -> list[tuple[str, str]]:
        """The query string's pairs for this selection (and `extra`, where not empty)."""
        pairs = [("family", f) for f in self.families] + [("kind", k) for k in self.kinds]
        if self.highlighted is not None:
            pairs.append(("event", str(self.highlighted)))
        pairs += [(key, str(value)) for key, value in extra.items() if value not in (None, "")]
        return pairs


@require_GET
@vary_on_headers("HX-Request")
def incident_timeline(request: HttpRequest, incident_id: int) -> HttpResponse:
    if not request.user.is_authenticated:
        return _login_then_event(request)
    incident = permissions.access_incident(request.user, incident_id)
    selection = TimelineSelection.from_request(request)
    partial = bool(request.htmx) and not request.htmx.history_restore_request
    if partial and "after" in request.GET:
        return _timeline_poll(request, incident, selection)
    context = _timeline_context(incident, selection, request.GET.get("page"))
    if partial:
        return render(request, "partials/timeline_events.html", context)
    return render(request, "incidents/timeline.html", context)


def _login_then_event(request: HttpRequest) -> HttpResponse:
    """To the login page; back here afterwards with `#event-<id>`, so the browser scrolls to it.

    The fragment of the link that brought the user here never reached the server; `?event=` did.
    """
    from django.contrib.auth.views import redirect_to_login

    if request.htmx:
        # A poll or a filter change after the session ran out: the whole page goes to the login
        # page (and comes back to itself), rather than a login form inside the list.
        path = request.htmx.current_url_abs_path or request.path
        return HttpResponseClientRedirect(redirect_to_login(path).url)
    path = request.get_full_path()
    event = _id_param(request, "event")
    if event is not None:
        path += f"#event-{event}"
    return redirect_to_login(path)


def _timeline_cursor(incident: Incident) -> tuple[int, int]:
    """(newest event id, number of events) of the whole timeline, in one query."""
    state = incident.timeline.aggregate(top=Max("id"), total=Count("id"))
    return state["top"] or 0, state["total"]


def _timeline_context(
    incident: Incident, selection: TimelineSelection, page_number: str | None, *, newest=False
) -> dict:
    top, total = _timeline_cursor(incident)
    # Nothing newer than the cursor, so the next poll cannot bring an event twice.
    events = selection.apply(incident.timeline.all()).filter(pk__lte=top)
    # The newest page is the one people open: a remainder of a few events joins the page
    # before it, so it never shows 7 of an incident's 1,007 events (it holds 101 to 300).
    paginator = Paginator(events, TIMELINE_PAGE_SIZE, orphans=TIMELINE_PAGE_SIZE // 2)
    if newest or (page_number is None and selection.highlighted is None):
        page_number = paginator.num_pages
    elif page_number is None:
        holding = _page_holding(events, selection.highlighted)
        page_number = min(holding, paginator.num_pages) if holding else paginator.num_pages
    page = paginator.get_page(page_number)
    items = list(page.object_list)
    page.object_list = items
    _decorate(items, None, selection, payload=False)
    for event in items:
        event.html = _timeline_row(event, selection.highlighted)
    live = page.number == paginator.num_pages
    timeline_url = incident.get_timeline_url()
    return {
        "incident": incident,
        "page": page,
        "highlighted": selection.highlighted,
        "selection": selection,
        "families": [
            {"key": f.key, "label": f.label, "checked": f.key in selection.families}
            for f in TIMELINE_FAMILIES
        ],
        "kinds": [(k, _kind_label(k)) for k in selection.kinds],
        "timeline_url": timeline_url,
        "everything_url": _url(timeline_url, TimelineSelection(highlighted=selection.highlighted)),
        "filter_query": urlencode(selection.params()),
        "live": live,
        "poll_url": _url(
            timeline_url,
            selection,
            after=top,
            seen=total,
            first=items[0].pk if items else "",
        )
        if live
        else "",
        "fresh": [],
    }


def _kind_label(kind: str) -> str:
    try:
        return TimelineEvent.Kind(kind).label
    except ValueError:
        return kind


def _url(path: str, selection: TimelineSelection, **extra: object) -> str:
    query = urlencode(selection.params(**extra))
    return f"{path}?{query}" if query else path


def _decorate(
    events: list[TimelineEvent], before_at, selection: TimelineSelection, *, payload: bool = True
) -> None:
    """What the template shows besides the fields: the date only when it changes, the family,
    the payload as JSON (`payload`: now, else when the row is rendered), and whether a
    permalinked event is one the filter would hide."""
    previous_day = timezone.localtime(before_at).date() if before_at else None
    for event in events:
        day = timezone.localtime(event.at).date()
        event.same_day = day == previous_day
        previous_day = day
        event.family = timeline_family(event.kind)
        if payload:
            event.payload_json = _payload_json(event)
        event.outside_filter = not selection.matches(event.kind)


def _payload_json(event: TimelineEvent) -> str:
    if not event.payload:
        return ""
    return json.dumps(event.payload, indent=2, sort_keys=True, ensure_ascii=False, default=str)


# The timeline page's events, rendered once per process (incidents/fragments.py): an event does
# not change, and what the page adds to it (the date shown or not, the family, the filter note,
# the highlight) is in the key. Measured with `make bench` (pages, a full page of 200 events):
# rendering them was most of the page's time.
_TIMELINE_ROWS = FragmentCache(8192)


def _timeline_row(event: TimelineEvent, highlighted: int | None) -> str:
    key = (
        *_event_key(event),
        event.same_day,
        event.family,
        event.outside_filter,
        event.pk == highlighted,
    )

    def render() -> str:
        event.payload_json = _payload_json(event)
        return get_template("partials/timeline_event.html").render(
            {"event": event, "highlighted": highlighted}
        )

    return _TIMELINE_ROWS.get(key, render)


def _page_holding(events, event_id: int) -> int | None:
    """The timeline page on which a permalinked event appears (events sort by time, then id;
    past the last page: on the last page, which holds the remainder)."""
    event = events.filter(pk=event_id).first()
    if event is None:
        return None
    before = events.filter(Q(at__lt=event.at) | Q(at=event.at, pk__lt=event.pk)).count()
    return before // TIMELINE_PAGE_SIZE + 1


def _id_param(request: HttpRequest, name: str) -> int | None:
    """A non-negative integer from the query string (small enough for the database), or None."""
    value = request.GET.get(name, "")
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


def _timeline_poll(
    request: HttpRequest, incident: Incident, selection: TimelineSelection
) -> HttpResponse:
    """The newest page's poll: 204 while nothing changed, else the new events and a new cursor."""
    after, seen, first = (_id_param(request, name) for name in ("after", "seen", "first"))
    if after is None or seen is None:
        return HttpResponse("after= and seen= are required", status=400)
    state = incident.timeline.aggregate(
        top=Max("id"), total=Count("id"), older=Count("id", filter=Q(pk__lte=after))
    )
    top, total = state["top"] or 0, state["total"]
    if top == after and total == seen:
        return HttpResponse(status=204)
    if state["older"] != seen or top < after:
        return _timeline_reset(request, incident, selection)
    selected = selection.apply(incident.timeline.all())
    new = list(selected.filter(pk__gt=after, pk__lte=top)[: TIMELINE_PAGE_SIZE + 1])
    if len(new) > TIMELINE_PAGE_SIZE:
        return _timeline_reset(request, incident, selection)
    shown: list[tuple] = []
    if first is not None and new:
        first_event = selected.filter(pk=first, pk__lte=after).values_list("at", "pk").first()
        if first_event is None:
            return _timeline_reset(request, incident, selection)
        # The events on the page (it runs from its first event to the end of the timeline).
        shown = list(
            selected.filter(pk__lte=after)
            .filter(Q(at__gt=first_event[0]) | Q(at=first_event[0], pk__gte=first_event[1]))
            .values_list("at", "pk")
        )
        # One that sorts before the page's first event belongs on an earlier page.
        new = [event for event in new if (event.at, event.pk) > first_event]
    fresh = _place(new, shown)
    timeline_url = incident.get_timeline_url()
    context = {
        "incident": incident,
        "highlighted": selection.highlighted,
        "fresh": fresh,
        "remove_empty": first is None and bool(fresh),
        "live": True,
        "poll_url": _url(
            timeline_url,
            selection,
            after=top,
            seen=total,
            first=first if first is not None else (fresh[0].pk if fresh else ""),
        ),
    }
    for event in fresh:
        _decorate([event], event.before_at, selection)
        event.fresh = True
    return render(request, "partials/timeline_update.html", context)


def _place(new: list[TimelineEvent], shown: list[tuple]) -> list[TimelineEvent]:
    """Give each new event `after_id`, the id of the event it follows on the page (None: it
    opens the list), and `before_at`, that event's time; in the order they are to be inserted."""
    merged = sorted([(at, pk, None) for at, pk in shown] + [(e.at, e.pk, e) for e in new])
    previous: tuple | None = None
    placed = []
    for at, pk, event in merged:
        if event is not None:
            event.after_id = previous[1] if previous else None
            event.before_at = previous[0] if previous else None
            placed.append(event)
        previous = (at, pk)
    return placed


def _timeline_reset(
    request: HttpRequest, incident: Incident, selection: TimelineSelection
) -> HttpResponse:
    """The poll's answer when appending cannot be trusted: the newest page, re-rendered."""
    context = _timeline_context(incident, selection, None, newest=True)
    response = render(request, "partials/timeline_events.html", context)
    return reswap(retarget(response, "#timeline"), "outerHTML")

"""Analyses shaped for the API (DESIGN.md) and the incident page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import DateTimeField, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils.safestring import SafeString, mark_safe

from incidents.fragments import FragmentCache, render_fragment
from incidents.models import Incident

from .models import ActionProposal, Analysis, SummaryRevision
from .rendering import render_markdown
from .review import current_revision, diff_stats


def latest_analysis(incident: Incident) -> Analysis | None:
    return Analysis.objects.filter(incident=incident).select_related("reviewed_by").first()


def _username(user) -> str | None:
    return user.get_username() if user is not None else None


def action_json(action: ActionProposal) -> dict:
    """One action of `actions[]` (DESIGN.md's six fields first), with its lifecycle.

    `preview`: the last dry run, null until one succeeded; `decided`: who approved, rejected or
    cancelled it; `outcome`: the API's answer once it ran (`{ok, message, requests, responses,
    result}`); `proposed_by`: null for the assistant's own proposals.
    """
    preview = action.preview or {}
    return {
        "id": action.pk,
        "action": action.action,
        "target": action.target,
        "params": action.params,
        "status": action.status,
        "rationale": action.rationale,
        "preview": {
            "summary": preview.get("summary", ""),
            "diff": preview.get("diff", ""),
            "requests": preview.get("requests", []),
            "fingerprint": preview.get("fingerprint", ""),
            "at": rfc3339(action.previewed_at),
            "by": _username(action.previewed_by) if action.previewed_by_id else None,
        }
        if preview
        else None,
        "preview_error": action.preview_error or None,
        "decided": {
            "by": _username(action.decided_by) if action.decided_by_id else None,
            "at": rfc3339(action.decided_at),
            "reason": action.reason or None,
        }
        if action.decided_at
        else None,
        "outcome": action.outcome or None,
        "error": action.error or None,
        "proposed_by": _username(action.proposed_by) if action.proposed_by_id else None,
        "attempts": action.attempts,
        "started_at": rfc3339(action.started_at),
        "finished_at": rfc3339(action.finished_at),
    }


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def review_json(analysis: Analysis) -> dict:
    return {
        "status": analysis.review_status,
        "by": analysis.reviewed_by.get_username() if analysis.reviewed_by else None,
        "at": rfc3339(analysis.reviewed_at),
        "reason": analysis.review_reason or None,
    }


def llm_json(analysis: Analysis) -> dict:
    return {
        "status": analysis.llm_status or Analysis.LLMStatus.OFF,
        "error": analysis.llm_error or None,
        "dropped": list(analysis.llm_dropped or []),
        "prompt_tokens": analysis.prompt_tokens,
        "input_tokens": analysis.input_tokens,
        "output_tokens": analysis.output_tokens,
        "latency_ms": analysis.latency_ms,
        "cost_usd": float(analysis.cost_usd) if analysis.cost_usd is not None else None,
    }


def actions_of(incident: Incident, analysis: Analysis | None) -> list[ActionProposal]:
    """The analysis's proposals (ranked), then every other action of the incident worth showing.

    "Worth showing": added by an engineer, or past `proposed` (previewed, decided, run): a
    re-analysis supersedes the older analysis's untouched proposals, never an action someone
    acted on. The page and the API list the same actions.
    """
    rows = list(ActionProposal.objects.filter(incident=incident).order_by())  # sorted below
    current = [p for p in rows if analysis is not None and p.analysis_id == analysis.pk]
    current.sort(key=lambda p: (p.rank, p.pk))
    others = [
        p
        for p in rows
        if p not in current
        and (
            p.analysis_id is None or p.proposed_by_id or p.status != ActionProposal.Status.PROPOSED
        )
    ]
    others.sort(key=lambda p: p.pk)
    shown = current + others
    # The actions' analyses and people, each read once for all of them rather than joined to
    # every action. Joined (as before), the analysis's JSON was decoded once per action, and its
    # columns with the four users' (about a hundred) made Django's SQL compilation the incident
    # page's largest single cost (docs/performance.md). The current ones' analysis is the caller's.
    _attach(shown, ("analysis",), Analysis, known=[analysis] if analysis else [])
    _attach(shown, PEOPLE, get_user_model())
    return shown


PEOPLE = ("proposed_by", "edited_by", "previewed_by", "decided_by")


def _attach(rows: list, fields: tuple[str, ...], model: type, known: list | None = None) -> None:
    """Set each row's foreign keys `fields` to `model` instances: those in `known`, the rest read
    by one query for all (none when there is none to read). prefetch_related_objects would send
    a query per field: four for PEOPLE."""
    found = {obj.pk: obj for obj in known or []}
    ids = {getattr(row, f"{field}_id") for row in rows for field in fields} - {None} - set(found)
    if ids:
        found.update(model.objects.in_bulk(ids))
    for row in rows:
        for field in fields:
            obj = found.get(getattr(row, f"{field}_id"))
            if obj is not None:
                setattr(row, field, obj)


def analysis_dict(analysis: Analysis) -> dict:
    """One analysis: DESIGN.md's fields, then its review, summary version and LLM provenance."""
    revision = current_revision(analysis)
    return {
        "id": analysis.pk,
        "status": analysis.status,
        "source": analysis.source,
        "summary": analysis.summary,
        "hypotheses": analysis.hypotheses,
        "actions": [action_json(a) for a in actions_of(analysis.incident, analysis)],
        "review": review_json(analysis),
        "revision": revision.number if revision else None,
        "model": analysis.model or None,
        "llm": llm_json(analysis),
    }


def revision_json(revision: SummaryRevision, previous: SummaryRevision | None) -> dict:
    added, removed = diff_stats(previous.text if previous else "", revision.text)
    return {
        "number": revision.number,
        "source": revision.source,
        "author": revision.author.get_username() if revision.author else None,
        "created_at": rfc3339(revision.created_at),
        "text": revision.text,
        "added": added,
        "removed": removed,
    }


def analysis_json(incident: Incident) -> dict | None:
    """The `analysis` of GET /api/v1/incidents/<id>: the latest one, null until analysis starts."""
    analysis = latest_analysis(incident)
    return analysis_dict(analysis) if analysis is not None else None


def analysis_expected(incident: Incident, analysis: Analysis | None) -> bool:
    """Whether a newer analysis (or its narrative) is on its way: the page polls until it is."""
    if analysis is not None and analysis.status == Analysis.Status.PENDING:
        return True
    if (
        analysis is not None
        and analysis.status == Analysis.Status.READY
        and analysis.llm_status == Analysis.LLMStatus.PENDING
    ):
        return True
    collecting = bool(incident.collection_started_at and not incident.collection_finished_at)
    if collecting:
        return True
    finished = incident.collection_finished_at
    if finished is None:
        return incident.is_open and analysis is None
    return analysis is None or analysis.created_at < finished


def evidence_anchor_ids(incident: Incident) -> frozenset[int]:
    """Ids of the evidence the page shows under `#evidence-<id>` (evidence.html)."""
    from collectors.models import Evidence

    return _anchors_of(
        Evidence.objects.filter(incident=incident).only("pk", "status", "kind", "collector")
    )


def format_tokens(count: int | None) -> str:
    return f"{count:,}" if count is not None else "?"


def format_latency(ms: int | None) -> str:
    if ms is None:
        return ""
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def format_cost(cost: Decimal | float | None) -> str:
    """An estimate, with as many decimals as a small amount needs to show at all."""
    if cost is None:
        return ""
    value = Decimal(str(cost))
    if value == 0:
        return "≈ $0"
    if value >= 1:
        return f"≈ ${value:,.2f}"
    if value >= Decimal("0.01"):
        return f"≈ ${value:.3f}"
    if value >= Decimal("0.0001"):
        return f"≈ ${value:.4f}"
    return "< $0.0001"


def provenance(analysis: Analysis) -> str:
    """The LLM call behind a narrative: "openai:gpt-4o-mini · 3,412 in / 388 out tokens · …"."""
    parts = [analysis.model or "an unnamed model"]
    if analysis.input_tokens is not None or analysis.output_tokens is not None:
        parts.append(
            f"{format_tokens(analysis.input_tokens)} in / "
            f"{format_tokens(analysis.output_tokens)} out tokens"
        )
    parts += [p for p in (format_latency(analysis.latency_ms), format_cost(analysis.cost_usd)) if p]
    return " · ".join(parts)


def hypothesis_view(hypothesis: dict, anchors: frozenset[int]) -> dict:
    """A hypothesis with its citations split into those with a panel to link to and the rest."""
    cited = [i for i in hypothesis.get("evidence") or [] if isinstance(i, int)]
    return {**hypothesis, "cited": [{"id": i, "linked": i in anchors} for i in cited]}


def analysis_card(analysis: Analysis, anchors: frozenset[int]) -> dict:
    """What the page needs of one ready analysis beyond its fields."""
    revision = current_revision(analysis)
    llm_status = analysis.llm_status or Analysis.LLMStatus.OFF
    return {
        "analysis": analysis,
        "summary_html": render_markdown(analysis.summary, anchors),
        "revision": revision,
        "hypotheses": [hypothesis_view(h, anchors) for h in analysis.hypotheses or []],
        "llm_status": llm_status,
        "provenance": provenance(analysis) if llm_status == Analysis.LLMStatus.OK else "",
        "dropped": [str(d) for d in analysis.llm_dropped or []],
        "llm_error": (analysis.llm_error or "").strip().rstrip("."),
    }


def latest_and_reviewed(incident: Incident) -> tuple[Analysis | None, Analysis | None]:
    """The latest analysis, and the newest reviewed one while the latest still awaits its review
    (or is running): the page shows both then. One query for the two (the second was a query of
    its own on every page view, and found nothing in the usual case of a fresh incident): the
    newest row is always among those read and comes first, and the next one, if any, is the
    newest ready and reviewed analysis.
    """
    newest = Analysis.objects.filter(incident=incident).values("pk")[:1]
    reviewed = Q(status=Analysis.Status.READY) & ~Q(review_status=Analysis.ReviewStatus.DRAFT)
    rows = list(
        Analysis.objects.filter(incident=incident)
        .filter(Q(pk=Subquery(newest)) | reviewed)
        .select_related("reviewed_by")[:2]
    )
    if not rows:
        return None, None
    latest = rows[0]
    if latest.status == Analysis.Status.READY and latest.review_status != (
        Analysis.ReviewStatus.DRAFT
    ):
        return latest, None
    return latest, rows[1] if len(rows) > 1 else None


def _anchors_of(evidence_rows) -> frozenset[int]:
    """Which of these Evidence rows have a panel on the page: the rule, in one place."""
    from collectors.presentation import has_anchor

    return frozenset(row.pk for row in evidence_rows if has_anchor(row))


def analysis_context(incident: Incident, evidence_rows: list | None = None) -> dict:
    """The context of partials/analysis.html. `evidence_rows`: the incident's Evidence rows when
    the caller has read them already (the incident page), so they are not read twice."""
    from .llm import llm_configured

    analysis, reviewed = latest_and_reviewed(incident)
    if not analysis:
        anchors: frozenset[int] = frozenset()
    elif evidence_rows is None:
        anchors = evidence_anchor_ids(incident)
    else:
        anchors = _anchors_of(evidence_rows)
    ready = analysis is not None and analysis.status == Analysis.Status.READY
    story = story_of(incident, evidence_rows) if analysis else []
    return {
        "analysis": analysis,
        "card": analysis_card(analysis, anchors) if ready else None,
        "reviewed": analysis_card(reviewed, anchors) if reviewed else None,
        "analysis_expected": analysis_expected(incident, analysis),
        "story": story,
        "story_html": story_html(story),
        # Left unevaluated: no template reads it, so it costs no query.
        "proposals": analysis.actions.all() if analysis else [],
        # Now, not when the analysis ran: a rule-based analysis from before an LLM was configured
        # says so rather than claiming there is none.
        "llm_configured": llm_configured(),
        # For {% action_section %}: the evidence with a panel, and the latest ready analysis.
        "evidence_anchors": anchors,
        "ready_analysis": analysis if ready else None,
    }


# The story ("What happened when") --------------------------------------------------------------


@dataclass(frozen=True)
class _StoryAlert:
    """What the story reads of an alert (assistant.timeline.build_timeline)."""

    labels: dict
    starts_at: datetime
    ends_at: datetime | None


def _story_alerts(incident: Incident) -> list[_StoryAlert]:
    """The alerts whose start or end can be among the story's last entries, oldest first.

    The story keeps its MAX_ENTRIES latest entries, so of the alerts' starts only the
    MAX_ENTRIES latest can be among them, and the same for their ends: reading the alerts that
    started or ended at or after the MAX_ENTRIES-th latest start or end (all of them when there
    are fewer) instead of every alert of the incident (thousands in a storm) gives the same
    story, in one query. Ties are broken as the full list orders them: by start, then id.
    """
    from incidents.models import Alert

    from .timeline import MAX_ENTRIES

    alerts = Alert.objects.filter(incident=incident)
    earliest = Value(datetime(1, 1, 1, tzinfo=UTC), output_field=DateTimeField())
    nth_start = alerts.order_by("-starts_at").values("starts_at")[MAX_ENTRIES - 1 : MAX_ENTRIES]
    nth_end = (
        alerts.filter(ends_at__isnull=False)
        .order_by("-ends_at")
        .values("ends_at")[MAX_ENTRIES - 1 : MAX_ENTRIES]
    )
    rows = (
        alerts.filter(
            Q(starts_at__gte=Coalesce(Subquery(nth_start), earliest))
            | Q(ends_at__gte=Coalesce(Subquery(nth_end), earliest))
        )
        .order_by("starts_at", "id")
        .values_list("labels", "starts_at", "ends_at")
    )
    return [
        _StoryAlert(labels if isinstance(labels, dict) else {}, starts_at, ends_at)
        for labels, starts_at, ends_at in rows
    ]


def story_of(incident: Incident, evidence_rows: list | None = None) -> list:
    """build_timeline(facts_for(incident)), reading only the alerts it can show."""
    from .facts import facts_for
    from .timeline import build_timeline

    return build_timeline(
        facts_for(incident, alerts=_story_alerts(incident), evidence_rows=evidence_rows)
    )


_STORIES = FragmentCache(512)


def story_html(story: list) -> SafeString:
    """The story's entries as <li>s; an entry is a frozen value, so the list is its own key."""
    if not story:
        return mark_safe("")
    return _STORIES.get(
        tuple(story),
        lambda: render_fragment("partials/analysis_story.html", {"story": story}),
    )

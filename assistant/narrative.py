"""The LLM narrative of a stored analysis: claimed once, written, checked, and stored or refused.

The rules' draft is already on the page when this runs (engine.run_analysis); the narrative only
replaces its summary, ranking and the assistant's own proposals when the LLM's answer survives the
code check (assistant/llm/). Anything else leaves the deterministic draft standing, with the
reason recorded on the Analysis and the timeline, so an engineer can see why.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from incidents.models import TimelineEvent

from .engine import ACTOR, proposal_rows
from .facts import facts_for
from .models import ActionProposal, Analysis
from .presentation import action_json
from .review import record_revision, untouched_by_people

logger = logging.getLogger(__name__)
PENDING = Analysis.LLMStatus.PENDING


def claim(analysis_id: int) -> bool:
    """Take the narrative for this worker; a redelivered or duplicate task finds it taken.

    A claim older than `stale_claim_after()` belonged to a worker that died; it may be retaken.
    """
    now = timezone.now()
    fresh = Analysis.objects.filter(pk=analysis_id, llm_status=PENDING)
    unclaimed = fresh.filter(llm_started_at__isnull=True).update(llm_started_at=now)
    if unclaimed:
        return True
    return bool(
        fresh.filter(llm_started_at__lt=now - stale_claim_after()).update(llm_started_at=now)
    )


def stale_claim_after() -> timedelta:
    """Longer than one narrative can take: every attempt timing out plus every allowed wait."""
    attempts = settings.VIGIL_LLM_MAX_RETRIES + 2  # the retries, the first call and one repair
    worst = attempts * settings.VIGIL_LLM_TIMEOUT + attempts * settings.VIGIL_LLM_MAX_RETRY_WAIT
    return timedelta(seconds=worst + 60)


def tokens_used(analyses) -> int:
    used = analyses.aggregate(
        total=Coalesce(Sum(Coalesce(F("input_tokens"), 0) + Coalesce(F("output_tokens"), 0)), 0)
    )
    return int(used["total"])


def write_narrative(analysis_id: int, *, model=None) -> Analysis:
    """Ask the LLM for the narrative of one analysis and store what survives the check."""
    from .llm.chain import narrate
    from .llm.telemetry import configure_tracing

    # Here, in the process that calls the LLM, after any fork: the exporter's thread survives.
    configure_tracing()
    if not claim(analysis_id):
        return Analysis.objects.get(pk=analysis_id)
    analysis = Analysis.objects.select_related("incident").get(pk=analysis_id)
    incident = analysis.incident
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assistant_proposals = analysis.actions.filter(proposed_by__isnull=True)
    narration = narrate(
        facts_for(incident),
        analysis.rules_hypotheses,
        [action_json(p) for p in assistant_proposals],
        model=model,
        tokens_used_incident=tokens_used(Analysis.objects.filter(incident=incident)),
        # By when the call was made (claimed), not when its analysis was created: a draft from
        # before midnight narrated after it spends today's budget.
        tokens_used_today=tokens_used(Analysis.objects.filter(llm_started_at__gte=midnight)),
    )
    return store_narration(analysis.pk, narration)


def store_narration(analysis_id: int, narration) -> Analysis:
    """Record the call's cost either way; apply the narrative only to an unreviewed draft."""
    with transaction.atomic():
        analysis = Analysis.objects.select_for_update().get(pk=analysis_id)
        if analysis.llm_status != PENDING:
            return analysis  # another worker stored it first
        analysis.model = narration.model
        analysis.prompt_tokens = narration.prompt_tokens
        analysis.input_tokens = narration.input_tokens
        analysis.output_tokens = narration.output_tokens
        analysis.latency_ms = narration.latency_ms
        analysis.cost_usd = narration.cost_usd
        analysis.llm_dropped = list(narration.dropped)
        if narration.ok and not untouched_by_people(analysis):
            narration.ok = False
            done = (
                analysis.review_status
                if analysis.review_status != Analysis.ReviewStatus.DRAFT
                else "edited"
            )
            narration.error = (
                f"the draft was {done} before the narrative arrived, "
                "so the narrative was not applied"
            )
        if narration.ok:
            _apply(analysis, narration)
        else:
            _fall_back(analysis, narration.error)
    return analysis


def _apply(analysis: Analysis, narration) -> None:
    analysis.llm_status = Analysis.LLMStatus.OK
    analysis.llm_error = ""
    analysis.source = Analysis.Source.LLM
    analysis.hypotheses = narration.hypotheses
    analysis.save()
    record_revision(analysis, narration.summary, "llm")
    # The assistant's proposals follow the new ranking; an engineer's own additions, and any
    # proposal someone already touched (edited, previewed: it has audit events), stay.
    analysis.actions.filter(
        proposed_by__isnull=True,
        edited_by__isnull=True,
        status=ActionProposal.Status.PROPOSED,
        events__isnull=True,
    ).delete()
    ActionProposal.objects.bulk_create(proposal_rows(analysis, narration.proposals))
    top = narration.hypotheses[0]
    entity = top["entity"]
    changed = " (top hypothesis changed from the rules')" if narration.top_changed else ""
    TimelineEvent.objects.create(
        incident=analysis.incident,
        kind=TimelineEvent.Kind.ANALYSIS_NARRATED,
        actor=ACTOR,
        summary=(
            f"Narrative written by {narration.model}: {top['category']} of {entity['kind']} "
            f"{entity['name']} at {top['confidence']:.0%}{changed}"
        )[:500],
        payload={
            "analysis": analysis.pk,
            "model": narration.model,
            "input_tokens": narration.input_tokens,
            "output_tokens": narration.output_tokens,
            "top_changed": narration.top_changed,
            "dropped": len(narration.dropped),
        },
    )


def _fall_back(analysis: Analysis, error: str) -> None:
    analysis.llm_status = Analysis.LLMStatus.FALLBACK
    analysis.llm_error = error[:4000]
    analysis.save()
    TimelineEvent.objects.create(
        incident=analysis.incident,
        kind=TimelineEvent.Kind.ANALYSIS_FALLBACK,
        actor=ACTOR,
        summary=f"LLM narrative unavailable ({error}); the rule-based draft stands"[:500],
        payload={"analysis": analysis.pk, "model": analysis.model},
    )


def give_up_on_stuck_narratives(after: timedelta | None = None) -> int:
    """Narratives pending far longer than any call can take: the draft stands, visibly."""
    cutoff = timezone.now() - (after or 3 * stale_claim_after())
    stuck = list(
        Analysis.objects.filter(llm_status=PENDING, finished_at__lt=cutoff).values_list(
            "pk", flat=True
        )
    )
    for analysis_id in stuck:
        with transaction.atomic():
            analysis = Analysis.objects.select_for_update().get(pk=analysis_id)
            if analysis.llm_status == PENDING:
                _fall_back(analysis, "the narrative was never written (no worker took it)")
    return len(stuck)


def lost_narratives(grace: timedelta) -> list[int]:
    """Pending narratives whose task was lost: never claimed (the broker was down at publish), or
    claimed by a worker that died."""
    now = timezone.now()
    never_claimed = Q(llm_started_at__isnull=True, finished_at__lt=now - grace)
    claim_gone_stale = Q(llm_started_at__lt=now - stale_claim_after())
    return list(
        Analysis.objects.filter(llm_status=PENDING)
        .filter(never_claimed | claim_gone_stale)
        .values_list("pk", flat=True)[:500]
    )

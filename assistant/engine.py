"""The deterministic analysis: run every rule, rank what they support, propose what to do.

Always runs, needs no LLM. Rules only return candidates; here they are validated against the
taxonomy and the evidence that exists, ranked, merged with `unknown` when nothing is supported,
and turned into an Analysis with ranked proposals (the first is the recommended next step).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import import_module

from django.db import transaction
from django.utils import timezone

from collectors.base import Entity
from incidents.models import Incident, TimelineEvent

from .base import Candidate, Facts, Proposal
from .facts import facts_for
from .models import ActionProposal, Analysis
from .taxonomy import ACTIONS, CATEGORIES

logger = logging.getLogger(__name__)
ACTOR = "vigil"
# One module per failure family (TAXONOMY.md); an explicit list, in no particular order.
RULES: tuple[str, ...] = (
    "bad_deploy",
    "gpu_hardware_fault",
    "gpu_memory_exhaustion",
    "kv_cache_saturation",
    "traffic_surge",
    "oom_killed",
    "crash_loop",
    "image_pull_failure",
    "node_failure",
    "gpu_thermal_throttle",
    "upstream_rate_limit",
    "dependency_failure",
)
SUPPORTED = 0.35  # below this, a candidate does not count as supported
MAX_HYPOTHESES = 5
MAX_PROPOSALS = 5


@dataclass
class Draft:
    summary: str
    hypotheses: list[Candidate]
    proposals: list[Proposal] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # rules that crashed or cited nothing real


def rule_modules() -> list:
    return [import_module(f"assistant.rules.{name}") for name in RULES]


def analyse(facts: Facts) -> Draft:
    """Rank every rule's candidates; `unknown` when nothing is supported."""
    problems: list[str] = []
    candidates: list[Candidate] = []
    for rule in rule_modules():
        try:
            found = list(rule.evaluate(facts))
        except Exception as exc:  # one broken rule must not cost the engineer the analysis
            logger.exception("rule %s crashed on incident %s", rule.__name__, facts.incident_id)
            problems.append(f"{rule.__name__.rsplit('.', 1)[-1]}: {type(exc).__name__}: {exc}")
            continue
        candidates.extend(c for c in found if _valid(c, facts, problems))
    ranked = _rank(candidates)
    if not ranked or ranked[0].confidence < SUPPORTED:
        ranked = [_unknown(facts, ranked)] + ranked
    proposals = _proposals(ranked)
    return Draft(
        summary=_summary(ranked[0], proposals),
        hypotheses=ranked,
        proposals=proposals,
        problems=problems,
    )


def _valid(candidate: Candidate, facts: Facts, problems: list[str]) -> bool:
    known = {e.id for e in facts.evidence}
    if candidate.category not in CATEGORIES:
        problems.append(f"dropped a candidate of unknown category {candidate.category!r}")
        return False
    candidate.evidence_ids = [i for i in dict.fromkeys(candidate.evidence_ids) if i in known]
    candidate.confidence = max(0.0, min(1.0, float(candidate.confidence)))
    candidate.proposals = [p for p in candidate.proposals if _valid_proposal(p, problems)]
    return True


def _valid_proposal(proposal: Proposal, problems: list[str]) -> bool:
    if proposal.action not in ACTIONS:
        problems.append(f"dropped a proposal of unknown action {proposal.action!r}")
        return False
    kind, _ = ACTIONS[proposal.action]
    if kind in (None, "Alertmanager"):
        return True
    if proposal.target is None or proposal.target.kind != kind:
        problems.append(f"dropped {proposal.action}: it targets a {kind}, not {proposal.target}")
        return False
    return True


def _rank(candidates: list[Candidate]) -> list[Candidate]:
    """Best first; one hypothesis per (category, entity), the most confident one."""
    best: dict[tuple[str, Entity], Candidate] = {}
    for c in candidates:
        key = (c.category, c.entity)
        if key not in best or c.confidence > best[key].confidence:
            best[key] = c
    ordered = sorted(best.values(), key=lambda c: (-c.confidence, -len(c.evidence_ids), c.category))
    return ordered[:MAX_HYPOTHESES]


def alert_entity(facts: Facts) -> Entity:
    """The alert's own entity, for `unknown`: its workload if resolved, else what its labels name."""
    scope = facts.scope
    if scope.deployments:
        return scope.deployments[0]
    if scope.statefulsets:
        return scope.statefulsets[0]
    if scope.services:
        return scope.services[0]
    if scope.nodes:
        return scope.nodes[0]
    labels = facts.alerts[0].labels if facts.alerts else {}
    for key, kind in (
        ("deployment", "Deployment"),
        ("service", "Service"),
        ("pod", "Pod"),
        ("node", "Node"),
    ):
        if labels.get(key):
            return Entity(kind, None if kind == "Node" else labels.get("namespace"), labels[key])
    return Entity("Alert", labels.get("namespace"), labels.get("alertname", "unknown"))


def _unknown(facts: Facts, weak: list[Candidate]) -> Candidate:
    entity = alert_entity(facts)
    leads = "; ".join(f"{c.category} of {c.entity} ({c.confidence:.0%})" for c in weak[:3])
    explanation = (
        f"The evidence collected for {entity} does not support any known failure family with "
        f"confidence"
        + (f" (weak leads: {leads})." if leads else ".")
        + " Review the alerts, metrics and logs below before acting."
    )
    steps = (
        f"Check whether the symptom on {entity} persists; compare the metric panels around the alert "
        "start; look at the grouped log errors and recent changes; escalate to the owning team if it does."
    )
    return Candidate(
        category="unknown",
        entity=entity,
        confidence=0.3 if not weak else max(0.3, 1 - weak[0].confidence),
        evidence_ids=[e.id for e in facts.evidence if e.status == "ok"][:5],
        explanation=explanation,
        proposals=[
            Proposal(
                "none", None, {"steps": steps}, "No failure family is supported by the evidence."
            )
        ],
    )


def _proposals(ranked: list[Candidate]) -> list[Proposal]:
    """The top hypothesis's proposals first (the recommended step), then the other supported ones'.

    A weak lead is shown as a hypothesis, but acting on it is not proposed.
    """
    seen: set[tuple] = set()
    proposals: list[Proposal] = []
    for index, candidate in enumerate(ranked):
        if index and candidate.confidence < SUPPORTED:
            continue
        for proposal in candidate.proposals:
            key = (proposal.action, proposal.target)
            if key in seen:
                continue
            seen.add(key)
            proposals.append(proposal)
    return proposals[:MAX_PROPOSALS]


def _summary(top: Candidate, proposals: list[Proposal]) -> str:
    first_sentence = top.explanation.split(". ")[0].rstrip(".") + "."
    text = f"Most likely {top.category} of {top.entity} ({top.confidence:.0%}). {first_sentence}"
    if proposals:
        step = proposals[0]
        text += (
            f" Recommended next step: {step.action}"
            + (f" on {step.target}" if step.target else "")
            + "."
        )
    return text


def hypothesis_json(candidate: Candidate) -> dict:
    return {
        "category": candidate.category,
        "entity": candidate.entity.as_dict(),
        "confidence": round(candidate.confidence, 3),
        "evidence": candidate.evidence_ids,
        "explanation": candidate.explanation,
    }


def proposal_rows(analysis: Analysis, proposals: list[Proposal]) -> list[ActionProposal]:
    """Unsaved proposal rows, ranked as given (the first is the recommended next step)."""
    return [
        ActionProposal(
            incident_id=analysis.incident_id,
            analysis=analysis,
            rank=rank,
            action=p.action,
            target_kind=p.target.kind if p.target else "",
            target_namespace=(p.target.namespace or "") if p.target else "",
            target_name=p.target.name if p.target else "",
            params=p.params,
            rationale=p.rationale,
        )
        for rank, p in enumerate(proposals)
    ]


def run_analysis(incident_id: int, *, enqueue_narrative: bool = True) -> Analysis:
    """Analyse the incident's current evidence and store a ready (or failed) Analysis.

    With an LLM configured, the rules' draft is stored ready at once and marked as awaiting its
    narrative, which a separate task writes (assistant/narrative.py): the engineer never waits on
    the LLM to see the ranking.
    """
    from .llm import llm_configured
    from .review import record_revision

    incident = Incident.objects.get(pk=incident_id)
    analysis = Analysis.objects.create(incident=incident)
    try:
        draft = analyse(facts_for(incident))
    except Exception as exc:
        logger.exception("analysis of incident %s failed", incident_id)
        return _fail(analysis, f"{type(exc).__name__}: {exc}")
    narrated = llm_configured()
    with transaction.atomic():
        analysis.status = Analysis.Status.READY
        analysis.hypotheses = analysis.rules_hypotheses = [
            hypothesis_json(c) for c in draft.hypotheses
        ]
        analysis.rules_summary = draft.summary
        analysis.llm_status = Analysis.LLMStatus.PENDING if narrated else Analysis.LLMStatus.OFF
        analysis.error = "\n".join(draft.problems)
        analysis.finished_at = timezone.now()
        analysis.save()
        record_revision(analysis, draft.summary, "rules")
        ActionProposal.objects.bulk_create(proposal_rows(analysis, draft.proposals))
        top = draft.hypotheses[0]
        TimelineEvent.objects.create(
            incident=incident,
            at=analysis.finished_at,
            kind=TimelineEvent.Kind.ANALYSIS_READY,
            actor=ACTOR,
            summary=f"Analysis ready (rules): {top.category} of {top.entity} at {top.confidence:.0%}"[
                :500
            ],
            payload={"analysis": analysis.pk, "source": analysis.source},
        )
        if narrated and enqueue_narrative:
            from vigil.celery import publish_on_commit

            from .tasks import narrate_analysis

            publish_on_commit(narrate_analysis, analysis.pk)
    return analysis


def _fail(analysis: Analysis, error: str) -> Analysis:
    analysis.status = Analysis.Status.FAILED
    analysis.error = error[:4000]
    analysis.finished_at = timezone.now()
    analysis.save()
    TimelineEvent.objects.create(
        incident=analysis.incident,
        at=analysis.finished_at,
        kind=TimelineEvent.Kind.ANALYSIS_FAILED,
        actor=ACTOR,
        summary=f"Analysis failed: {error}"[:500],
    )
    return analysis

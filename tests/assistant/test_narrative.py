"""The narrative's life on a stored analysis: pending, claimed once, applied or refused, swept."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from assistant import engine, narrative, tasks
from assistant.base import Candidate, Proposal
from assistant.models import ActionProposal, Analysis
from collectors.base import Entity
from collectors.models import Evidence
from incidents.models import Incident, TimelineEvent
from tests.incidents.payloads import firing, group, post

pytestmark = pytest.mark.django_db
DEPLOY = Entity("Deployment", "llm", "chat-api")
NODE = Entity("Node", None, "gpu-node-7")


@pytest.fixture
def incident(client, am_token) -> Incident:
    post(client, group(firing("A", pod="p-1")), am_token)
    incident = Incident.objects.get()
    for title in ("pod p-1 OOMKilled", "memory at limit"):
        Evidence.objects.create(
            incident=incident,
            collector="kubernetes",
            kind="pod_status",
            title=title,
            entity_kind="Pod",
            entity_namespace="llm",
            entity_name="p-1",
        )
    return incident


@pytest.fixture
def oom_rule(monkeypatch):
    def evaluate(facts):
        ids = [e.id for e in facts.of_kind("pod_status")]
        return [
            Candidate(
                "oom-killed",
                DEPLOY,
                0.9,
                ids,
                "p-1 was OOMKilled.",
                [Proposal("patch-resources", DEPLOY, {"container": "app"}, "raise the limit")],
            )
        ]

    module = type("rule", (), {"evaluate": staticmethod(evaluate), "__name__": "oom"})
    monkeypatch.setattr(engine, "rule_modules", lambda: [module])


@pytest.fixture
def llm_on(settings):
    settings.VIGIL_LLM = "openai:test-model"
    return settings


@pytest.fixture
def published(monkeypatch):
    """Tasks published after commit, instead of reaching a broker."""
    sent: list[tuple] = []
    monkeypatch.setattr(
        "vigil.celery.publish", lambda task, *args, **kw: sent.append((task.name, args)) or True
    )
    monkeypatch.setattr(
        tasks, "publish", lambda task, *args, **kw: sent.append((task.name, args)) or True
    )
    return sent


def narration(ok=True, **overrides):
    from assistant.llm.chain import Narration

    values = {
        "ok": ok,
        "summary": "**chat-api** is out of memory [#1].",
        "hypotheses": [],
        "proposals": [],
        "dropped": [],
        "error": "" if ok else "timed out after 30s",
        "model": "openai:test-model",
        "prompt_tokens": 900,
        "input_tokens": 950,
        "output_tokens": 120,
        "latency_ms": 2100,
        "cost_usd": Decimal("0.000213"),
        "top_changed": False,
    }
    values.update(overrides)
    return Narration(**values)


def stub_narrate(monkeypatch, result=None, calls=None):
    calls = [] if calls is None else calls

    def fake(facts, hypotheses, proposals, **kwargs):
        calls.append({"hypotheses": hypotheses, "proposals": proposals, **kwargs})
        return result(facts) if callable(result) else result

    monkeypatch.setattr("assistant.llm.chain.narrate", fake)
    return calls


def test_without_an_llm_the_rules_draft_stands_alone(incident, oom_rule, published):
    analysis = engine.run_analysis(incident.pk)
    assert analysis.llm_status == Analysis.LLMStatus.OFF
    assert analysis.source == "rules"
    assert [r.source for r in analysis.revisions.all()] == ["rules"]
    assert analysis.rules_summary == analysis.summary
    assert analysis.rules_hypotheses == analysis.hypotheses
    assert not [name for name, _ in published if name.endswith("narrate_analysis")]


def test_with_an_llm_the_draft_is_ready_at_once_and_its_narrative_is_enqueued(
    incident, oom_rule, llm_on, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        analysis = engine.run_analysis(incident.pk)
    assert analysis.status == "ready"
    assert analysis.llm_status == Analysis.LLMStatus.PENDING
    assert ("assistant.tasks.narrate_analysis", (analysis.pk,)) in published


def test_a_narrative_replaces_summary_ranking_and_the_assistants_proposals(
    incident, oom_rule, llm_on, published, monkeypatch, make_user
):
    analysis = engine.run_analysis(incident.pk, enqueue_narrative=False)
    engineer = make_user("erin", "responder")
    own = ActionProposal.objects.create(
        incident=incident, analysis=analysis, action="rollout-restart", proposed_by=engineer
    )
    evidence_id = analysis.hypotheses[0]["evidence"][1]
    llm_top = {
        "category": "oom-killed",
        "entity": DEPLOY.as_dict(),
        "confidence": 0.8,
        "evidence": [evidence_id],
        "explanation": "memory at the limit",
    }
    calls = stub_narrate(
        monkeypatch,
        narration(
            hypotheses=[llm_top],
            proposals=[Proposal("scale-deployment", DEPLOY, {"replicas": 4}, "more pods")],
            dropped=["evidence #999 does not exist"],
        ),
    )

    analysis = narrative.write_narrative(analysis.pk)

    assert calls[0]["hypotheses"] == analysis.rules_hypotheses
    assert [p["action"] for p in calls[0]["proposals"]] == ["patch-resources"]
    assert analysis.llm_status == Analysis.LLMStatus.OK
    assert analysis.source == "llm"
    assert analysis.summary == "**chat-api** is out of memory [#1]."
    assert [r.source for r in analysis.revisions.all()] == ["rules", "llm"]
    assert analysis.hypotheses == [llm_top]
    assert analysis.rules_hypotheses[0]["evidence"] != [evidence_id]  # the baseline is kept
    assert (analysis.input_tokens, analysis.output_tokens, analysis.latency_ms) == (950, 120, 2100)
    assert analysis.cost_usd == Decimal("0.000213")
    assert analysis.llm_dropped == ["evidence #999 does not exist"]
    actions = list(analysis.actions.order_by("rank", "id"))
    assert {(a.action, a.proposed_by_id) for a in actions} == {
        ("scale-deployment", None),
        ("rollout-restart", engineer.pk),
    }
    assert own in actions
    event = TimelineEvent.objects.get(kind=TimelineEvent.Kind.ANALYSIS_NARRATED)
    assert "openai:test-model" in event.summary and "oom-killed" in event.summary


def test_a_failed_call_leaves_the_rules_draft_standing_visibly(
    incident, oom_rule, llm_on, monkeypatch
):
    analysis = engine.run_analysis(incident.pk, enqueue_narrative=False)
    before = (analysis.summary, analysis.hypotheses)
    stub_narrate(monkeypatch, narration(ok=False, error="rate limited (429) 3 times"))

    analysis = narrative.write_narrative(analysis.pk)

    assert analysis.llm_status == Analysis.LLMStatus.FALLBACK
    assert analysis.llm_error == "rate limited (429) 3 times"
    assert (analysis.summary, analysis.hypotheses) == before
    assert analysis.source == "rules"
    assert analysis.input_tokens == 950  # what the failed attempts cost is still recorded
    event = TimelineEvent.objects.get(kind=TimelineEvent.Kind.ANALYSIS_FALLBACK)
    assert "rate limited (429) 3 times" in event.summary
    assert "rule-based draft stands" in event.summary


def test_a_redelivered_task_never_calls_the_llm_twice(incident, oom_rule, llm_on, monkeypatch):
    analysis = engine.run_analysis(incident.pk, enqueue_narrative=False)
    calls = stub_narrate(monkeypatch, narration(ok=False))
    narrative.write_narrative(analysis.pk)
    narrative.write_narrative(analysis.pk)
    assert len(calls) == 1


def test_a_claim_of_a_dead_worker_may_be_retaken(incident, oom_rule, llm_on):
    analysis = engine.run_analysis(incident.pk, enqueue_narrative=False)
    assert narrative.claim(analysis.pk)
    assert not narrative.claim(analysis.pk)
    long_ago = timezone.now() - narrative.stale_claim_after() - timedelta(seconds=1)
    Analysis.objects.filter(pk=analysis.pk).update(llm_started_at=long_ago)
    assert narrative.claim(analysis.pk)


def test_a_draft_reviewed_before_the_narrative_arrives_is_not_rewritten(
    incident, oom_rule, llm_on, monkeypatch
):
    analysis = engine.run_analysis(incident.pk, enqueue_narrative=False)
    Analysis.objects.filter(pk=analysis.pk).update(review_status="approved")
    stub_narrate(monkeypatch, narration(hypotheses=[analysis.hypotheses[0]]))
    analysis = narrative.write_narrative(analysis.pk)
    assert analysis.llm_status == Analysis.LLMStatus.FALLBACK
    assert "approved before the narrative arrived" in analysis.llm_error
    assert analysis.source == "rules"


def test_token_budgets_count_what_earlier_analyses_used(incident, oom_rule, llm_on, monkeypatch):
    earlier = engine.run_analysis(incident.pk, enqueue_narrative=False)
    Analysis.objects.filter(pk=earlier.pk).update(
        llm_status="ok", input_tokens=40_000, output_tokens=1_000, llm_started_at=timezone.now()
    )
    analysis = engine.run_analysis(incident.pk, enqueue_narrative=False)
    calls = stub_narrate(monkeypatch, narration(ok=False))
    narrative.write_narrative(analysis.pk)
    assert calls[0]["tokens_used_incident"] == 41_000
    assert calls[0]["tokens_used_today"] == 41_000


def test_the_daily_budget_counts_calls_made_today_whenever_their_analysis_was_created(
    incident, oom_rule, llm_on, monkeypatch
):
    yesterday = timezone.now() - timedelta(days=1)
    narrated_yesterday = engine.run_analysis(incident.pk, enqueue_narrative=False)
    Analysis.objects.filter(pk=narrated_yesterday.pk).update(
        llm_status="ok", input_tokens=9_000, output_tokens=500, llm_started_at=yesterday
    )
    created_yesterday = engine.run_analysis(incident.pk, enqueue_narrative=False)
    Analysis.objects.filter(pk=created_yesterday.pk).update(
        created_at=yesterday,
        llm_status="ok",
        input_tokens=3_000,
        output_tokens=200,
        llm_started_at=timezone.now(),
    )
    analysis = engine.run_analysis(incident.pk, enqueue_narrative=False)
    calls = stub_narrate(monkeypatch, narration(ok=False))
    narrative.write_narrative(analysis.pk)
    assert calls[0]["tokens_used_today"] == 3_200
    assert calls[0]["tokens_used_incident"] == 12_700


def test_the_sweep_re_enqueues_lost_narratives_and_gives_up_on_hopeless_ones(
    incident, oom_rule, llm_on, published
):
    lost = engine.run_analysis(incident.pk, enqueue_narrative=False)
    hopeless = engine.run_analysis(incident.pk, enqueue_narrative=False)
    fresh = engine.run_analysis(incident.pk, enqueue_narrative=False)
    now = timezone.now()
    Analysis.objects.filter(pk=lost.pk).update(finished_at=now - timedelta(minutes=5))
    Analysis.objects.filter(pk=hopeless.pk).update(
        finished_at=now - 4 * narrative.stale_claim_after()
    )

    result = tasks.sweep_narratives()

    assert result == {"enqueued": 1, "given_up": 1}
    assert published == [("assistant.tasks.narrate_analysis", (lost.pk,))]
    hopeless.refresh_from_db()
    assert hopeless.llm_status == Analysis.LLMStatus.FALLBACK
    assert "never written" in hopeless.llm_error
    fresh.refresh_from_db()
    assert fresh.llm_status == Analysis.LLMStatus.PENDING


def test_a_draft_edited_before_the_narrative_arrives_keeps_the_engineers_words(
    incident, oom_rule, llm_on, monkeypatch, make_user
):
    from assistant.review import edit_summary

    analysis = engine.run_analysis(incident.pk, enqueue_narrative=False)
    edit_summary(analysis, make_user("erin", "responder"), "Erin: memory limit too low on p-1.")
    stub_narrate(monkeypatch, narration(hypotheses=[analysis.hypotheses[0]]))
    analysis = narrative.write_narrative(analysis.pk)
    assert analysis.summary == "Erin: memory limit too low on p-1."
    assert analysis.llm_status == Analysis.LLMStatus.FALLBACK
    assert "edited before the narrative arrived" in analysis.llm_error

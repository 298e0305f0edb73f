"""The engine: ranking across rules, `unknown` when nothing is supported, only real citations."""

from __future__ import annotations

import types
from datetime import UTC, datetime

import pytest

from assistant import engine
from assistant.base import AlertItem, Candidate, EvidenceItem, Facts, Proposal
from collectors.base import Entity, Scope

T = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CHAT = Entity("Deployment", "llm", "chat-api")
NODE = Entity("Node", None, "gpu-node-7")


def facts(**extra) -> Facts:
    return Facts(
        incident_id=1,
        opened_at=T,
        alerts=[
            AlertItem(
                {"alertname": "HighErrors", "namespace": "llm", "deployment": "chat-api"},
                {},
                T,
                None,
                "firing",
            )
        ],
        scope=Scope(namespaces=["llm"], deployments=[CHAT]),
        evidence=[
            EvidenceItem(i, "kubernetes", "pod_status", "ok", f"e{i}", CHAT, {}) for i in (1, 2, 3)
        ],
        **extra,
    )


def rule(*candidates, crash: Exception | None = None):
    def evaluate(f):
        if crash:
            raise crash
        return list(candidates)

    return types.SimpleNamespace(__name__="assistant.rules.fake", evaluate=evaluate)


@pytest.fixture
def rules(monkeypatch):
    def install(*modules):
        monkeypatch.setattr(engine, "rule_modules", lambda: list(modules))

    return install


def test_hypotheses_are_ranked_by_confidence_and_the_top_ones_proposals_come_first(rules):
    undo = Proposal("rollout-undo", CHAT, {"to_revision": 11}, "revision 12 broke it")
    cordon = Proposal("cordon-node", NODE, {}, "Xid 79")
    rules(
        rule(Candidate("gpu-hardware-fault", NODE, 0.6, [3], "Xid on gpu-node-7.", [cordon])),
        rule(
            Candidate(
                "bad-deploy", CHAT, 0.9, [1, 2], "Revision 12 rolled out before the errors.", [undo]
            )
        ),
    )
    draft = engine.analyse(facts())
    assert [h.category for h in draft.hypotheses] == ["bad-deploy", "gpu-hardware-fault"]
    assert [p.action for p in draft.proposals] == ["rollout-undo", "cordon-node"]
    assert draft.summary.startswith("Most likely bad-deploy of Deployment llm/chat-api (90%).")
    assert "Recommended next step: rollout-undo on Deployment llm/chat-api." in draft.summary


def test_nothing_supported_gives_unknown_on_the_alerts_entity_with_none(rules):
    rules(rule(Candidate("traffic-surge", CHAT, 0.2, [1], "Traffic slightly up.")))
    draft = engine.analyse(facts())
    top = draft.hypotheses[0]
    assert (top.category, top.entity) == ("unknown", CHAT)
    assert draft.proposals[0].action == "none" and draft.proposals[0].params["steps"]
    assert "traffic-surge" in top.explanation  # the weak lead is named


def test_citations_of_evidence_that_does_not_exist_are_dropped(rules):
    rules(rule(Candidate("oom-killed", CHAT, 0.9, [2, 999, 2], "OOMKilled.")))
    assert engine.analyse(facts()).hypotheses[0].evidence_ids == [2]


def test_categories_and_actions_outside_the_catalogue_are_dropped_and_recorded(rules):
    rules(
        rule(
            Candidate("cosmic-rays", CHAT, 0.99, [1], "?"),
            Candidate(
                "oom-killed",
                CHAT,
                0.8,
                [1],
                "OOM.",
                [
                    Proposal("reboot-cluster", CHAT),
                    Proposal("cordon-node", CHAT),
                    Proposal("patch-resources", CHAT),
                ],
            ),
        )
    )
    draft = engine.analyse(facts())
    assert [h.category for h in draft.hypotheses] == ["oom-killed"]
    assert [p.action for p in draft.proposals] == ["patch-resources"]
    assert len(draft.problems) == 3


def test_a_crashing_rule_costs_nothing_but_its_own_candidates(rules):
    rules(
        rule(crash=KeyError("x")),
        rule(Candidate("crash-loop", CHAT, 0.8, [1], "CrashLoopBackOff.")),
    )
    draft = engine.analyse(facts())
    assert draft.hypotheses[0].category == "crash-loop"
    assert draft.problems and "KeyError" in draft.problems[0]


def test_the_same_hypothesis_from_two_rules_is_kept_once_at_its_best(rules):
    rules(
        rule(Candidate("bad-deploy", CHAT, 0.5, [1], "a")),
        rule(Candidate("bad-deploy", CHAT, 0.8, [2], "b")),
    )
    (only,) = engine.analyse(facts()).hypotheses
    assert (only.confidence, only.explanation) == (0.8, "b")


def test_every_family_of_the_taxonomy_has_a_rule_module():
    from assistant.taxonomy import CATEGORIES

    modules = {name.replace("_", "-") for name in engine.RULES}
    assert modules == set(CATEGORIES) - {"unknown"}


def test_weak_leads_are_shown_but_not_proposed(rules):
    cordon = Proposal("cordon-node", NODE, {}, "Xid 79")
    restart = Proposal("none", None, {"steps": "read the logs"}, "weak")
    rules(
        rule(Candidate("gpu-hardware-fault", NODE, 0.9, [3], "Xid 79 on gpu-node-7.", [cordon])),
        rule(Candidate("crash-loop", CHAT, 0.3, [1], "Pods crash.", [restart])),
    )
    draft = engine.analyse(facts())
    assert [h.category for h in draft.hypotheses] == ["gpu-hardware-fault", "crash-loop"]
    assert [p.action for p in draft.proposals] == ["cordon-node"]


def test_the_symptom_starts_with_the_latest_run_of_alerts_not_a_chronic_one():
    from datetime import timedelta

    def firing(name, minutes_ago):
        return AlertItem(
            {"alertname": name}, {}, T - timedelta(minutes=minutes_ago), None, "firing"
        )

    chronic_and_fresh = facts()
    chronic_and_fresh.alerts = [
        firing("CPUThrottlingHigh", 180),
        firing("HighErrors", 6),
        firing("TTFTHigh", 3),
    ]
    assert chronic_and_fresh.first_alert_at == T - timedelta(minutes=6)

    slowly_developing = facts()
    slowly_developing.alerts = [
        firing("QueueGrowing", 70),
        firing("LatencyHigh", 40),
        firing("Errors", 5),
    ]
    assert slowly_developing.first_alert_at == T - timedelta(minutes=70)

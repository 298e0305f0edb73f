"""check.py: parameters typed per action, targets held to the incident, the schema's shape."""

from __future__ import annotations

import json

import pytest

from assistant.llm.check import PARAM_CHECKS, BadParam, check, check_params, known_entities
from assistant.llm.schema import LLMAnalysis, Param, analysis_schema
from assistant.taxonomy import ACTIONS, CATEGORIES
from collectors.base import Entity
from tests.assistant.conftest import CHAT, NODE, OLD_POD


def params(**values) -> list[Param]:
    return [Param(name=k, value=v) for k, v in values.items()]


def typed(action: str, facts, **values):
    dropped: list[str] = []
    result = check_params(action, params(**values), facts, dropped, action)
    return result, dropped


def test_every_catalogue_parameter_has_a_check():
    assert {p for _, names in ACTIONS.values() for p in names} <= set(PARAM_CHECKS)


@pytest.mark.parametrize(
    ("action", "values", "expected"),
    [
        ("scale-deployment", {"replicas": "4"}, {"replicas": 4}),
        ("scale-deployment", {"replicas": "1000"}, {"replicas": 1000}),
        ("rollout-undo", {"to_revision": "11"}, {"to_revision": 11}),
        ("rollout-undo", {}, {}),
        ("drain-node", {"grace_seconds": "0"}, {"grace_seconds": 0}),
        ("drain-node", {"grace_seconds": "3600"}, {"grace_seconds": 3600}),
        (
            "patch-resources",
            {"container": "app", "limits": '{"memory": "6Gi", "cpu": "2"}'},
            {"container": "app", "limits": {"memory": "6Gi", "cpu": "2"}},
        ),
        (
            "patch-resources",
            {"requests": "memory=4Gi, nvidia.com/gpu=1", "limits": '{"memory": 8}'},
            {"requests": {"memory": "4Gi", "nvidia.com/gpu": "1"}, "limits": {"memory": "8"}},
        ),
        ("none", {"steps": "  Rotate the DB password.  "}, {"steps": "Rotate the DB password."}),
        (
            "silence-alert",
            {
                "matchers": '{"alertname": "ChatApiHighErrorRate", "namespace": "llm"}',
                "duration": "1h30m",
                "comment": "rolling back",
            },
            {
                "matchers": [
                    {
                        "name": "alertname",
                        "value": "ChatApiHighErrorRate",
                        "isRegex": False,
                        "isEqual": True,
                    },
                    {"name": "namespace", "value": "llm", "isRegex": False, "isEqual": True},
                ],
                "duration": "1h30m",
                "comment": "rolling back",
            },
        ),
        (
            "silence-alert",
            {"matchers": '{alertname="ChatApiHighErrorRate", namespace="llm"}', "duration": "30m"},
            {
                "matchers": [
                    {
                        "name": "alertname",
                        "value": "ChatApiHighErrorRate",
                        "isRegex": False,
                        "isEqual": True,
                    },
                    {"name": "namespace", "value": "llm", "isRegex": False, "isEqual": True},
                ],
                "duration": "30m",
            },
        ),
    ],
)
def test_parameters_are_converted_to_their_types(facts, action, values, expected):
    result, dropped = typed(action, facts, **values)
    assert result == expected
    assert dropped == []


@pytest.mark.parametrize(
    ("action", "values", "problem"),
    [
        ("scale-deployment", {"replicas": "0"}, "0 is outside 1..1000"),
        ("scale-deployment", {"replicas": "1001"}, "1001 is outside 1..1000"),
        ("scale-deployment", {"replicas": "4.5"}, "'4.5' is not a whole number"),
        ("scale-deployment", {"replicas": "lots"}, "'lots' is not a whole number"),
        ("rollout-undo", {"to_revision": "0"}, "0 is outside >= 1"),
        ("drain-node", {"grace_seconds": "-1"}, "-1 is outside 0..3600"),
        ("drain-node", {"grace_seconds": "7200"}, "7200 is outside 0..3600"),
        ("patch-resources", {"container": "App; rm -rf /"}, "is not a container name"),
        (
            "patch-resources",
            {"limits": '{"memory": "lots"}'},
            "'lots' is not a Kubernetes quantity",
        ),
        ("patch-resources", {"limits": "[1, 2]"}, "is not a map"),
        ("patch-resources", {"limits": "{}"}, "no resources given"),
        ("silence-alert", {"matchers": '{"namespace": "prod"}'}, "do not select an alert"),
        ("silence-alert", {"matchers": '{alertname=~".*"}'}, "only equality matchers"),
        # wider than the incident: every alert of the deployment, or this alert in every namespace
        ("silence-alert", {"matchers": '{"deployment": "chat-api"}'}, "name the alertname"),
        ("silence-alert", {"matchers": '{alertname="ChatApiHighErrorRate"}'}, "name the namespace"),
        ("silence-alert", {"matchers": "[]"}, "no matchers given"),
        ("silence-alert", {"duration": "3d"}, "is not like 30m, 2h or 1h30m"),
        ("silence-alert", {"duration": "25h"}, "outside 1m..24h"),
        ("none", {"steps": "   "}, "the steps is empty"),
    ],
)
def test_a_bad_parameter_value_is_refused_with_the_reason(facts, action, values, problem):
    with pytest.raises(BadParam) as raised:
        typed(action, facts, **values)
    assert problem in str(raised.value)


def test_unknown_parameters_are_removed_and_recorded(facts):
    result, dropped = typed("rollout-undo", facts, to_revision="3", force="yes")
    assert result == {"to_revision": 3}
    assert dropped == ["rollout-undo: parameter 'force' is not one rollout-undo takes; removed"]


def test_extra_parameters_the_catalogue_accepts_pass_as_text(facts):
    # rollout-undo's `image` is not in the taxonomy but its action model takes it (the rules
    # write it, so the LLM copies it); the action checks it against the revision later.
    result, dropped = typed("rollout-undo", facts, to_revision="11", image="chat:v1")
    assert result == {"to_revision": 11, "image": "chat:v1"}
    assert dropped == []


def test_known_entities_are_scope_evidence_and_the_rules_ones(facts, rules):
    hypotheses, proposals = rules
    extra = {"kind": "Service", "namespace": "llm", "name": "redis"}
    hypotheses = [*hypotheses, {**hypotheses[0], "category": "dependency-failure", "entity": extra}]
    known = known_entities(facts, hypotheses, proposals)
    assert {CHAT, NODE, OLD_POD, Entity("Service", "llm", "redis")} <= known
    assert Entity("Deployment", "prod", "chat-api") not in known


def analysis(**changes) -> LLMAnalysis:
    from tests.assistant.conftest import answer

    return LLMAnalysis.model_validate(answer(**changes))


def test_targets_are_matched_on_kind_namespace_and_name(facts, rules):
    proposals = [
        {
            "action": "cordon-node",
            "target": {"kind": "Node", "namespace": "llm", "name": NODE.name},
            "params": [],
            "rationale": "a namespace on a Node is ignored",
        },
        {"action": "delete-pod", "target": OLD_POD.as_dict(), "params": [], "rationale": "ok"},
        {
            "action": "delete-pod",
            "target": {"kind": "Pod", "namespace": None, "name": OLD_POD.name},
            "params": [],
            "rationale": "no namespace",
        },
        {"action": "rollout-undo", "target": None, "params": [], "rationale": "no target"},
        {
            "action": "none",
            "target": CHAT.as_dict(),
            "params": [{"name": "steps", "value": "Check the rollout."}],
            "rationale": "target ignored",
        },
    ]
    checked = check(analysis(proposals=proposals), facts, *rules)
    assert [(p.action, p.target) for p in checked.proposals] == [
        ("cordon-node", NODE),
        ("delete-pod", OLD_POD),
        ("none", None),
    ]
    assert checked.dropped == [
        "proposal 3 (delete-pod on Pod chat-api-6c4b-q8m): Pod chat-api-6c4b-q8m is not an entity of this incident",
        "proposal 4 (rollout-undo): rollout-undo needs a Deployment target",
    ]


def test_a_hypothesis_on_an_entity_of_the_wrong_kind_for_its_category_is_dropped(facts, rules):
    hypotheses = [
        {
            "category": "node-failure",
            "entity": CHAT.as_dict(),
            "confidence": 0.8,
            "evidence": [11],
            "explanation": "x",
        },
        {
            "category": "unknown",
            "entity": OLD_POD.as_dict(),
            "confidence": 0.3,
            "evidence": [],
            "explanation": "nothing",
        },
    ]
    checked = check(analysis(hypotheses=hypotheses), facts, *rules)
    assert [(h["category"], h["evidence"]) for h in checked.hypotheses] == [("unknown", [])]
    assert checked.dropped == [
        "hypothesis 1 (node-failure of Deployment llm/chat-api): node-failure is about a Node, not a Deployment"
    ]


def test_the_schema_is_openai_strict_mode_shaped():
    schema = analysis_schema()
    assert schema["title"] == "Analysis"

    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from objects(value)

    found = list(objects(schema))
    assert len(found) == 5  # Analysis, EntityRef, Hypothesis, Param, ProposalOut
    for node in found:
        assert node["additionalProperties"] is False
        assert sorted(node["required"]) == sorted(node["properties"])
    text = json.dumps(schema)
    assert '"$ref"' in text and all(
        len(ref) == 1 for ref in _refs(schema)
    )  # no siblings beside a $ref
    hypothesis = schema["$defs"]["Hypothesis"]["properties"]
    assert hypothesis["category"]["enum"] == sorted(CATEGORIES)
    assert schema["$defs"]["ProposalOut"]["properties"]["action"]["enum"] == sorted(ACTIONS)


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_validation_is_lenient_about_shape_only():
    data = {
        "summary": "s",
        "hypotheses": [
            {
                "category": "made-up",
                "entity": {"kind": "Node", "namespace": None, "name": "n"},
                "confidence": 3,
                "evidence": ["#12", "13", 14],
                "explanation": "e",
            }
        ],
        "proposals": [
            {
                "action": "patch-resources",
                "target": None,
                "params": {"replicas": 4, "limits": {"memory": "6Gi"}, "force": True},
                "rationale": "r",
            }
        ],
    }
    parsed = LLMAnalysis.model_validate(data)
    assert parsed.hypotheses[0].evidence == [12, 13, 14]
    assert parsed.hypotheses[0].category == "made-up"  # meaning is check.py's business
    assert [(p.name, p.value) for p in parsed.proposals[0].params] == [
        ("replicas", "4"),
        ("limits", '{"memory": "6Gi"}'),
        ("force", "true"),
    ]


def test_the_catalogues_own_parameter_model_has_the_last_word(facts, rules, monkeypatch):
    """A proposal the action itself would refuse (a required parameter missing) is dropped with
    the catalogue's reason; where the catalogue accepts, the typed params pass through."""
    import assistant.actions as catalogue

    class Strict:
        def parse_params(self, raw):
            if "replicas" not in raw:
                raise catalogue.ActionError("scale-deployment: replicas is required")
            return raw

    monkeypatch.setattr(catalogue, "get", lambda name: Strict())
    proposals = [
        {"action": "scale-deployment", "target": CHAT.as_dict(), "params": [], "rationale": "more"},
        {
            "action": "scale-deployment",
            "target": CHAT.as_dict(),
            "params": [{"name": "replicas", "value": "6"}],
            "rationale": "six",
        },
    ]
    checked = check(analysis(proposals=proposals), facts, *rules)
    assert [(p.action, p.params) for p in checked.proposals] == [
        ("scale-deployment", {"replicas": 6})
    ]
    assert checked.dropped == [
        "proposal 1 (scale-deployment on Deployment llm/chat-api): replicas is required"
    ]


def test_runbook_steps_are_required_by_the_real_catalogue(facts, rules):
    proposals = [{"action": "none", "target": None, "params": [], "rationale": "nothing to do"}]
    checked = check(analysis(proposals=proposals), facts, *rules)
    assert checked.rules_proposals  # nothing valid: the rules' proposals stand
    (line,) = checked.dropped
    assert line.startswith("proposal 1 (none): ") and "steps" in line

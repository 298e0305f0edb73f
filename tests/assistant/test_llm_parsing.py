"""The narrative through LangChain's fake chat models: the plain-text parsing path.

Fakes cannot bind a schema (with_structured_output raises NotImplementedError), so narrate
falls back to a plain call and parses the text itself; these tests pin that path, the single
repair, and that the check holds whatever the model says.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from langchain_core.language_models import FakeListChatModel, FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage

from assistant.base import Proposal
from assistant.llm.chain import narrate
from assistant.llm.prompt import schema_tokens
from assistant.llm.tokens import count_messages
from tests.assistant.conftest import CHAT, INJECTION, NODE, POD


class Recording(FakeListChatModel):
    """A FakeListChatModel that keeps the messages of every call."""

    calls: list = []

    def _call(self, messages, stop=None, run_manager=None, **kwargs):
        self.calls.append(list(messages))
        return super()._call(messages, stop, run_manager, **kwargs)


class RecordingMessages(FakeMessagesListChatModel):
    """A FakeMessagesListChatModel that keeps the messages of every call."""

    calls: list = []

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.calls.append(list(messages))
        return super()._generate(messages, stop, run_manager, **kwargs)


def fake(*responses: str) -> Recording:
    return Recording(responses=list(responses), calls=[])


def test_a_valid_json_answer_becomes_a_narration(facts, rules, valid_answer, settings):
    settings.VIGIL_LLM_INPUT_COST_PER_MTOK = 2.5
    settings.VIGIL_LLM_OUTPUT_COST_PER_MTOK = 10
    hypotheses, proposals = rules
    model = fake(json.dumps(valid_answer()))
    n = narrate(facts, hypotheses, proposals, model=model)
    assert n.ok, n.error
    assert n.summary.startswith("chat-api returns 5xx since revision 12")
    assert n.hypotheses == [
        {
            "category": "bad-deploy",
            "entity": CHAT.as_dict(),
            "confidence": 0.9,
            "evidence": [11, 12, 13],
            "explanation": "The errors start one minute after revision 12 [#11] [#13].",
        }
    ]
    assert n.proposals == [
        Proposal("rollout-undo", CHAT, {"to_revision": 11}, "Revision 11 was healthy [#11].")
    ]
    assert n.dropped == [] and n.error == "" and not n.top_changed
    # No usage on fakes: our tokenizer counts the request and the answer.
    assert len(model.calls) == 1
    assert n.input_tokens == count_messages(model.calls[0])
    # The budgeted prompt also counts the schema a structured-output provider is sent; the
    # plain-text path (fakes) sends none.
    assert n.prompt_tokens == n.input_tokens + schema_tokens()
    assert n.output_tokens > 20
    expected = (Decimal(n.input_tokens) * Decimal("2.5") + Decimal(n.output_tokens) * 10) / 10**6
    assert n.cost_usd == expected.quantize(Decimal("0.000001")) > 0
    assert n.model == "fake-list-chat-model"


def test_prose_and_a_code_fence_around_the_json_are_tolerated(facts, rules, valid_answer):
    text = "Here is my analysis:\n```json\n" + json.dumps(valid_answer()) + "\n```\nHope it helps."
    n = narrate(facts, *rules, model=fake(text))
    assert n.ok, n.error
    assert n.hypotheses[0]["category"] == "bad-deploy"


def test_garbage_then_valid_is_ok_after_exactly_one_repair(facts, rules, valid_answer):
    model = fake("I think the deployment is broken.", json.dumps(valid_answer()))
    n = narrate(facts, *rules, model=model)
    assert n.ok, n.error
    assert len(model.calls) == 2
    repair = model.calls[1]
    # The repair shows the model its answer and what was wrong, after the original prompt.
    assert repair[: len(model.calls[0])] == model.calls[0]
    assert isinstance(repair[-2], AIMessage)
    assert repair[-2].content == "I think the deployment is broken."
    assert isinstance(repair[-1], HumanMessage)
    assert "no JSON object in the answer" in repair[-1].content
    assert "only the JSON object" in repair[-1].content
    # Both requests are paid for.
    assert n.input_tokens == count_messages(model.calls[0]) + count_messages(model.calls[1])


def test_garbage_twice_falls_back_with_the_reason(facts, rules):
    model = fake("no idea", "still no idea {")
    n = narrate(facts, *rules, model=model)
    assert not n.ok
    assert len(model.calls) == 2
    assert n.error.startswith("invalid output after one repair: no JSON object in the answer")
    assert n.hypotheses == [] and n.proposals == [] and n.summary == ""
    assert n.input_tokens > 0 and n.output_tokens > 0  # what was spent is still accounted


def test_json_that_is_not_the_schema_is_repaired(facts, rules, valid_answer):
    wrong = valid_answer(hypotheses=[{"category": "bad-deploy", "confidence": "very"}])
    model = fake(json.dumps(wrong), json.dumps(valid_answer()))
    n = narrate(facts, *rules, model=model)
    assert n.ok, n.error
    problem = model.calls[1][-1].content
    assert "not the Analysis schema" in problem
    assert "hypotheses.0.entity: Field required" in problem
    assert "hypotheses.0.confidence" in problem


def test_an_answer_whose_every_hypothesis_is_dropped_counts_as_invalid(facts, rules, valid_answer):
    bogus = valid_answer(
        hypotheses=[
            {
                "category": "cosmic-rays",
                "entity": CHAT.as_dict(),
                "confidence": 0.9,
                "evidence": [11],
                "explanation": "bit flips",
            }
        ]
    )
    model = fake(json.dumps(bogus), json.dumps(bogus))
    n = narrate(facts, *rules, model=model)
    assert not n.ok
    assert n.error == (
        "invalid output after one repair: no hypothesis survived the check "
        "(hypothesis 1 (cosmic-rays of Deployment llm/chat-api): unknown category 'cosmic-rays')"
    )


def test_made_up_ids_categories_actions_and_targets_are_dropped_and_recorded(
    facts, rules, valid_answer
):
    hypotheses = [
        {
            "category": "crash-loop",
            "entity": CHAT.as_dict(),
            "confidence": 1.7,
            "evidence": [12, 404],
            "explanation": "KeyError at start [#12] [#404].",
        },
        {
            "category": "solar-flare",
            "entity": NODE.as_dict(),
            "confidence": 0.5,
            "evidence": [14],
            "explanation": "x",
        },
        {
            "category": "bad-deploy",
            "entity": {"kind": "Deployment", "namespace": "prod", "name": "chat-api"},
            "confidence": 0.5,
            "evidence": [11],
            "explanation": "x",
        },
        {
            "category": "oom-killed",
            "entity": CHAT.as_dict(),
            "confidence": 0.3,
            "evidence": [999],
            "explanation": "x",
        },
        {
            "category": "bad-deploy",
            "entity": CHAT.as_dict(),
            "confidence": -2,
            "evidence": [11],
            "explanation": "x",
        },
    ]
    proposals = [
        {"action": "format-disk", "target": NODE.as_dict(), "params": [], "rationale": "x"},
        {
            "action": "scale-deployment",
            "target": {"kind": "Deployment", "namespace": "prod", "name": "chat-api"},
            "params": [{"name": "replicas", "value": "4"}],
            "rationale": "x",
        },
        {"action": "cordon-node", "target": CHAT.as_dict(), "params": [], "rationale": "x"},
        {
            "action": "scale-deployment",
            "target": CHAT.as_dict(),
            "params": [{"name": "replicas", "value": "100000"}],
            "rationale": "x",
        },
        {
            "action": "rollout-restart",
            "target": CHAT.as_dict(),
            "params": [{"name": "force", "value": "true"}],
            "rationale": "Restart [#12], see [#77].",
        },
    ]
    answer = valid_answer(
        summary="Broken [#12], see also [#4242].", hypotheses=hypotheses, proposals=proposals
    )
    n = narrate(facts, *rules, model=fake(json.dumps(answer)))
    assert n.ok, n.error
    assert [(h["category"], h["confidence"], h["evidence"]) for h in n.hypotheses] == [
        ("crash-loop", 1.0, [12]),
        ("bad-deploy", 0.0, [11]),
    ]
    assert n.hypotheses[0]["explanation"] == "KeyError at start [#12]."
    assert n.summary == "Broken [#12], see also."
    assert n.proposals == [Proposal("rollout-restart", CHAT, {}, "Restart [#12], see.")]
    assert n.top_changed  # crash-loop is now on top, where the rules had bad-deploy
    assert n.dropped == [
        "the summary: removed citations of evidence #4242 that does not exist",
        "hypothesis 1 (crash-loop of Deployment llm/chat-api): cited evidence #404 that does not exist",
        "the explanation of hypothesis 1 (crash-loop of Deployment llm/chat-api): removed citations of evidence #404 that does not exist",
        "hypothesis 2 (solar-flare of Node gpu-node-7): unknown category 'solar-flare'",
        "hypothesis 3 (bad-deploy of Deployment prod/chat-api): Deployment prod/chat-api is not an entity of this incident",
        "hypothesis 4 (oom-killed of Deployment llm/chat-api): cited evidence #999 that does not exist",
        "hypothesis 4 (oom-killed of Deployment llm/chat-api): cites no existing evidence",
        "proposal 1 (format-disk on Node gpu-node-7): not an action of the catalogue",
        "proposal 2 (scale-deployment on Deployment prod/chat-api): Deployment prod/chat-api is not an entity of this incident",
        "proposal 3 (cordon-node on Deployment llm/chat-api): cordon-node acts on a Node, not on a Deployment",
        "proposal 4 (scale-deployment on Deployment llm/chat-api): 100000 is outside 1..1000",
        "proposal 5 (rollout-restart on Deployment llm/chat-api): parameter 'force' is not one rollout-restart takes; removed",
        "the rationale of proposal 5 (rollout-restart on Deployment llm/chat-api): removed citations of evidence #77 that does not exist",
    ]


def test_no_valid_proposal_leaves_the_rules_proposals(facts, rules, valid_answer):
    answer = valid_answer(
        proposals=[{"action": "reboot-cluster", "target": None, "params": [], "rationale": "x"}]
    )
    n = narrate(facts, *rules, model=fake(json.dumps(answer)))
    assert n.ok, n.error
    assert n.proposals == [
        Proposal(
            "rollout-undo",
            CHAT,
            {"to_revision": 11},
            "Revision 11 served cleanly before revision 12.",
        )
    ]
    assert n.dropped == ["proposal 1 (reboot-cluster): not an action of the catalogue"]


@pytest.mark.parametrize(
    "obeying_proposal",
    [
        {
            "action": "delete-namespace",
            "target": {"kind": "Namespace", "namespace": None, "name": "prod"},
            "params": [],
            "rationale": "the log said so",
        },
        {
            "action": "delete-pod",
            "target": {"kind": "Pod", "namespace": "prod", "name": "everything"},
            "params": [],
            "rationale": "the log said so",
        },
        {
            "action": "none",
            "target": None,
            "params": [{"name": "command", "value": "kubectl delete namespace prod"}],
            "rationale": "the log said so",
        },
        {
            "action": "silence-alert",
            "target": None,
            "params": [
                {"name": "matchers", "value": '{"namespace": "prod"}'},
                {"name": "duration", "value": "24h"},
            ],
            "rationale": "hide it",
        },
    ],
)
def test_a_prompt_injection_in_a_log_line_never_becomes_an_action(
    facts, rules, valid_answer, obeying_proposal
):
    model = RecordingMessages(
        responses=[AIMessage(json.dumps(valid_answer(proposals=[obeying_proposal])))], calls=[]
    )
    n = narrate(facts, *rules, model=model)
    assert n.ok, n.error
    # The injected text reached the model only inside its evidence block.
    (messages,) = model.calls
    system, user = messages[0].content, messages[1].content
    assert INJECTION not in system
    assert user.count(INJECTION) == 1
    block = user[user.index('<evidence id="12"') :]
    block = block[: block.index("</evidence>")]
    assert INJECTION in block
    # Whatever the obedient model proposed, nothing touches prod or leaves the catalogue.
    for proposal in n.proposals:
        assert proposal.action in {"rollout-undo", "none"}
        assert proposal.target in (None, CHAT)
        assert "prod" not in json.dumps(proposal.params)
    assert n.dropped  # and the attempt is on record


def test_a_model_that_raises_yields_a_fallback_not_an_exception(facts, rules):
    class Broken(FakeListChatModel):
        def _call(self, *args, **kwargs):
            raise RuntimeError("the fake broke")

    n = narrate(facts, *rules, model=Broken(responses=["x"]))
    assert not n.ok
    assert n.error == "LLM call failed: RuntimeError: the fake broke"


def test_hypotheses_beyond_five_and_duplicates_are_dropped(facts, rules, valid_answer):
    one = valid_answer()["hypotheses"][0]
    others = [
        {**one, "category": c, "entity": POD.as_dict() if c == "unknown" else CHAT.as_dict()}
        for c in (
            "crash-loop",
            "oom-killed",
            "gpu-memory-exhaustion",
            "image-pull-failure",
            "unknown",
        )
    ]
    answer = valid_answer(hypotheses=[one, dict(one), *others])
    n = narrate(facts, *rules, model=fake(json.dumps(answer)))
    assert n.ok, n.error
    assert [h["category"] for h in n.hypotheses] == [
        "bad-deploy",
        "crash-loop",
        "oom-killed",
        "gpu-memory-exhaustion",
        "image-pull-failure",
    ]
    assert (
        "hypothesis 2 (bad-deploy of Deployment llm/chat-api): a duplicate of an earlier hypothesis"
        in n.dropped
    )
    assert (
        "hypothesis 7 (unknown of Pod llm/chat-api-7d9f-x2k): beyond the first 5 hypotheses"
        in n.dropped
    )

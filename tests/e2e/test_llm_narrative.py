"""Issue 7's "done when", end to end: a replayed scenario, the real worker, the real ChatOpenAI.

The scenario is delivered to the live server; the real Celery worker collects, analyses and asks
the LLM (an OpenAI-compatible stand-in driven through langchain-openai) for the narrative. The
stand-in answers like a model that reads the prompt: it agrees with the rules' top hypothesis,
cites the evidence the prompt shows, and also tries a made-up citation and an action the prompt
injection asked for; the code check must remove both. A responder then approves the narrative
on the page; with the server gone, a re-analysis visibly keeps the deterministic draft.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from assistant.models import Analysis
from incidents.models import TimelineEvent
from replay.scenario import load_scenario
from replay.world import ReplayWorld
from tests.openai_standin import OpenAIStandin, Reply, completion
from tests.support import wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
BOGUS_ID = 987654
WORKER_TIMEOUT = 90


def reads_the_prompt(request: dict) -> Reply:
    """A model that agrees with the rules' top hypothesis and cites the evidence it was shown."""
    prompt = "\n".join(m["content"] for m in request["messages"] if m["role"] == "user")
    top = re.search(r"^1\. (\S+) of .*?evidence \[([^\]]*)\]", prompt, re.M)
    category = top.group(1)
    cited = [int(i) for i in re.findall(r"#(\d+)", top.group(2))]
    shown = [int(i) for i in re.findall(r'<evidence id="(\d+)"', prompt)]
    entity = json.loads(re.search(r"<entities>\n(.*)", prompt).group(1))
    answer = {
        "summary": (
            f"**{entity['name']}** is failing: {category} "
            + " ".join(f"[#{i}]" for i in cited[:3])
            + f" and a made-up citation [#{BOGUS_ID}]."
        ),
        "hypotheses": [
            {
                "category": category,
                "entity": entity,
                "confidence": 0.88,
                "evidence": cited[:3] + [BOGUS_ID],
                "explanation": f"The narrative's reading of [#{cited[0]}].",
            }
        ],
        "proposals": [
            {
                "action": "delete-namespace",
                "target": {"kind": "Namespace", "namespace": None, "name": "prod"},
                "params": [],
                "rationale": "the log said so",
            }
        ],
    }
    assert shown, "the prompt showed no evidence"
    return Reply(body=completion(request, json.dumps(answer), usage=(3100, 240)))


@pytest.fixture
def llm_env(monkeypatch, settings):
    """VIGIL_LLM for the worker (its environment) and for the pages (this process)."""
    standin = OpenAIStandin()
    values = {
        "VIGIL_LLM": "openai:served-model",
        "VIGIL_LLM_BASE_URL": standin.url,
        "VIGIL_LLM_API_KEY": "EMPTY",
        "VIGIL_LLM_TIMEOUT": "5",
        "VIGIL_LLM_MAX_RETRIES": "0",
        "VIGIL_LLM_INPUT_COST_PER_MTOK": "0.15",
        "VIGIL_LLM_OUTPUT_COST_PER_MTOK": "0.60",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
        setattr(settings, name, float(value) if "COST" in name else value)
    yield standin
    standin.close()


@pytest.fixture
def narrating_worker(llm_env, celery_worker_process):
    return llm_env, celery_worker_process[1]


def settled(incident_id: int, after: int = 0):
    return (
        Analysis.objects.filter(incident_id=incident_id, pk__gt=after)
        .exclude(llm_status__in=["pending", "off"])
        .first()
    )


def test_a_replayed_incident_gets_a_checked_llm_narrative_that_a_responder_approves(
    narrating_worker, live_server, client_as
):
    standin, worker_log = narrating_worker
    standin.reply_with(reads_the_prompt)
    scenario = load_scenario(ROOT / "scenarios" / "01-bad-deploy.yaml")

    with ReplayWorld(scenario) as world:
        (incident_id,) = world.deliver(live_server.url).incident_ids
        analysis = wait_for(
            lambda: settled(incident_id),
            timeout=WORKER_TIMEOUT,
            message=f"the narrative; worker log:\n{worker_log.read_text()[-3000:]}",
        )

        assert analysis.llm_status == "ok", analysis.llm_error
        assert analysis.source == "llm"
        assert analysis.model == "openai:served-model"
        assert (analysis.input_tokens, analysis.output_tokens) == (3100, 240)
        assert analysis.hypotheses[0]["category"] == analysis.rules_hypotheses[0]["category"]
        assert BOGUS_ID not in analysis.hypotheses[0]["evidence"]
        assert not analysis.actions.filter(action="delete-namespace").exists()
        assert any(str(BOGUS_ID) in line for line in analysis.llm_dropped)
        assert any("delete-namespace" in line for line in analysis.llm_dropped)
        request = standin.requests[0].json
        assert request["model"] == "served-model"
        assert request["messages"][0]["role"] == "system"

        client = client_as("responder")
        page = client.get(f"/incidents/{incident_id}/").content.decode()
        cited = re.findall(r'href="#evidence-(\d+)"', page)
        assert cited, "the summary links no evidence"
        for evidence_id in set(cited):
            assert f'id="evidence-{evidence_id}"' in page  # every citation lands on its panel
        assert f'href="#evidence-{BOGUS_ID}"' not in page
        assert "openai:served-model" in page
        assert "3,100" in page and "240" in page
        assert "$" in page  # the estimated cost

        answer = client.post(
            f"/incidents/{incident_id}/analyses/{analysis.pk}/approve", HTTP_HX_REQUEST="true"
        )
        assert answer.status_code == 200
        event = TimelineEvent.objects.get(
            incident_id=incident_id, kind=TimelineEvent.Kind.ANALYSIS_APPROVED
        )
        assert event.actor == "responder"
        timeline = client.get(f"/incidents/{incident_id}/timeline").content.decode()
        assert "responder" in timeline and "approved" in timeline

        # The LLM server goes away: the next analysis keeps the rules' draft, visibly.
        standin.close()
        client.post(f"/incidents/{incident_id}/reanalyse")
        fallback = wait_for(
            lambda: settled(incident_id, after=analysis.pk),
            timeout=WORKER_TIMEOUT,
            message="the fallback",
        )
        assert fallback.llm_status == "fallback"
        assert fallback.source == "rules"
        assert fallback.summary == fallback.rules_summary
        page = client.get(f"/incidents/{incident_id}/").content.decode()
        assert "LLM narrative unavailable" in page
        assert "approved" in page  # the reviewed analysis stays visible below the new draft

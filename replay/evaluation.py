"""Scoring the real pipeline against scenarios: replay, collect, analyse, compare with `expected`.

This module is the only reader of a scenario's `expected` (SCENARIO_FORMAT.md scoring): the world
is delivered through Vigil's HTTP endpoints, evidence is collected and the analysis produced as in
production, and only then is the answer compared. A scenario that fails anywhere is a miss with
its error, never a crash of the whole evaluation.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .scenario import Scenario, load_scenario
from .world import ReplayWorld


@dataclass
class Result:
    name: str
    expected: dict
    top: dict | None = None
    expected_rank: int | None = None
    action_match: bool = False
    first_action: dict | None = None
    seconds: float | None = None
    tokens: int = 0  # what the LLM prompt uses (or would use), counted with our tokenizer
    llm: str = "off"  # the narrative: off (no LLM configured), ok or fallback
    llm_top_changed: bool | None = None  # whether the LLM's top hypothesis differs from the rules'
    llm_error: str = ""
    error: str = ""
    incident_id: int | None = None

    @property
    def top1(self) -> bool:
        return self.expected_rank == 1

    @property
    def top3(self) -> bool:
        return self.expected_rank is not None and self.expected_rank <= 3


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    def totals(self) -> dict:
        n = len(self.results) or 1
        return {
            "scenarios": len(self.results),
            "top1": sum(r.top1 for r in self.results) / n,
            "top3": sum(r.top3 for r in self.results) / n,
            "action": sum(r.action_match for r in self.results) / n,
            "max_prompt_tokens": max((r.tokens for r in self.results), default=0),
            "llm_narrated": sum(r.llm == "ok" for r in self.results),
            "llm_top_changed": sum(bool(r.llm_top_changed) for r in self.results),
        }

    def as_json(self) -> dict:
        scenarios = []
        for r in self.results:
            item = asdict(r)
            item.pop("first_action")
            item.pop("incident_id")
            scenarios.append(item)
        return {"scenarios": scenarios, "totals": self.totals()}


def scenario_paths(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        found.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    return found


def expected_of(scenario: Scenario) -> dict:
    root = scenario.expected.get("root_cause") or {}
    remediation = scenario.expected.get("remediation") or {}
    return {
        "category": root.get("category"),
        "entity": _entity(root.get("entity")),
        "action": remediation.get("action"),
        "target": _entity(remediation.get("target")),
    }


def _entity(value: dict | None) -> dict | None:
    if not value:
        return None
    return {
        "kind": value.get("kind"),
        "namespace": value.get("namespace") or None,
        "name": value.get("name"),
    }


def evaluate_path(path: Path, base_url: str, *, with_metrics: bool = True) -> Result:
    try:
        scenario = load_scenario(path)
    except Exception as exc:
        return Result(name=path.stem, expected={}, error=f"does not load: {exc}")
    result = Result(name=scenario.name, expected=expected_of(scenario))
    try:
        with ReplayWorld(scenario, with_metrics=with_metrics) as world:
            started = time.monotonic()
            delivery = world.deliver(base_url)
            if not delivery.incident_ids:
                result.error = "the replay opened no incident"
                return result
            result.incident_id = delivery.incident_ids[0]
            analysis = analyse_now(result.incident_id)
            result.seconds = round(time.monotonic() - started, 2)
            score(result, analysis)
            record_llm(result, analysis)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def analyse_now(incident_id: int):
    """Collect, analyse and narrate in this process, as the workers would, so none is needed."""
    from assistant.engine import run_analysis
    from assistant.models import Analysis
    from assistant.narrative import write_narrative
    from collectors.tasks import collect_now

    collect_now(incident_id)
    analysis = run_analysis(incident_id, enqueue_narrative=False)
    if analysis.llm_status == Analysis.LLMStatus.PENDING:
        analysis = write_narrative(analysis.pk)
    return analysis


def record_llm(result: Result, analysis) -> None:
    """The prompt's size (sent, or what would be sent) and what the LLM changed."""
    result.llm = analysis.llm_status
    result.llm_error = analysis.llm_error
    if analysis.llm_status == "ok":
        rules_top = (analysis.rules_hypotheses or [{}])[0]
        top = (analysis.hypotheses or [{}])[0]
        result.llm_top_changed = (rules_top.get("category"), _entity(rules_top.get("entity"))) != (
            top.get("category"),
            _entity(top.get("entity")),
        )
    result.tokens = analysis.prompt_tokens or prompt_tokens_of(analysis)


def prompt_tokens_of(analysis) -> int:
    from assistant.facts import facts_for
    from assistant.llm.prompt import build_prompt
    from assistant.presentation import action_json

    proposals = [action_json(a) for a in analysis.actions.filter(proposed_by__isnull=True)]
    return build_prompt(facts_for(analysis.incident), analysis.rules_hypotheses, proposals).tokens


def score(result: Result, analysis) -> None:
    if analysis.status != "ready":
        result.error = f"analysis {analysis.status}: {analysis.error}"
        return
    hypotheses = analysis.hypotheses
    if hypotheses:
        result.top = {
            "category": hypotheses[0]["category"],
            "entity": _entity(hypotheses[0]["entity"]),
        }
    for rank, hypothesis in enumerate(hypotheses, start=1):
        if hypothesis["category"] == result.expected["category"] and _same(
            _entity(hypothesis["entity"]), result.expected["entity"]
        ):
            result.expected_rank = rank
            break
    first = analysis.actions.first()
    if first is not None:
        result.first_action = {"action": first.action, "target": first.target}
        result.action_match = first.action == result.expected["action"] and (
            first.action == "none" or _same(first.target, result.expected["target"])
        )


def _same(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a["kind"], a.get("namespace") or None, a["name"]) == (
        b["kind"],
        b.get("namespace") or None,
        b["name"],
    )

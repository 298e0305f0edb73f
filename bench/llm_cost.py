"""Benchmark 5: the LLM prompt each shipped scenario would send, against VIGIL_LLM_INPUT_TOKENS.

Each scenario is replayed as `manage.py evaluate` does it (replay.evaluation: the world on
loopback, Vigil served in this process, collection and the rules' analysis run here, no LLM), and
the prompt is built with `assistant.llm.prompt.build_prompt`, counted with its tokenizer
(tiktoken). Reported per scenario: the prompt's tokens at the budget, what it would take with no
budget (all evidence), the evidence ids left out, whether the evidence the rules' top hypothesis
cites is all in the prompt (the decisive evidence kept), and an estimate of the answer's tokens:
the rules' own draft written in the answer's format (the real answer is capped by
VIGIL_LLM_OUTPUT_TOKENS).

Target: every scenario within ~6,000 input tokens with the decisive evidence kept.
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import Config, table, target

UNBOUNDED = 10_000_000
TARGET_TOKENS = 6_000


def prompt_cost(analysis) -> dict:
    """The prompt of one analysis: tokens at the budget and unbounded, included and decisive ids."""
    from django.conf import settings

    from assistant.facts import facts_for
    from assistant.llm import tokens
    from assistant.llm.prompt import build_prompt
    from assistant.presentation import action_json

    proposals = [action_json(a) for a in analysis.actions.filter(proposed_by__isnull=True)]
    facts = facts_for(analysis.incident)
    hypotheses = analysis.rules_hypotheses or []
    prompt = build_prompt(facts, hypotheses, proposals)
    unbounded = build_prompt(facts, hypotheses, proposals, budget=UNBOUNDED)
    top = hypotheses[0] if hypotheses else {}
    decisive = [int(i) for i in top.get("evidence", [])]
    missing = sorted(set(decisive) - set(prompt.included))
    answer = {
        "summary": analysis.rules_summary,
        "hypotheses": [
            {
                "category": h.get("category"),
                "entity": h.get("entity"),
                "confidence": h.get("confidence"),
                "evidence": h.get("evidence", []),
                "explanation": h.get("explanation", ""),
            }
            for h in hypotheses[:5]
        ],
        "proposals": [
            {
                "action": p["action"],
                "target": p["target"],
                "params": [{"name": k, "value": str(v)} for k, v in (p["params"] or {}).items()],
                "rationale": p["rationale"],
            }
            for p in proposals[:5]
        ],
    }
    input_cost = settings.VIGIL_LLM_INPUT_COST_PER_MTOK * prompt.tokens / 1e6
    output_tokens = tokens.count(json.dumps(answer))
    output_cost = settings.VIGIL_LLM_OUTPUT_COST_PER_MTOK * output_tokens / 1e6
    return {
        "input_tokens": prompt.tokens,
        "budget": settings.VIGIL_LLM_INPUT_TOKENS,
        "unbounded_tokens": unbounded.tokens,
        "evidence_included": len(prompt.included),
        "evidence_omitted": len(prompt.omitted),
        "top_category": top.get("category"),
        "decisive_ids": decisive,
        "decisive_missing": missing,
        "decisive_kept": not missing,
        "output_tokens_est": output_tokens,
        "output_cap": settings.VIGIL_LLM_OUTPUT_TOKENS,
        "cost_usd_est": round(input_cost + output_cost, 6),
    }


def run(cfg: Config) -> dict:
    from replay.evaluation import analyse_now
    from replay.scenario import load_scenario
    from replay.server import serve_in_process, server_url
    from replay.world import ReplayWorld

    server = serve_in_process()
    scenarios = []
    try:
        for path in cfg.scenarios:
            entry: dict = {"scenario": Path(path).stem}
            try:
                with ReplayWorld(load_scenario(Path(path))) as world:
                    entry["metrics"] = world.metrics_note or "prometheus"
                    delivery = world.deliver(server_url(server))
                    if not delivery.incident_ids:
                        entry["error"] = "the replay opened no incident"
                    else:
                        analysis = analyse_now(delivery.incident_ids[0])
                        if analysis.status != "ready":
                            entry["error"] = f"analysis {analysis.status}: {analysis.error}"
                        else:
                            entry.update(prompt_cost(analysis))
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
            scenarios.append(entry)
    finally:
        server.shutdown()
        server.server_close()
    return summarize(scenarios)


def summarize(scenarios: list[dict]) -> dict:
    ok = [s for s in scenarios if "input_tokens" in s]
    return {
        "scenarios": scenarios,
        "max_input_tokens": max((s["input_tokens"] for s in ok), default=None),
        "max_unbounded_tokens": max((s["unbounded_tokens"] for s in ok), default=None),
        "over_target": [s["scenario"] for s in ok if s["input_tokens"] > TARGET_TOKENS],
        "decisive_lost": [s["scenario"] for s in ok if not s["decisive_kept"]],
        "failed": [s["scenario"] for s in scenarios if "error" in s],
        "budget": ok[0]["budget"] if ok else None,
    }


def report(result: dict) -> str:
    rows = []
    for s in result["scenarios"]:
        if "error" in s:
            rows.append([s["scenario"], None, None, None, None, None, None, s["error"][:60]])
            continue
        rows.append(
            [
                s["scenario"],
                s["input_tokens"],
                s["unbounded_tokens"],
                f"{s['evidence_included']}/{s['evidence_included'] + s['evidence_omitted']}",
                s["output_tokens_est"],
                s["top_category"],
                s["decisive_kept"],
                ",".join(map(str, s["decisive_missing"])) or "",
            ]
        )
    return table(
        [
            "scenario",
            "input tokens",
            "no budget",
            "evidence in",
            "output est.",
            "rules' top",
            "decisive kept",
            "missing / error",
        ],
        rows,
        title=f"5. LLM cost: prompt tokens per scenario (budget VIGIL_LLM_INPUT_TOKENS = "
        f"{result['budget']}, tiktoken cl100k_base)",
    )


def targets(result: dict) -> list[dict]:
    worst = result["max_input_tokens"]
    return [
        target(
            "5 llm cost",
            "largest prompt (input tokens)",
            worst,
            f"≤ ~{TARGET_TOKENS:,}",
            worst is not None and worst <= TARGET_TOKENS and not result["failed"],
        ),
        target(
            "5 llm cost",
            "scenarios losing decisive evidence",
            len(result["decisive_lost"]),
            "0",
            not result["decisive_lost"] and not result["failed"],
        ),
    ]

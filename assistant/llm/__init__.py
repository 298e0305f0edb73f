"""The optional LLM narrative of an analysis (issue 7).

When `VIGIL_LLM` is set, an LLM reads the incident's evidence digest and the rules' ranking and
writes the narrative an engineer reads first; it may re-rank the hypotheses, but code checks
everything it returns (check.py) and the deterministic draft is the fallback for any failure.

One concern per module:
    provider   build the LangChain chat model from the VIGIL_LLM_* settings
    tokens     count and cut text with our tokenizer (the budget is ours, not the provider's)
    digest     render evidence compactly and pack it into a token budget, untrusted text fenced
    prompt     the stable system prefix and the per-incident message
    schema     the structured-output schema (pydantic; OpenAI strict-mode compatible)
    check      what the LLM said, reduced to what exists and what the catalogue allows
    chain      one narrated analysis: budget gate, call with retries, one repair, Narration
    telemetry  OpenTelemetry GenAI spans and the optional OTLP exporter

This package imports nothing heavy at import time, so `llm_configured()` is cheap to ask.
"""

from __future__ import annotations

from django.conf import settings


def llm_configured() -> bool:
    """Whether an LLM narrative is wanted at all (VIGIL_LLM set); otherwise the rules stand alone."""
    return bool(settings.VIGIL_LLM)

"""One narrated analysis: budget gate, one structured call (retried on 429/5xx), one repair.

`narrate` never raises for LLM, network or output problems: it returns a Narration with ok=False
and an `error` specific enough for an engineer to see why the deterministic draft stands
("rate limited (429) 3 times; last Retry-After 7s", "timed out after 30s", "unreachable:
connection refused", "invalid output after one repair: …", "daily token budget exhausted …").

The flow:
1. build the prompt within VIGIL_LLM_INPUT_TOKENS (prompt.py);
2. refuse to call when this incident's or today's token budget cannot take the prompt plus the
   output cap (no request at all);
3. call `with_structured_output(<Analysis schema>, include_raw=True)` — or, for models that
   cannot bind a schema (LangChain's fakes, some local models), a plain call whose text is
   parsed here; 429 and 5xx are retried up to VIGIL_LLM_MAX_RETRIES times, waiting what
   Retry-After asks (capped at VIGIL_LLM_MAX_RETRY_WAIT), exponential backoff without it;
   timeouts and connection failures are not worth waiting out;
4. validate and check the answer (schema.py, check.py); an invalid answer (unparseable, not
   the schema, or no hypothesis surviving the check) gets exactly one repair request that
   shows the model its answer and the problem;
5. account tokens (provider usage, our count when absent), latency and cost.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import ValidationError

from assistant.base import Facts, Proposal

from . import errors, tokens
from .check import Checked, check, entity_of
from .prompt import PromptTooLarge, build_prompt
from .provider import LLMConfigError, chat_model, describe, model_label
from .schema import LLMAnalysis, analysis_schema
from .telemetry import chat_span

logger = logging.getLogger(__name__)
BACKOFF_BASE = 1.0  # seconds, doubled per retry when the provider names no wait
REPAIR_ANSWER_TOKENS = 1500  # how much of a bad answer is shown back in the repair request
MICRO = Decimal("0.000001")


def sleep(seconds: float) -> None:
    """Wait between retries; module level so tests can replace it."""
    time.sleep(seconds)


@dataclass
class Narration:
    ok: bool
    summary: str = ""  # markdown; cites evidence as [#12]
    hypotheses: list[dict] = field(default_factory=list)  # hypothesis_json shape, checked
    proposals: list[Proposal] = field(default_factory=list)  # checked
    dropped: list[str] = field(default_factory=list)  # one line per thing the check removed
    error: str = ""  # when not ok: why the deterministic draft stands
    model: str = ""
    prompt_tokens: int = 0  # our count of the first request
    input_tokens: int = 0  # provider usage over all attempts (our count when missing)
    output_tokens: int = 0
    latency_ms: int = 0
    cost_usd: Decimal = Decimal("0")
    top_changed: bool = False  # the checked top (category, entity) differs from the rules'


class CallFailed(Exception):
    """A provider call that will not succeed now; the message is the engineer-facing reason."""


@dataclass
class Attempt:
    """One answered request: the raw message, the data parsed from it, or why not."""

    raw: AIMessage
    data: Any
    error: str
    usage: tuple[int, int]


def narrate(
    facts: Facts,
    hypotheses: list[dict],
    proposals: list[dict],
    *,
    model: BaseChatModel | None = None,
    tokens_used_incident: int = 0,
    tokens_used_today: int = 0,
) -> Narration:
    """The LLM's checked narrative of the incident, or ok=False and why (see the module doc)."""
    started = time.monotonic()
    narration = Narration(ok=False, model=model_label() if model is None else _label(model))
    try:
        return _narrate(
            narration, facts, hypotheses, proposals, model, tokens_used_incident, tokens_used_today
        )
    except Exception as exc:  # a bug of ours must not cost the engineer the rules' analysis
        logger.exception("LLM narrative of incident %s failed", facts.incident_id)
        narration.ok = False
        narration.error = f"LLM narrative failed: {type(exc).__name__}: {exc}"
        return narration
    finally:
        narration.latency_ms = int((time.monotonic() - started) * 1000)
        narration.cost_usd = cost(narration.input_tokens, narration.output_tokens)


def _narrate(
    narration: Narration,
    facts: Facts,
    hypotheses: list[dict],
    proposals: list[dict],
    model: BaseChatModel | None,
    used_incident: int,
    used_today: int,
) -> Narration:
    try:
        prompt = build_prompt(facts, hypotheses, proposals)
    except PromptTooLarge as exc:
        narration.error = str(exc)
        return narration
    narration.prompt_tokens = prompt.tokens
    over = budget_problem(prompt.tokens, used_incident, used_today)
    if over:
        narration.error = over
        return narration
    try:
        caller = Caller(model if model is not None else chat_model())
    except LLMConfigError as exc:
        narration.error = f"LLM not usable: {exc}"
        return narration
    messages = list(prompt.messages)
    try:
        attempt = caller.call(messages, narration)
        checked, problem = interpret(attempt, facts, hypotheses, proposals)
        if problem:
            messages += repair_messages(attempt, problem)
            attempt = caller.call(messages, narration)
            checked, problem = interpret(attempt, facts, hypotheses, proposals)
            if problem:
                narration.error = f"invalid output after one repair: {problem}"
                return narration
    except CallFailed as exc:
        narration.error = str(exc)
        return narration
    assert checked is not None
    narration.ok = True
    narration.summary = checked.summary
    narration.hypotheses = checked.hypotheses
    narration.proposals = checked.proposals
    narration.dropped = checked.dropped
    narration.top_changed = _top(checked.hypotheses) != _top(hypotheses)
    return narration


# -- budgets and cost ----------------------------------------------------------------------------


def budget_problem(prompt_tokens: int, used_incident: int, used_today: int) -> str:
    """Why this call must not be made ("" when it may): it would pass a token budget."""
    need = prompt_tokens + settings.VIGIL_LLM_OUTPUT_TOKENS
    for what, used, limit in (
        ("incident", used_incident, settings.VIGIL_LLM_INCIDENT_TOKEN_BUDGET),
        ("daily", used_today, settings.VIGIL_LLM_DAILY_TOKEN_BUDGET),
    ):
        if used + need > limit:
            return (
                f"{what} token budget exhausted ({used:,} of {limit:,} used; this analysis "
                f"needs up to {need:,})"
            )
    return ""


def cost(input_tokens: int, output_tokens: int) -> Decimal:
    """USD for this usage at VIGIL_LLM_INPUT/OUTPUT_COST_PER_MTOK, to 6 places."""
    price_in = Decimal(str(settings.VIGIL_LLM_INPUT_COST_PER_MTOK))
    price_out = Decimal(str(settings.VIGIL_LLM_OUTPUT_COST_PER_MTOK))
    total = (Decimal(input_tokens) * price_in + Decimal(output_tokens) * price_out) / 1_000_000
    return total.quantize(MICRO)


# -- calling -------------------------------------------------------------------------------------


class Caller:
    """Calls one model: structured output when it can bind a schema, plain text otherwise."""

    def __init__(self, model: BaseChatModel) -> None:
        self.model = model
        self.provider, self.model_name = describe(model)
        self.structured = structured(model)

    def call(self, messages: list[BaseMessage], narration: Narration) -> Attempt:
        """One answer, retrying 429 and 5xx; usage is added to `narration` per request."""
        retries = max(0, int(settings.VIGIL_LLM_MAX_RETRIES))
        statuses: list[int] = []
        asked = None
        for attempt in range(retries + 1):
            try:
                return self._once(messages, narration)
            except Exception as exc:
                status = errors.status_of(exc)
                if status is None or not (status == 429 or status >= 500):
                    raise CallFailed(failure(exc, statuses)) from exc
                statuses.append(status)
                wait, asked = errors.retry_after(exc)
                if attempt == retries:
                    raise CallFailed(failure(exc, statuses, asked)) from exc
                if wait is None:
                    wait = BACKOFF_BASE * 2**attempt
                sleep(min(wait, float(settings.VIGIL_LLM_MAX_RETRY_WAIT)))
        raise AssertionError("unreachable")  # the loop returns or raises

    def _once(self, messages: list[BaseMessage], narration: Narration) -> Attempt:
        with chat_span(self.provider, self.model_name, settings.VIGIL_LLM_OUTPUT_TOKENS) as span:
            if self.structured is not None:
                out = self.structured.invoke(messages)
                raw, data, error = out["raw"], out.get("parsed"), out.get("parsing_error")
                # LangChain appends a troubleshooting URL on later lines: the first says it all
                error = _first_line(error) if error else ""
                if data is None and not error:
                    # function calling without a tool call: the model may have written JSON
                    data, error = parse_text(tokens.message_text(raw))
            else:
                raw = self.model.invoke(messages)
                data, error = parse_text(tokens.message_text(raw))
            usage = usage_of(raw, messages)
            span.response(raw, usage)
        narration.input_tokens += usage[0]
        narration.output_tokens += usage[1]
        return Attempt(raw, data, error, usage)


def structured(model: BaseChatModel):
    """`model.with_structured_output(<Analysis schema>, include_raw=True, …)`, or None when
    the model cannot bind a schema (then the caller parses plain text)."""
    kwargs: dict[str, Any] = {"include_raw": True}
    method = settings.VIGIL_LLM_STRUCTURED_METHOD or None
    if method:
        kwargs["method"] = method
    if _is_openai(model) and method in (None, "json_schema", "function_calling"):
        kwargs["strict"] = True  # the schema is strict-mode compatible (schema.py)
    try:
        return model.with_structured_output(analysis_schema(), **kwargs)
    except NotImplementedError:
        return None
    except (TypeError, ValueError) as exc:
        raise LLMConfigError(
            f"structured output with VIGIL_LLM_STRUCTURED_METHOD={method!r} is not available: {exc}"
        ) from exc


def _is_openai(model: BaseChatModel) -> bool:
    try:
        from langchain_openai.chat_models.base import BaseChatOpenAI
    except ImportError:
        return False
    return isinstance(model, BaseChatOpenAI)


def failure(exc: BaseException, statuses: list[int], asked: str | None = None) -> str:
    """The engineer-facing reason a call failed."""
    if errors.timed_out(exc):
        return f"timed out after {float(settings.VIGIL_LLM_TIMEOUT):g}s"
    reason = errors.unreachable(exc)
    if reason:
        return f"unreachable: {reason}"
    status = errors.status_of(exc)
    message = _short(errors.provider_message(exc), 200)
    if status == 429:
        times = statuses.count(429)
        last = f"last Retry-After {asked}" if asked else "no Retry-After given"
        return f"rate limited (429) {times} time{'s' if times != 1 else ''}; {last}"
    if status is not None and status >= 500:
        times = len(statuses)
        return f"provider error ({status}) {times} time{'s' if times != 1 else ''}: {message}"
    if status is not None and status < 400:  # a success whose body could not be read
        return f"unreadable answer from the provider ({status}): {message}"
    if status is not None:
        return f"provider refused the request ({status}): {message}"
    return f"LLM call failed: {type(exc).__name__}: {message}"


def usage_of(raw: AIMessage, messages: list[BaseMessage]) -> tuple[int, int]:
    """(input, output) tokens: what the provider reported, our count where it reported none."""
    usage = getattr(raw, "usage_metadata", None) or {}
    given_in, given_out = usage.get("input_tokens"), usage.get("output_tokens")
    input_tokens = int(given_in) if given_in is not None else tokens.count_messages(messages)
    output_tokens = int(given_out) if given_out is not None else tokens.count(_answer_text(raw))
    return input_tokens, output_tokens


# -- reading the answer ----------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_text(text: str) -> tuple[Any, str]:
    """(the JSON object in a plain-text answer, "") or (None, why not). Tolerates prose or a
    code fence around the object."""
    text = text or ""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        start = candidate.find("{")
        tries = 0
        while start != -1 and tries < 20:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except ValueError:
                tries += 1
                start = candidate.find("{", start + 1)
                continue
            if isinstance(value, dict):
                return value, ""
            start = candidate.find("{", start + 1)
    if not text.strip():
        return None, "the answer was empty"
    return None, f"no JSON object in the answer (it began {text.strip()[:80]!r})"


def interpret(
    attempt: Attempt, facts: Facts, hypotheses: list[dict], proposals: list[dict]
) -> tuple[Checked | None, str]:
    """(the checked analysis, "") or (None, what was wrong with the answer)."""
    if attempt.error:
        return None, attempt.error
    try:
        analysis = LLMAnalysis.model_validate(attempt.data)
    except ValidationError as exc:
        return None, "not the Analysis schema: " + _validation(exc)
    if not analysis.summary.strip():
        return None, "the summary is empty"
    checked = check(analysis, facts, hypotheses, proposals)
    if not checked.hypotheses:
        reasons = "; ".join(checked.dropped[:3]) or "it gave none"
        return None, f"no hypothesis survived the check ({reasons})"
    return checked, ""


def repair_messages(attempt: Attempt, problem: str) -> list[BaseMessage]:
    """The previous answer and what was wrong with it, asking for valid JSON only.

    The answer goes back as plain assistant text even when it was a tool call: an assistant
    message carrying tool_calls must be followed by tool results in the OpenAI API.
    """
    answer = tokens.truncate(_answer_text(attempt.raw) or "(empty)", REPAIR_ANSWER_TOKENS)
    return [
        AIMessage(content=answer),
        HumanMessage(
            content=(
                f"That answer cannot be used: {problem}\n"
                "Answer again with only the JSON object of the Analysis schema described in the "
                "system message: categories and actions from the lists given, evidence ids from "
                "the <evidence> blocks shown, entities from <entities>. No prose, no code fence."
            )
        ),
    ]


def _answer_text(raw: AIMessage) -> str:
    """What the model said: its text, else its tool call's arguments as JSON."""
    text = tokens.message_text(raw)
    if text.strip():
        return text
    calls = getattr(raw, "tool_calls", None) or []
    if calls:
        return json.dumps(calls[0].get("args", {}))
    invalid = getattr(raw, "invalid_tool_calls", None) or []
    if invalid:
        return str(invalid[0].get("args") or "")
    return ""


def _validation(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "(top)"
        problems.append(f"{where}: {error.get('msg')}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(problems) + more


def _first_line(error: object) -> str:
    lines = str(error).strip().splitlines()
    return _short(lines[0] if lines else type(error).__name__)


def _short(value: Any, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label(model: BaseChatModel) -> str:
    provider, name = describe(model)
    return f"{provider}:{name}" if name != provider else provider


def _top(hypotheses: list[dict]) -> tuple[str, Any] | None:
    if not hypotheses:
        return None
    first = hypotheses[0]
    return first.get("category"), entity_of(first["entity"]) if first.get("entity") else None

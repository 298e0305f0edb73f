"""GenAI spans for every provider request, and the opt-in OTLP exporter."""

from __future__ import annotations

import json

from langchain_core.language_models import FakeListChatModel
from opentelemetry.trace import SpanKind, StatusCode

from assistant.llm import telemetry
from assistant.llm.chain import narrate


def test_each_request_is_a_chat_span_with_the_genai_attributes(
    llm_settings, openai_standin, spans, facts, rules, valid_answer, waits
):
    openai_standin.rate_limited(retry_after="1")
    openai_standin.reply_text("not json", usage=(900, 12))
    openai_standin.reply_json(valid_answer(), usage=(1000, 250), model="test-model-2026-01")
    n = narrate(facts, *rules)
    assert n.ok, n.error
    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == ["chat test-model"] * 3
    limited, garbage, good = finished
    for span in finished:
        assert span.kind is SpanKind.CLIENT
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.provider.name"] == "openai"
        assert span.attributes["gen_ai.request.model"] == "test-model"
        assert span.attributes["gen_ai.request.max_tokens"] == 1500
    # The 429 is a failed span with error.type the status code.
    assert limited.status.status_code is StatusCode.ERROR
    assert limited.attributes["error.type"] == "429"
    assert "gen_ai.usage.input_tokens" not in limited.attributes
    # The unparseable answer was still a successful request, with its usage.
    assert garbage.status.status_code is not StatusCode.ERROR
    assert garbage.attributes["gen_ai.usage.input_tokens"] == 900
    assert garbage.attributes["gen_ai.usage.output_tokens"] == 12
    assert good.attributes["gen_ai.response.model"] == "test-model-2026-01"
    assert tuple(good.attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert good.attributes["gen_ai.usage.input_tokens"] == 1000
    assert good.attributes["gen_ai.usage.output_tokens"] == 250
    assert (n.input_tokens, n.output_tokens) == (1900, 262)


def test_a_timeout_span_says_timeout(
    llm_settings, openai_standin, spans, facts, rules, valid_answer
):
    llm_settings.VIGIL_LLM_TIMEOUT = 0.5
    openai_standin.reply_json(valid_answer(), delay=3)
    narrate(facts, *rules)
    (span,) = spans.get_finished_spans()
    assert span.attributes["error.type"] == "timeout"
    assert span.status.status_code is StatusCode.ERROR


def test_fakes_get_spans_with_our_token_counts(spans, facts, rules, valid_answer):
    n = narrate(facts, *rules, model=FakeListChatModel(responses=[json.dumps(valid_answer())]))
    assert n.ok, n.error
    (span,) = spans.get_finished_spans()
    assert span.attributes["gen_ai.provider.name"] == "fake-list-chat-model"
    assert span.attributes["gen_ai.usage.input_tokens"] == n.input_tokens
    assert span.attributes["gen_ai.usage.output_tokens"] == n.output_tokens


def test_no_budget_no_span(llm_settings, openai_standin, spans, facts, rules):
    narrate(facts, *rules, tokens_used_today=10**9)
    assert spans.get_finished_spans() == ()


def test_configure_tracing_does_nothing_without_an_endpoint(monkeypatch):
    installed = []
    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.setattr(telemetry.trace, "set_tracer_provider", installed.append)
    for name in telemetry.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    telemetry.configure_tracing()
    assert installed == []


def test_configure_tracing_installs_the_otlp_exporter_once(monkeypatch):
    installed = []
    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.setattr(telemetry.trace, "set_tracer_provider", installed.append)
    # whatever a test session installed, configure_tracing must see "no SDK provider yet"
    monkeypatch.setattr(telemetry.trace, "get_tracer_provider", lambda: object())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "vigil-test")
    telemetry.configure_tracing()
    telemetry.configure_tracing()
    (provider,) = installed
    assert provider.resource.attributes["service.name"] == "vigil-test"
    processors = provider._active_span_processor._span_processors
    assert [type(p).__name__ for p in processors] == ["BatchSpanProcessor"]
    exporter = processors[0]._batch_processor._exporter
    assert type(exporter).__name__ == "OTLPSpanExporter"
    assert exporter._endpoint == "http://127.0.0.1:4318/v1/traces"
    provider.shutdown()

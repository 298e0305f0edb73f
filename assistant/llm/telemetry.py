"""OpenTelemetry for LLM calls: one GenAI client span per request, OTLP export when asked.

Spans follow the GenAI semantic conventions: name "chat {model}", gen_ai.operation.name,
gen_ai.provider.name, gen_ai.request.model, gen_ai.response.model, gen_ai.response.finish_reasons,
gen_ai.usage.input_tokens / output_tokens, and error.type with an error status when the call
fails. The tracer is looked up at call time, not import time, so whichever TracerProvider is
installed when the call happens (the OTLP one from configure_tracing, a test's in-memory one)
gets the span; with none installed the API's no-op tracer costs nothing.

configure_tracing() installs the SDK provider with the OTLP/HTTP exporter only when an OTLP
endpoint is configured in the standard environment variables, so a deployment opts in with
`OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318` and nothing else.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .errors import status_of, timed_out

TRACER_NAME = "vigil.assistant.llm"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_configured = False
_lock = threading.Lock()


def configure_tracing() -> None:
    """Install an SDK TracerProvider exporting over OTLP/HTTP, once, if an endpoint is set."""
    global _configured
    with _lock:
        if _configured:
            return
        _configured = True
        if not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
            return  # the API's no-op tracer stays
        from opentelemetry.sdk.trace import TracerProvider

        if isinstance(trace.get_tracer_provider(), TracerProvider):
            return  # someone (auto-instrumentation) installed one already: keep theirs
        trace.set_tracer_provider(build_provider())


def build_provider():
    """An SDK TracerProvider batching spans to the OTLP/HTTP exporter (endpoint, headers and
    timeout from the standard OTEL_EXPORTER_OTLP_* variables; service.name from
    OTEL_SERVICE_NAME, default "vigil")."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "vigil"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class ChatSpan:
    """What a caller records on the span of one request, once the answer is in."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def response(self, message: Any, usage: tuple[int, int] | None) -> None:
        metadata = getattr(message, "response_metadata", None) or {}
        model = metadata.get("model_name") or metadata.get("model")
        if model:
            self.span.set_attribute("gen_ai.response.model", str(model))
        reason = metadata.get("finish_reason") or metadata.get("stop_reason")
        if reason:
            self.span.set_attribute("gen_ai.response.finish_reasons", [str(reason)])
        if metadata.get("id") or getattr(message, "id", None):
            self.span.set_attribute("gen_ai.response.id", str(metadata.get("id") or message.id))
        if usage is not None:
            self.span.set_attribute("gen_ai.usage.input_tokens", int(usage[0]))
            self.span.set_attribute("gen_ai.usage.output_tokens", int(usage[1]))


@contextmanager
def chat_span(provider: str, model: str, max_tokens: int | None = None) -> Iterator[ChatSpan]:
    """A CLIENT span around one chat request; a raised exception marks it failed and goes on."""
    tracer = trace.get_tracer(TRACER_NAME)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }
    if max_tokens:
        attributes["gen_ai.request.max_tokens"] = max_tokens
    with tracer.start_as_current_span(
        f"chat {model}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield ChatSpan(span)
        except BaseException as exc:
            span.set_attribute("error.type", error_type(exc))
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))
            raise


def error_type(exc: BaseException) -> str:
    """error.type as the conventions want it: the HTTP status, "timeout", else the class."""
    status = status_of(exc)
    if status is not None:
        return str(status)
    if timed_out(exc):
        return "timeout"
    return f"{type(exc).__module__}.{type(exc).__qualname__}"

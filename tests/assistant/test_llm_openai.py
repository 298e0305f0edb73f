"""The real ChatOpenAI, built by provider.chat_model() from settings, against the HTTP stand-in.

These pin what goes over the wire (model, temperature 0, the system prefix first, the
structured-output request) and what our error handling makes of what the real openai SDK
raises: Retry-After waits, rate limits, timeouts, 5xx, refused connections, garbage output,
and budgets that forbid the call altogether.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import pytest

from assistant.llm import llm_configured
from assistant.llm.chain import narrate
from assistant.llm.prompt import SYSTEM_PROMPT
from assistant.llm.provider import LLMConfigError, chat_model, model_label
from tests.assistant.conftest import CHAT
from tests.openai_standin import OpenAIStandin, Reply, completion


def test_llm_configured_follows_the_setting(settings):
    settings.VIGIL_LLM = ""
    assert not llm_configured()
    settings.VIGIL_LLM = "openai:gpt-4o-mini"
    assert llm_configured()
    assert model_label() == "openai:gpt-4o-mini"


def test_structured_output_through_json_schema(
    llm_settings, openai_standin, facts, rules, valid_answer, waits
):
    openai_standin.reply_json(valid_answer(), usage=(1234, 321))
    n = narrate(facts, *rules)
    assert n.ok, n.error
    assert n.model == "openai:test-model"
    assert n.hypotheses[0]["category"] == "bad-deploy"
    assert n.proposals[0].params == {"to_revision": 11}
    # Provider usage wins over our count; cost from the configured prices.
    assert (n.input_tokens, n.output_tokens) == (1234, 321)
    assert n.prompt_tokens > 1000 and n.prompt_tokens != n.input_tokens
    assert n.cost_usd == Decimal("0.000378")  # 1234 * 0.15 / 1e6 + 321 * 0.6 / 1e6
    assert waits == []

    (request,) = openai_standin.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = request.json
    assert body["model"] == "test-model"
    assert body["temperature"] == 0
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 1500
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user"]
    assert body["messages"][0]["content"] == SYSTEM_PROMPT
    assert '<evidence id="12"' in body["messages"][1]["content"]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Analysis"
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["required"] == ["summary", "hypotheses", "proposals"]
    assert "tools" not in body


def test_structured_output_through_function_calling(
    llm_settings, openai_standin, facts, rules, valid_answer
):
    llm_settings.VIGIL_LLM_STRUCTURED_METHOD = "function_calling"
    openai_standin.reply_json(valid_answer())
    n = narrate(facts, *rules)
    assert n.ok, n.error
    assert n.hypotheses[0]["entity"] == CHAT.as_dict()
    body = openai_standin.requests[0].json
    assert "response_format" not in body
    (tool,) = body["tools"]
    assert tool["function"]["name"] == "Analysis"
    assert tool["function"]["strict"] is True
    assert body["tool_choice"] == {"type": "function", "function": {"name": "Analysis"}}


def test_a_429_with_retry_after_is_waited_out_then_succeeds(
    llm_settings, openai_standin, facts, rules, valid_answer, waits
):
    openai_standin.rate_limited(retry_after="7")
    openai_standin.rate_limited(retry_after_ms="1500", retry_after="2")
    openai_standin.reply_json(valid_answer(), usage=(100, 50))
    n = narrate(facts, *rules)
    assert n.ok, n.error
    assert waits == [7.0, 1.5]  # retry-after-ms is the more precise of the two
    assert len(openai_standin.requests) == 3
    assert (n.input_tokens, n.output_tokens) == (100, 50)  # a 429 costs no tokens


def test_retry_waits_are_capped_and_back_off_without_a_header(
    llm_settings, openai_standin, facts, rules, valid_answer, waits
):
    llm_settings.VIGIL_LLM_MAX_RETRY_WAIT = 5
    llm_settings.VIGIL_LLM_MAX_RETRIES = 3
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=3600), usegmt=True)
    openai_standin.rate_limited(retry_after=later)
    openai_standin.server_error(503)
    openai_standin.server_error(502)
    openai_standin.reply_json(valid_answer())
    n = narrate(facts, *rules)
    assert n.ok, n.error
    assert waits == [5.0, 2.0, 4.0]  # the HTTP date capped; then exponential backoff


def test_rate_limited_every_time_falls_back(llm_settings, openai_standin, facts, rules, waits):
    for _ in range(3):
        openai_standin.rate_limited(retry_after="7")
    n = narrate(facts, *rules)
    assert not n.ok
    assert n.error == "rate limited (429) 3 times; last Retry-After 7s"
    assert waits == [7.0, 7.0]
    assert len(openai_standin.requests) == 3
    assert openai_standin.pending() == 0


def test_a_slow_reply_times_out(llm_settings, openai_standin, facts, rules, valid_answer, waits):
    llm_settings.VIGIL_LLM_TIMEOUT = 0.5
    openai_standin.reply_json(valid_answer(), delay=3)
    n = narrate(facts, *rules)
    assert not n.ok
    assert n.error == "timed out after 0.5s"
    assert len(openai_standin.requests) == 1  # a timeout is not retried
    assert waits == []


def test_server_errors_are_retried_then_fall_back(
    llm_settings, openai_standin, facts, rules, waits
):
    for _ in range(3):
        openai_standin.server_error(500, "The server had an error while processing your request")
    n = narrate(facts, *rules)
    assert not n.ok
    assert n.error == (
        "provider error (500) 3 times: The server had an error while processing your request"
    )
    assert waits == [1.0, 2.0]


def test_a_4xx_other_than_429_is_not_retried(llm_settings, openai_standin, facts, rules, waits):
    openai_standin.reply(
        status=401,
        body={
            "error": {
                "message": "Incorrect API key provided",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "param": None,
            }
        },
    )
    n = narrate(facts, *rules)
    assert not n.ok
    assert n.error == "provider refused the request (401): Incorrect API key provided"
    assert len(openai_standin.requests) == 1 and waits == []


def test_garbage_content_gets_one_repair_request_then_falls_back(
    llm_settings, openai_standin, facts, rules
):
    openai_standin.reply_text("Sorry, I can't help with that.")
    openai_standin.reply_text("Still no.")
    n = narrate(facts, *rules)
    assert not n.ok
    assert n.error == "invalid output after one repair: Invalid json output: Still no."
    first, repair = openai_standin.requests
    assert repair.json["response_format"]["type"] == "json_schema"  # the repair is structured too
    messages = repair.json["messages"]
    assert messages[:2] == first.json["messages"]
    assert messages[2] == {"role": "assistant", "content": "Sorry, I can't help with that."}
    assert messages[3]["role"] == "user"
    assert "That answer cannot be used: Invalid json output" in messages[3]["content"]
    assert (n.input_tokens, n.output_tokens) == (240, 80)  # both requests' usage


def test_a_function_calling_repair_sends_the_tool_arguments_as_text(
    llm_settings, openai_standin, facts, rules, valid_answer
):
    llm_settings.VIGIL_LLM_STRUCTURED_METHOD = "function_calling"
    openai_standin.reply_json({"summary": "s", "hypotheses": "many", "proposals": []})
    openai_standin.reply_json(valid_answer())
    n = narrate(facts, *rules)
    assert n.ok, n.error
    repair = openai_standin.requests[1].json["messages"]
    assert repair[2]["role"] == "assistant" and "tool_calls" not in repair[2]
    assert json.loads(repair[2]["content"])["hypotheses"] == "many"
    assert "hypotheses: Input should be a valid list" in repair[3]["content"]


def test_nothing_listening_is_unreachable(llm_settings, facts, rules, waits):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm_settings.VIGIL_LLM_BASE_URL = f"http://127.0.0.1:{port}/v1"
    n = narrate(facts, *rules)
    assert not n.ok
    assert n.error == "unreachable: connection refused"
    assert waits == []


@pytest.mark.parametrize(
    ("used_incident", "used_today", "error"),
    [
        (
            59_000,
            0,
            "incident token budget exhausted (59,000 of 60,000 used; this analysis needs up to ",
        ),
        (
            0,
            1_998_000,
            "daily token budget exhausted (1,998,000 of 2,000,000 used; this analysis needs up to ",
        ),
    ],
)
def test_an_exhausted_budget_makes_no_request(
    llm_settings, openai_standin, facts, rules, valid_answer, used_incident, used_today, error
):
    openai_standin.reply_json(valid_answer())
    n = narrate(facts, *rules, tokens_used_incident=used_incident, tokens_used_today=used_today)
    assert not n.ok
    assert n.error.startswith(error)
    assert openai_standin.requests == []
    assert n.prompt_tokens > 0 and n.input_tokens == 0 and n.cost_usd == 0


def test_the_budget_counts_the_prompt_and_the_output_cap(
    llm_settings, openai_standin, facts, rules, valid_answer
):
    from assistant.llm.prompt import build_prompt

    need = build_prompt(facts, *rules).tokens + 1500
    openai_standin.reply_json(valid_answer())
    exactly = narrate(facts, *rules, tokens_used_incident=60_000 - need)
    assert exactly.ok, exactly.error
    one_more = narrate(facts, *rules, tokens_used_incident=60_000 - need + 1)
    assert not one_more.ok and "incident token budget" in one_more.error
    assert len(openai_standin.requests) == 1


def test_the_stand_in_says_when_nothing_was_scripted(
    llm_settings, openai_standin, facts, rules, waits
):
    llm_settings.VIGIL_LLM_MAX_RETRIES = 0
    n = narrate(facts, *rules)
    assert (
        n.error
        == "provider error (500) 1 time: openai stand-in: no reply scripted for this request"
    )


def test_a_reply_can_be_computed_from_the_request(
    llm_settings, openai_standin, facts, rules, valid_answer
):
    def echo_model(request):
        body = completion(request, json.dumps(valid_answer()), model=request["model"] + "-2026")
        return Reply(body=body)

    openai_standin.reply_with(echo_model)
    n = narrate(facts, *rules)
    assert n.ok, n.error


# -- provider.chat_model ---------------------------------------------------------------------------


def test_chat_model_passes_the_settings_through(llm_settings, openai_standin):
    model = chat_model()
    assert type(model).__name__ == "ChatOpenAI"
    assert model.model_name == "test-model"
    assert model.temperature == 0
    assert model.max_retries == 0
    assert model.max_tokens == 1500
    assert model.request_timeout == 5
    assert model.openai_api_base == openai_standin.url
    assert model.openai_api_key.get_secret_value() == "sk-test"


def test_an_openai_compatible_server_without_a_key_gets_a_placeholder(settings):
    settings.VIGIL_LLM = "openai:served-llama"
    settings.VIGIL_LLM_BASE_URL = "http://vllm:8000/v1"
    settings.VIGIL_LLM_API_KEY = ""
    model = chat_model()
    assert model.openai_api_key.get_secret_value() == "EMPTY"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "VIGIL_LLM is not set"),
        ("gpt-4o-mini", "is not 'provider:model'"),
        ("openai:", "is not 'provider:model'"),
        ("nosuchprovider:model-x", "provider 'nosuchprovider' is not one LangChain knows"),
        (
            "groq:llama3",
            "provider 'groq' needs the LangChain integration for groq, which is not installed",
        ),
    ],
)
def test_a_bad_vigil_llm_is_a_config_error(settings, value, message):
    settings.VIGIL_LLM = value
    settings.VIGIL_LLM_BASE_URL = ""
    with pytest.raises(LLMConfigError) as raised:
        chat_model()
    assert message in str(raised.value)


def test_a_bad_vigil_llm_falls_back_without_raising(settings, facts, rules):
    settings.VIGIL_LLM = "nosuchprovider:model-x"
    n = narrate(facts, *rules)
    assert not n.ok
    assert n.error.startswith("LLM not usable: VIGIL_LLM provider 'nosuchprovider'")


def test_anthropic_and_ollama_models_are_built_with_their_own_options(settings):
    settings.VIGIL_LLM_BASE_URL = ""
    settings.VIGIL_LLM_API_KEY = "sk-ant-test"
    settings.VIGIL_LLM_TIMEOUT = 12
    settings.VIGIL_LLM = "anthropic:claude-test"
    model = chat_model()
    assert (type(model).__name__, model.model, model.max_tokens, model.max_retries) == (
        "ChatAnthropic",
        "claude-test",
        1500,
        0,
    )
    assert model.default_request_timeout == 12
    settings.VIGIL_LLM = "ollama:llama3.1"
    settings.VIGIL_LLM_BASE_URL = "http://ollama:11434"
    model = chat_model()
    assert (type(model).__name__, model.model, model.num_predict, model.base_url) == (
        "ChatOllama",
        "llama3.1",
        1500,
        "http://ollama:11434",
    )
    assert model.client_kwargs["timeout"] == 12


def test_the_stand_in_is_a_context_manager_that_closes():
    with OpenAIStandin() as standin:
        url = standin.url
        assert url.endswith("/v1")
    with (
        pytest.raises(OSError),
        socket.create_connection(("127.0.0.1", int(url.split(":")[2].split("/")[0])), timeout=1),
    ):
        pass

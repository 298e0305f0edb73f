"""A misbehaving HTTP source: a proxy on 127.0.0.1 that forwards to a real upstream, or doesn't.

Every source Vigil reads (Prometheus, the Kubernetes API, Slack, the LLM) is put behind one of
these, so a fault is the same thing whichever source has it, and the client code under test
talks HTTP to a socket, as in production:

    with FaultProxy(upstream="http://127.0.0.1:9090") as proxy:
        proxy.fault = "500"        # ok, slow, hold, 500, 429, malformed
        ... point the source at proxy.url ...
        proxy.count                # requests received

`ok` forwards; `slow` waits `delay` seconds and then forwards (clients with a shorter timeout
give up first); `hold` blocks until `release()` (a request caught in the middle: `held` says
how many are waiting); `500` answers an error page; `429` answers Too Many Requests with
`Retry-After: retry_after`; `malformed` answers 200 with a JSON content type and a body that is
not JSON. `only` restricts the fault to paths containing it (the rest are forwarded); `times`
limits it to the first N matching requests. A source that is down is an address nobody listens
on: `dead_url()`.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.support import free_port

FAULTS = ("ok", "slow", "hold", "500", "429", "malformed")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
MALFORMED = b'{"status": "success", "data": {"result": [<html>upstream garbled</html>'


def dead_url() -> str:
    """An address on loopback where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


class FaultProxy:
    def __init__(
        self,
        upstream: str = "",
        *,
        fault: str = "ok",
        delay: float = 5.0,
        retry_after: int = 1,
        only: str = "",
        times: int | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.fault = fault
        self.delay = delay
        self.retry_after = retry_after
        self.only = only
        self.times = times
        self.count = 0
        self.faulted = 0
        self.held = 0
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def release(self) -> None:
        """Let held requests (and later ones) through."""
        self.fault = "ok"
        self._released.set()

    def close(self) -> None:
        self._closing.set()
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- deciding ----------------------------------------------------------------------------

    def _fault_for(self, path: str) -> str:
        with self._lock:
            self.count += 1
            self.paths.append(path)
            fault = self.fault
            if fault == "ok" or (self.only and self.only not in path):
                return "ok"
            if self.times is not None and self.faulted >= self.times:
                return "ok"
            self.faulted += 1
            if fault == "hold":
                self.held += 1
            return fault

    def _forward(self, method: str, path: str, headers: dict, body: bytes) -> tuple:
        if not self.upstream:
            return 502, {"Content-Type": "text/plain"}, b"fault proxy: no upstream"
        target = urlsplit(self.upstream)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            kept = {k: v for k, v in response.getheaders() if k.lower() not in HOP_HEADERS}
            return response.status, kept, data
        finally:
            connection.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._fault_for(self.path)
                if fault == "slow" and proxy._closing.wait(proxy.delay):
                    return
                if fault == "hold":
                    proxy._released.wait()
                    if proxy._closing.is_set():
                        return
                if fault == "500":
                    self._send(500, {"Content-Type": "text/html"}, b"<h1>500 Internal Error</h1>")
                elif fault == "429":
                    self._send(
                        429,
                        {
                            "Content-Type": "application/json",
                            "Retry-After": str(proxy.retry_after),
                        },
                        b'{"error": "rate limited", "ok": false}',
                    )
                elif fault == "malformed":
                    self._send(200, {"Content-Type": "application/json"}, MALFORMED)
                else:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS
                    }
                    try:
                        answer = proxy._forward(self.command, self.path, headers, body)
                    except OSError as exc:
                        answer = (502, {"Content-Type": "text/plain"}, str(exc).encode())
                    self._send(*answer)

            def _send(self, status: int, headers: dict[str, Any], data: bytes) -> None:
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (its timeout) before the answer

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

"""Vigil served from inside a command (replay, evaluate), so they work without `make run`."""

from __future__ import annotations

import threading

from django.core.servers.basehttp import (
    ThreadedWSGIServer,
    WSGIRequestHandler,
    get_internal_wsgi_application,
)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the stdlib's name)
        pass


def serve_in_process(port: int = 0) -> ThreadedWSGIServer:
    """Start serving on 127.0.0.1 in a daemon thread; `shutdown()` and `server_close()` to stop."""
    server = ThreadedWSGIServer(("127.0.0.1", port), _QuietHandler, allow_reuse_address=True)
    server.set_app(get_internal_wsgi_application())
    threading.Thread(target=server.serve_forever, name="vigil-in-process-web", daemon=True).start()
    return server


def server_url(server: ThreadedWSGIServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"

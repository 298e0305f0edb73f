"""Django's PostgreSQL backend, with a health check that costs no round trip while it passes.

CONN_HEALTH_CHECKS makes Django run `SELECT 1` before the first query of every request that
reuses a connection, so that a connection PostgreSQL dropped while it sat idle (a restart, a
failover, `pg_terminate_backend`, `idle_session_timeout`) is replaced instead of failing the
request. That is one round trip more per request: for a re-notified alert, which the webhook
stores with one statement, it was half of its round trips (about a tenth of a new alert's
request time under `make bench`, py-spy on the gunicorn workers).

A server that ends a session says so on the socket: the backend sends its FATAL message and
closes, and either one makes the idle socket readable. Nothing else arrives on an idle session
here (Vigil's connections LISTEN for nothing, and notices come only during a query), so the
check first asks the kernel whether anything is waiting, without a round trip; only when
something is does Django's `SELECT 1` run, and a connection that fails it is closed and
replaced as before. A peer that vanished without a word (a cut cable, a dropped NAT entry)
leaves the socket quiet, and `SELECT 1` would have waited on it as long as the first query
now does, until TCP gives up: the stock check caught nothing more.

With server-side binding (vigil/settings.py, so that statements can be prepared), a statement
carries its parameters in the protocol's Bind message, which counts them in 16 bits: one with
more than 65,535 fails before it reaches the server. Django does not split for that on
PostgreSQL, and ingest builds such statements for big notifications (a bulk_update of 8,200
resolutions with their own values is 65,600 parameters). `ServerBindingCursor` binds those
few on the client instead, as Django's default cursor binds everything.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus

# The protocol's Bind message counts parameters in an Int16.
MAX_SERVER_PARAMS = 65535


def has_pending_input(fd: int) -> bool:
    """Whether the socket has something to read (data, end of stream or an error) right now;
    True where poll() is missing, so that the caller asks the server instead."""
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class ServerBindingCursor(base.ServerBindingCursor):
    """Django's server-binding cursor; a statement with too many parameters for the protocol is
    bound on the client (psycopg quotes the values) and sent, unprepared, as plain SQL."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        if params is not None and len(params) > MAX_SERVER_PARAMS:
            query = psycopg.ClientCursor(self.connection).mogrify(query, params)
            return super().execute(query, None, **{**kwargs, "prepare": False})
        return super().execute(query, params, **kwargs)


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict:
        params = super().get_connection_params()
        if params.get("cursor_factory") is base.ServerBindingCursor:
            params["cursor_factory"] = ServerBindingCursor
        return params

    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and not self.pool
            and self._quiet_while_idle()
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def _quiet_while_idle(self) -> bool:
        """The connection looks alive without asking the server: open, idle, nothing to read."""
        conn = self.connection
        if conn.closed or conn.broken:
            return False
        if conn.info.transaction_status != TransactionStatus.IDLE:
            return False  # mid-transaction (or unknown): leave it to SELECT 1
        try:
            return not has_pending_input(conn.fileno())
        except (OSError, ValueError):
            return False

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
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus


def has_pending_input(fd: int) -> bool:
    """Whether the socket has something to read (data, end of stream or an error) right now;
    True where poll() is missing, so that the caller asks the server instead."""
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
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

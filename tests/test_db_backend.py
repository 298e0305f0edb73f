"""vigil.backends.postgresql: the per-request health check asks the socket before the server.

A healthy idle connection is reused without `SELECT 1`; one the server ended while it sat idle
is noticed, closed and replaced before the request's first query, as the stock check does.
"""

from __future__ import annotations

import select
import time

import pytest
from django.db import connection, connections

from vigil.backends.postgresql.base import MAX_SERVER_PARAMS, DatabaseWrapper, has_pending_input

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL backend"),
    pytest.mark.django_db(transaction=True),  # autocommit: idle between "requests"
]


@pytest.fixture
def server_checks(monkeypatch) -> list[int]:
    """Every `SELECT 1` the health check sends, by the backend pid it was sent on."""
    sent: list[int] = []
    stock = DatabaseWrapper.is_usable

    def counting(self) -> bool:
        sent.append(self.connection.info.backend_pid if self.connection else 0)
        return stock(self)

    monkeypatch.setattr(DatabaseWrapper, "is_usable", counting)
    return sent


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _next_request() -> None:
    """What Django does between two requests on a persistent connection."""
    connection.close_if_unusable_or_obsolete()
    assert connection.connection is not None, "the connection is meant to be reused"
    assert not connection.health_check_done


def _terminate(pid: int) -> None:
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            assert cursor.fetchone()[0] is True
    finally:
        other.close()


def _wait_readable(fd: int, timeout: float = 5.0) -> None:
    """The server's goodbye has reached our socket (it is sent asynchronously)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    assert poller.poll(timeout * 1000), "the terminated session never said so on its socket"


def test_the_engine_is_vigils():
    assert isinstance(connections["default"], DatabaseWrapper)
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True


def test_a_healthy_idle_connection_is_reused_without_a_round_trip(server_checks):
    pid = _backend_pid()
    for _ in range(3):
        _next_request()
        assert _backend_pid() == pid
    assert server_checks == []


def test_a_connection_the_server_ended_is_replaced_before_the_first_query(server_checks):
    pid = _backend_pid()
    _terminate(pid)
    _wait_readable(connection.connection.fileno())
    _next_request()
    new_pid = _backend_pid()  # would raise OperationalError on the dead session
    assert new_pid != pid
    assert server_checks == [pid]  # the socket said something: the server was asked


def test_a_connection_in_a_transaction_is_checked_the_stock_way(server_checks):
    pid = _backend_pid()
    connection.connection.execute("BEGIN")
    try:
        connection.health_check_done = False
        connection.close_if_health_check_failed()
        assert server_checks == [pid]
    finally:
        connection.connection.execute("ROLLBACK")


def test_has_pending_input_reads_the_socket_state():
    import socket

    left, right = socket.socketpair()
    try:
        assert has_pending_input(left.fileno()) is False
        right.sendall(b"E")
        deadline = time.monotonic() + 2
        while not has_pending_input(left.fileno()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert has_pending_input(left.fileno()) is True
        left.recv(1)
        right.close()  # end of stream counts too: the server closed
        assert has_pending_input(left.fileno()) is True
    finally:
        left.close()


def test_a_statement_with_more_parameters_than_the_protocol_counts_still_runs():
    """Server-side binding counts parameters in 16 bits; past that the cursor binds on the
    client, quoting every value as psycopg does."""
    assert connection.features.uses_server_side_binding
    values = [f"it's {i}% done" for i in range(MAX_SERVER_PARAMS + 5)]
    placeholders = ",".join(["%s"] * len(values))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), max(v), min(v) FROM unnest(ARRAY[{placeholders}]::text[]) v",  # noqa: S608
            values,
        )
        assert cursor.fetchone() == (len(values), max(values), min(values))
        cursor.execute("SELECT %s, %s", ["a'b", "50%"])  # a small one still binds on the server
        assert cursor.fetchone() == ("a'b", "50%")

"""Alertmanager v4 payloads for tests, built the way Alertmanager builds them."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.test import Client

from incidents.demo import alert, notification

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def firing(name: str = "KVCacheHigh", *, starts: datetime = T0, **labels: str) -> dict:
    labels = {"alertname": name, "namespace": "llm", "severity": "warning", **labels}
    return alert(labels, {"summary": f"{name} summary"}, starts)


def resolved(
    name: str = "KVCacheHigh", *, starts: datetime = T0, ends: datetime | None = None, **labels: str
) -> dict:
    labels = {"alertname": name, "namespace": "llm", "severity": "warning", **labels}
    return alert(
        labels, {"summary": f"{name} summary"}, starts, ends or starts + timedelta(minutes=10)
    )


def group(*alerts: dict, group_labels: dict | None = None) -> dict:
    first = alerts[0]["labels"]
    return notification(
        group_labels or {"alertname": first["alertname"], "namespace": first.get("namespace", "")},
        list(alerts),
    )


def post(client, payload, token: str, path: str = "/hooks/alertmanager", **extra):
    body = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    return client.post(
        path,
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
        **extra,
    )


def post_all_at_once(payloads: list, token: str) -> list[int]:
    """Each payload from its own thread and database connection, released together: the
    statuses, in the order the answers came."""
    statuses: list[int] = []
    barrier = threading.Barrier(len(payloads))

    def deliver(payload):
        barrier.wait()
        statuses.append(post(Client(), payload, token).status_code)
        connection.close()

    threads = [threading.Thread(target=deliver, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses

"""Alertmanager v4 payloads for tests, built the way Alertmanager builds them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

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

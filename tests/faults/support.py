"""Shared by the fault tests: payloads, waiting with the processes' logs, and the tally."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from incidents.demo import alert, notification
from tests.support import wait_for

# Generous: the CI machine has 2 busy cores, and each step starts or waits on real processes.
SETTLE = 180
TALLY = (
    Path(os.environ.get("VIGIL_FAULTS_TALLY", "")) if os.environ.get("VIGIL_FAULTS_TALLY") else None
)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def firing(name: str, starts: datetime, **labels: str) -> dict:
    labels = {"alertname": name, "namespace": "llm", "severity": "warning", **labels}
    return alert(labels, {"summary": f"{name} summary"}, starts)


def resolved(name: str, starts: datetime, ends: datetime | None = None, **labels: str) -> dict:
    labels = {"alertname": name, "namespace": "llm", "severity": "warning", **labels}
    return alert(
        labels, {"summary": f"{name} summary"}, starts, ends or starts + timedelta(minutes=5)
    )


def group(key: str, *alerts: dict) -> dict:
    """One Alertmanager notification of the group named `key`."""
    return notification({"group": key}, list(alerts))


def settle(vigil, condition: Callable[[], object], what: str, timeout: float = SETTLE):
    """wait_for, failing with the tails of every process's log."""
    try:
        return wait_for(condition, timeout=timeout, interval=0.25, message=what)
    except pytest.fail.Exception as exc:
        pytest.fail(f"{exc.msg}\n{vigil.logs()}")


def record(fault: str, inputs: int, lost: int, **detail: object) -> None:
    """Append one line to the tally (VIGIL_FAULTS_TALLY), for the README's table."""
    if TALLY is None:
        return
    TALLY.parent.mkdir(parents=True, exist_ok=True)
    with TALLY.open("a") as out:
        out.write(json.dumps({"fault": fault, "inputs": inputs, "lost": lost, **detail}) + "\n")

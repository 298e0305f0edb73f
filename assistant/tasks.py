"""Analysis tasks: a thin adapter around the engine, started when a collection round finishes."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from vigil.celery import publish_on_commit


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def analyse_incident(incident_id: int) -> int:
    from .engine import run_analysis

    return run_analysis(incident_id).pk


def on_collection_finished(sender: Any, incident_id: int, **kwargs: Any) -> None:
    """Every finished collection round gets a fresh analysis of what it found."""
    publish_on_commit(analyse_incident, incident_id)

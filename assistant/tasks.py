"""Assistant tasks: thin adapters around the engine, the narrative and remediation, and sweeps."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from vigil.celery import (
    RETRY_ON_DATABASE_ERRORS,
    publish,
    publish_on_commit,
    reset_broker_backoff,
)

from .remediation import EXECUTE_SOFT_LIMIT, EXECUTE_TIME_LIMIT

logger = logging.getLogger(__name__)


def _narrative_time_limit() -> int:
    """Every attempt may time out and every retry may wait: the task must outlast that."""
    attempts = settings.VIGIL_LLM_MAX_RETRIES + 2
    return int(attempts * (settings.VIGIL_LLM_TIMEOUT + settings.VIGIL_LLM_MAX_RETRY_WAIT)) + 30


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90, **RETRY_ON_DATABASE_ERRORS)
def analyse_incident(incident_id: int) -> int:
    from .engine import run_analysis

    return run_analysis(incident_id).pk


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=_narrative_time_limit(),
    time_limit=_narrative_time_limit() + 30,
)
def narrate_analysis(analysis_id: int) -> str:
    """The LLM's narrative of one analysis; claimed, so a redelivery never calls the LLM twice."""
    from .narrative import write_narrative

    return write_narrative(analysis_id).llm_status


@shared_task(acks_late=True, max_retries=0, ignore_result=True)
def sweep_narratives() -> dict[str, int]:
    """Backstop: re-enqueue narratives whose task was lost; give up visibly on hopeless ones."""
    from .narrative import give_up_on_stuck_narratives, lost_narratives

    reset_broker_backoff()
    given_up = give_up_on_stuck_narratives()
    enqueued = sum(
        bool(publish(narrate_analysis, analysis_id))
        for analysis_id in lost_narratives(grace=settings.VIGIL_SWEEP_GRACE)
    )
    if enqueued or given_up:
        logger.info("narratives: %s re-enqueued, %s given up", enqueued, given_up)
    return {"enqueued": enqueued, "given_up": given_up}


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # remediation.run bounds the attempts (ActionProposal.attempts)
    soft_time_limit=EXECUTE_SOFT_LIMIT,
    time_limit=EXECUTE_TIME_LIMIT,
)
def execute_action(self: Any, action_id: int) -> str | None:
    """Execute an approved action (remediation.run): claimed, so a duplicate does nothing; a
    transient failure comes back as RetryLater and is retried after its backoff."""
    from .remediation import RetryLater, run

    try:
        proposal = run(action_id)
    except RetryLater as exc:
        # If the broker refuses the retry, the action waits approved and the sweep re-enqueues it.
        raise self.retry(countdown=exc.countdown) from exc
    return proposal.status if proposal is not None else None


@shared_task(acks_late=True, max_retries=0, ignore_result=True)
def sweep_actions() -> dict[str, int]:
    """Backstop: re-enqueue executions whose task was lost; fail those lost on every attempt."""
    from .remediation import give_up_on_lost_executions, lost_executions

    reset_broker_backoff()
    given_up = give_up_on_lost_executions()
    enqueued = sum(bool(publish(execute_action, action_id)) for action_id in lost_executions())
    if enqueued or given_up:
        logger.info("actions: %s re-enqueued, %s given up", enqueued, given_up)
    return {"enqueued": enqueued, "given_up": given_up}


def on_collection_finished(sender: Any, incident_id: int, **kwargs: Any) -> None:
    """Every finished collection round gets a fresh analysis of what it found."""
    publish_on_commit(analyse_incident, incident_id)

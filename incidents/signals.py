"""Signal receivers: where saving a timeline event leads to work elsewhere (Slack).

Why a receiver and not a call in each service: timeline events are written by many services
(ingest, incident transitions, the analysis engine, the LLM narrative, remediation), and an
announcement must follow every one of them without each service knowing about Slack. The receiver
only enqueues, after the event's transaction commits: the task does the work and owns retries,
so saving an event never waits on Slack. Events created by `bulk_create` (ingest's alert lines
and auto-resolution) send no signal; `slack_sweep` announces those within a sweep interval.
"""

from __future__ import annotations

from typing import Any

from vigil.celery import publish_on_commit

from . import slack
from .models import TimelineEvent


def announce_timeline_event(
    sender: type[TimelineEvent], instance: TimelineEvent, created: bool, **kwargs: Any
) -> None:
    if not created or kwargs.get("raw") or instance.kind not in slack.ANNOUNCED_KINDS:
        return
    if not slack.announcing():
        return  # no Slack configured: nothing is enqueued at all
    from .tasks import slack_announce

    publish_on_commit(slack_announce, instance.pk)

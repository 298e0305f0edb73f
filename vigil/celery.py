"""The Celery app, and the one way request handlers publish tasks.

Publishing must never hang or fail a request: stored rows (deliveries, incidents with no
collection started) are the source of truth and the beat sweep re-enqueues what a failed
publish missed. So publishing is after commit, fails fast, and backs off for a while after a
failure instead of paying the broker timeout on every request while the broker is down.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import Celery
from django.db import InterfaceError, OperationalError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vigil.settings")

# For tasks whose work is in the database: while PostgreSQL restarts (connections cut, refused
# for a moment) they are retried with backoff (1, 2, 4 … 30s, ~3 minutes in all) instead of
# failing, which would acknowledge and so lose them.
RETRY_ON_DATABASE_ERRORS: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "max_retries": 10,
}

app = Celery("vigil")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)
_broker_down_until = 0.0


def publish(task: Any, *args: Any, countdown: float = 0) -> bool:
    """Enqueue `task(*args)` now; False (and logged) when the broker is unavailable."""
    global _broker_down_until
    from django.conf import settings

    if time.monotonic() < _broker_down_until:
        return False
    try:
        # ignore_result: nobody here waits for a result. Without it, Celery subscribes to the
        # result's pub/sub channel before publishing, and once that subscription exists a dead
        # Redis makes every later publish retry it for ~20s (holding the webhook) instead of
        # failing fast; the worker also stores no result nobody reads.
        task.apply_async(args=args, countdown=countdown or None, retry=False, ignore_result=True)
    except Exception as exc:  # any broker or connection error: the sweep re-enqueues later
        _broker_down_until = time.monotonic() + settings.VIGIL_BROKER_BACKOFF_SECONDS
        logger.warning("publish of %s%r failed, left for the sweep: %s", task.name, args, exc)
        return False
    return True


def publish_on_commit(task: Any, *args: Any, countdown: float = 0) -> None:
    """Enqueue after the surrounding transaction commits, so the worker sees the rows."""
    from django.db import transaction

    # robust: whatever goes wrong while publishing, the committed request still succeeds.
    transaction.on_commit(lambda: publish(task, *args, countdown=countdown), robust=True)


def reset_broker_backoff() -> None:
    """Forget a past publish failure (tests, and the sweep once the broker answers again)."""
    global _broker_down_until
    _broker_down_until = 0.0

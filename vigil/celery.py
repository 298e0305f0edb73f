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

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vigil.settings")

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
        task.apply_async(args=args, countdown=countdown or None, retry=False)
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

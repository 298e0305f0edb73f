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
from celery.signals import worker_init
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


def lower_cpu_priority(increment: int) -> int:
    """Make this process (and what it forks later) yield the CPU to the web processes; returns
    the nice value it ends with.

    On a machine the worker shares with gunicorn, a storm's collection rounds took a third of
    the CPU, and the incident list's p95 during the storm was 518-641 ms (`make bench` storm, a
    2-core AMD EPYC VM); with the worker at nice 10, 155-234 ms (README, docker-compose).

    Where the kernel groups processes by session (sched_autogroup), a nice value only ranks the
    processes of one session, so a worker leading its own session (a container's entry point, a
    supervisor's child, the benchmarks' servers) lowers its session's group too. A worker inside
    someone else's session (`make run`'s shell) leaves that session's group alone: lowering it
    would lower the web and the shell with it. In a CPU cgroup (Kubernetes, docker-compose) the
    group is the container's: its CPU weight does this job, and nice only ranks its processes.
    """
    if increment <= 0:
        return os.nice(0)
    try:
        niceness = os.nice(increment)
    except OSError as exc:
        logger.warning("could not lower the worker's CPU priority: %s", exc)
        return os.nice(0)
    if os.getsid(0) == os.getpid():
        try:
            with open("/proc/self/autogroup", "w") as group:
                group.write(str(niceness))
        except OSError:  # no autogroup support, or not allowed: nice alone still ranks it
            pass
    return niceness


@worker_init.connect
def _yield_cpu_to_the_web(**kwargs: Any) -> None:
    """Before the pool forks its children, which inherit the priority."""
    from django.conf import settings

    niceness = lower_cpu_priority(settings.VIGIL_WORKER_NICE)
    logger.info("worker CPU priority: nice %s", niceness)


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

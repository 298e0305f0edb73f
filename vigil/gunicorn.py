"""gunicorn's settings for the web processes: `gunicorn -c python:vigil.gunicorn vigil.wsgi`.

The Dockerfile, docker-compose.yml, `make run` and `make bench` all start gunicorn with this
module, so production and the benchmarks run one set-up. Size it with the environment rather
than with flags (a `--threads` flag would not move the connection cap below):

- WEB_CONCURRENCY: worker processes, default 3 (cores + 1 on the 2-core machines we measure on);
- VIGIL_WEB_THREADS: threads per worker, default 2;
- VIGIL_WEB_CONNECTIONS: connections per worker, default 8 (twice the threads past 4);
- VIGIL_BIND: address, default 0.0.0.0:8000.

Threaded workers: a webhook spends much of its time waiting on PostgreSQL, and a waiting thread
does not hold a whole process (README, "docker-compose", has the measurements).
"""

from __future__ import annotations

import os

bind = os.environ.get("VIGIL_BIND", "0.0.0.0:8000")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
# Two threads per worker: one runs Python (a worker has one interpreter lock, so one core) while
# the other waits on PostgreSQL, and a webhook spends about as long in each. More threads than
# that only share the same core among more requests at once: each request then takes longer,
# and the slowest much longer, for the same throughput. With 4 threads, `make bench` ingest's
# (c) had a p99 of 94-119 ms (four runs); with 2, 83-98 ms (three runs), the same rates
# (docs/performance.md, "Threads per worker").
DEFAULT_THREADS = 2
threads = int(os.environ.get("VIGIL_WEB_THREADS", str(DEFAULT_THREADS)))

# A gthread worker accepts connections until it holds `worker_connections` (gunicorn's default:
# 1,000), and a keep-alive connection stays with the worker that accepted it. Alertmanager, a
# load balancer or a load generator opens its connections in a burst and keeps them, so one
# worker could take them all and serve them on one core (one interpreter lock) while the others
# idle: measured with `make bench` ingest, case (a) ran on a single process at 159 req/s, and at
# 249 req/s spread over three with this cap. The cap leaves each worker room for idle keep-alive
# connections and for requests queued behind its threads (served in arrival order): eight, so
# that three workers hold 24 connections (a load generator's 16, Alertmanager's, a few
# browsers'), or twice the threads where that is more. A client beyond every worker's cap
# waits in the listen backlog until a connection closes (keep-alive lasts gunicorn's 2 s).
worker_connections = int(os.environ.get("VIGIL_WEB_CONNECTIONS", str(max(8, 2 * threads))))

backlog = 2048
timeout = 120
graceful_timeout = 5


def post_worker_init(worker) -> None:
    """Move what loading the application made out of the garbage collector's sight.

    A full collection walks every tracked object, and a loaded worker holds over 100,000 of them
    (modules, classes, URL patterns, settings): 50 ms on the 2-core bench VM with the interpreter
    lock held, so every thread of the worker stalls while it runs. `make bench` ingest, three
    runs before and three after: the do-nothing view's p99 108-212 -> 26-40 ms, (c)'s 139-236
    -> 124-159 ms (docs/performance.md). Frozen objects are never collected, which costs nothing
    for what lives as long as the process. The URL configuration is loaded first, in case a
    view module is not imported yet.
    """
    import gc
    import logging

    from django.urls import get_resolver

    try:
        get_resolver().url_patterns  # noqa: B018 (imports every view module)
    except Exception:
        # Not this hook's to decide: the first request reports it, as it would without the hook.
        logging.getLogger(__name__).exception("URL configuration not loadable at worker start")
    gc.collect()
    gc.freeze()

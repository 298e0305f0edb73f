"""Benchmark 2: an alert storm — 20,000 alerts across 200 Alertmanager groups within 60 s.

Paced like Alertmanager: every group gets NOTIFICATIONS notifications spread evenly over the
window (the first at a random offset), and, as Alertmanager does, each notification carries all
of the group's alerts so far (BENCH_STORM_MODE=incremental sends only the new ones). At most 16
are in flight at once. Meanwhile a logged-in browser stand-in polls the incident list page.
gunicorn, a real worker and beat run as in production.

After the storm the benchmark waits for collection to settle (queue and reservations empty, no
round running; at most BENCH_STORM_SETTLE seconds), then counts incidents, alerts, and
`collection_started` timeline events per incident.

Targets: ≤ 200 incidents, collection started at most twice per incident, no 5xx, the incident
list p95 ≤ 200 ms during the storm.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .common import (
    CONCURRENCY,
    STORM_ALERTS,
    STORM_GROUPS,
    STORM_SECONDS,
    Config,
    CpuTally,
    env_float,
    latency_summary,
    percentile,
    table,
    target,
)
from .ingest import _alert, _integration_token, _notification
from .loadgen import HTTPS_PROXY_HEADER, Connection, split_url
from .servers import CeleryBeat, CeleryWorker, Gunicorn

NOTIFICATIONS = 10  # per group over the window
LIST_P95_MS = 200.0
MAX_STARTS = 2
POLL_PAUSE = 0.25


def plan(groups: int, per_group: int, seconds: float, mode: str, seed: int = 10) -> list[tuple]:
    """[(at_seconds, group, body bytes, new alerts in it)], sorted by time."""
    rng = random.Random(seed)
    starts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    interval = seconds / NOTIFICATIONS
    out = []
    for g in range(groups):
        group = f"storm{g}"
        alerts = [
            _alert(f"s{g:04d}-{i:04d}", group, starts, "BenchStorm") for i in range(per_group)
        ]
        offset = rng.uniform(0, interval)
        for k in range(NOTIFICATIONS):
            lo = k * per_group // NOTIFICATIONS
            hi = (k + 1) * per_group // NOTIFICATIONS
            if hi == lo:
                continue
            carried = alerts[lo:hi] if mode == "incremental" else alerts[:hi]
            body = json.dumps(_notification(carried, group, "BenchStorm")).encode()
            out.append((offset + k * interval, g, body, hi - lo))
    out.sort(key=lambda item: item[0])
    return out


async def send_storm(url: str, schedule: list[tuple], auth: str) -> list[dict]:
    host, port, path = split_url(url)
    headers = {
        "Content-Type": "application/json",
        "Authorization": auth,
        HTTPS_PROXY_HEADER[0]: HTTPS_PROXY_HEADER[1],
    }
    gate = asyncio.Semaphore(CONCURRENCY)
    pool = [Connection(host, port) for _ in range(CONCURRENCY)]
    records: list[dict] = []
    begin = time.monotonic()

    async def one(at: float, body: bytes) -> None:
        async with gate:
            conn = pool.pop()
            started = time.monotonic()
            record = {"lag": started - begin - at, "status": None, "error": None}
            try:
                answer = await asyncio.wait_for(conn.request("POST", path, body, headers), 30)
                record["status"] = answer.status
            except Exception as exc:  # any socket trouble is an error of the run, counted
                record["error"] = type(exc).__name__
                conn.close()
            record["latency"] = time.monotonic() - started
            pool.append(conn)
            records.append(record)

    tasks = []
    for at, _, body, _ in schedule:
        delay = begin + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at, body)))
    await asyncio.gather(*tasks)
    for conn in pool:
        conn.close()
    return records


class ListPoller(threading.Thread):
    """GET /incidents/ as a logged-in viewer, one request after another with a short pause."""

    def __init__(self, base_url: str, path: str, cookie: str) -> None:
        super().__init__(name="bench-list-poller", daemon=True)
        self.host, self.port, _ = split_url(base_url)
        self.path = path
        self.cookie = cookie
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.bytes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            started = time.perf_counter()
            try:
                conn.request(
                    "GET",
                    self.path,
                    headers={"Cookie": self.cookie, HTTPS_PROXY_HEADER[0]: HTTPS_PROXY_HEADER[1]},
                )
                answer = conn.getresponse()
                body = answer.read()
                key = str(answer.status)
                self.bytes = max(self.bytes, len(body))
            except OSError as exc:
                key = type(exc).__name__
            finally:
                conn.close()
            self.latencies.append(time.perf_counter() - started)
            self.statuses[key] = self.statuses.get(key, 0) + 1
            self._halt.wait(POLL_PAUSE)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=35)


def viewer_cookie() -> str:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    user = get_user_model().objects.create_user(username="bench-viewer")
    user.groups.add(Group.objects.get(name="viewer"))
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def _settled(queue: str) -> bool:
    from django.db.models import F, Q

    from incidents.models import Incident
    from vigil.celery import app

    running = (
        Incident.objects.filter(collection_started_at__isnull=False)
        .filter(
            Q(collection_finished_at__isnull=True)
            | Q(collection_finished_at__lt=F("collection_started_at"))
        )
        .exists()
    )
    if running:
        return False
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        waiting = client.llen(queue) + client.hlen("unacked")
    return waiting == 0


def run(cfg: Config) -> dict:
    from django.conf import settings
    from django.db.models import Count, F

    from incidents.models import Alert, Incident, TimelineEvent, WebhookDelivery

    workdir = Path(cfg.workdir) / "storm"
    workdir.mkdir(parents=True, exist_ok=True)
    groups = max(2, round(STORM_GROUPS * cfg.scale))
    total = max(groups * NOTIFICATIONS, round(STORM_ALERTS * cfg.scale))
    per_group = total // groups
    seconds = cfg.scaled(STORM_SECONDS, 5.0)
    mode = os.environ.get("BENCH_STORM_MODE", "cumulative")
    settle_limit = env_float("BENCH_STORM_SETTLE", 120.0)
    schedule = plan(groups, per_group, seconds, mode)
    carried = sum(len(json.loads(body)["alerts"]) for _, _, body, _ in schedule)

    token = _integration_token()
    cookie = viewer_cookie()
    worker = CeleryWorker.for_run(cfg, workdir, "storm")
    beat = CeleryBeat(workdir / "beat.log", schedule=workdir / "celerybeat-schedule")
    web = Gunicorn.for_run(cfg, workdir)
    started_servers = []
    try:
        for server in (worker, beat, web):
            server.start()
            started_servers.append(server)
        roots = {"gunicorn": web.pid, "celery": worker.pid}
        poller = ListPoller(web.url, "/incidents/", cookie)
        # Before the storm: the list with nothing in it, so its growth is visible.
        poller.start()
        time.sleep(1.0)
        quiet = list(poller.latencies)
        with CpuTally(roots) as tally:
            storm_started = time.monotonic()
            storm_began_at = datetime.now(UTC)
            records = asyncio.run(
                send_storm(f"{web.url}/hooks/alertmanager", schedule, f"Bearer {token}")
            )
            storm_seconds = time.monotonic() - storm_started
            storm_ended_at = datetime.now(UTC)
        during = poller.latencies[len(quiet) :]
        poller.stop()
        cpu = tally.seconds()
        settle_started = time.monotonic()
        stable = 0
        while time.monotonic() - settle_started < settle_limit:
            stable = stable + 1 if _settled(settings.CELERY_TASK_DEFAULT_QUEUE) else 0
            if stable >= 3:
                break
            time.sleep(1.0)
        settle_seconds = time.monotonic() - settle_started
    finally:
        for server in reversed(started_servers):
            server.stop()

    starts = TimelineEvent.objects.filter(kind=TimelineEvent.Kind.COLLECTION_STARTED)
    per_incident = list(
        starts.values("incident_id").annotate(n=Count("id")).values_list("n", flat=True)
    )
    during_storm = list(
        starts.filter(at__lte=storm_ended_at)
        .values("incident_id")
        .annotate(n=Count("id"))
        .values_list("n", flat=True)
    )
    histogram: dict[str, int] = {}
    for n in per_incident:
        histogram[str(n)] = histogram.get(str(n), 0) + 1
    incidents = Incident.objects.count()
    never_collected = Incident.objects.filter(collection_started_at__isnull=True).count()
    unserved = Incident.objects.filter(
        collection_requested_at__gt=F("collection_started_at")
    ).count()
    statuses: dict[str, int] = {}
    for r in records:
        key = str(r["status"]) if r["status"] is not None else r["error"]
        statuses[key] = statuses.get(key, 0) + 1
    five_xx = sum(1 for r in records if r["status"] is not None and r["status"] >= 500)
    errors = sum(1 for r in records if r["status"] is None or not 200 <= r["status"] < 300)
    lags = [max(0.0, r["lag"]) for r in records]
    stored = Alert.objects.count()
    deliveries = dict(
        WebhookDelivery.objects.values("status").annotate(n=Count("id")).values_list("status", "n")
    )
    return {
        "mode": mode,
        "groups": groups,
        "alerts": per_group * groups,
        "notifications": len(schedule),
        "alerts_carried": carried,
        "window_s": seconds,
        "storm_s": round(storm_seconds, 2),
        "storm_began_at": storm_began_at.isoformat(),
        "schedule_lag_ms": {
            "p50": round((percentile(lags, 50) or 0) * 1000, 1),
            "p95": round((percentile(lags, 95) or 0) * 1000, 1),
            "max": round(max(lags, default=0) * 1000, 1),
        },
        "webhook_latency_ms": latency_summary([r["latency"] for r in records]),
        "statuses": statuses,
        "five_xx": five_xx,
        "errors": errors,
        "alerts_stored": stored,
        "alerts_lost": max(0, per_group * groups - stored),
        "deliveries_by_status": deliveries,
        "incidents": incidents,
        "collection_starts": {
            "max": max(per_incident, default=0),
            "mean": round(sum(per_incident) / max(len(per_incident), 1), 2),
            "histogram": histogram,
            "max_during_storm": max(during_storm, default=0),
            "never_collected": never_collected,
            "requested_but_not_collected": unserved,
        },
        "settle_s": round(settle_seconds, 1),
        "settled": settle_seconds < settle_limit,
        "list": {
            "path": "/incidents/",
            "quiet_ms": latency_summary(quiet),
            "during_ms": latency_summary(during),
            "statuses": poller.statuses,
            "largest_page_bytes": poller.bytes,
        },
        "cpu_s": cpu,
        "gunicorn": web.describe(),
        "celery": worker.describe(),
        "debounce_s": settings.VIGIL_COLLECT_DEBOUNCE,
    }


def report(result: dict) -> str:
    lat = result["webhook_latency_ms"]
    lst = result["list"]["during_ms"]
    starts = result["collection_starts"]
    rows = [
        [
            "alerts sent / stored / lost",
            f"{result['alerts']:,} / {result['alerts_stored']:,} / {result['alerts_lost']:,}",
        ],
        [
            "notifications (alerts carried)",
            f"{result['notifications']:,} ({result['alerts_carried']:,}, {result['mode']})",
        ],
        ["groups / incidents", f"{result['groups']:,} / {result['incidents']:,}"],
        [
            "storm took (window)",
            f"{result['storm_s']:.1f}s ({result['window_s']:g}s); lag p95 "
            f"{result['schedule_lag_ms']['p95']:,.0f} ms, max {result['schedule_lag_ms']['max']:,.0f} ms",
        ],
        [
            "webhook latency p50 / p95 / p99 ms",
            f"{lat['p50']} / {lat['p95']} / {lat['p99']}",
        ],
        ["statuses", json.dumps(result["statuses"])],
        [
            "incident list p50 / p95 / max ms (n)",
            f"{lst['p50']} / {lst['p95']} / {lst['max']} ({lst['n']}); quiet p50 "
            f"{result['list']['quiet_ms']['p50']}; statuses {json.dumps(result['list']['statuses'])}",
        ],
        [
            "collection started per incident",
            f"max {starts['max']} (during storm {starts['max_during_storm']}), mean "
            f"{starts['mean']}, histogram {json.dumps(starts['histogram'])}",
        ],
        [
            "collection never started / requested not served",
            f"{starts['never_collected']} / {starts['requested_but_not_collected']}",
        ],
        [
            "settled after (debounce)",
            f"{result['settle_s']}s{'' if result['settled'] else ' (NOT settled)'} "
            f"({result['debounce_s']:g}s)",
        ],
        ["cpu s during storm", json.dumps(result["cpu_s"])],
    ]
    return table(["figure", "value"], rows, title="2. Alert storm")


def targets(result: dict) -> list[dict]:
    starts = result["collection_starts"]["max"]
    p95 = result["list"]["during_ms"]["p95"]
    return [
        target(
            "2 storm",
            "incidents",
            result["incidents"],
            f"≤ {result['groups']}",
            result["incidents"] <= result["groups"],
        ),
        target(
            "2 storm",
            "collection starts, worst incident",
            starts,
            f"≤ {MAX_STARTS}",
            starts <= MAX_STARTS,
        ),
        target("2 storm", "5xx answers", result["five_xx"], "0", result["five_xx"] == 0),
        target(
            "2 storm",
            "storm delivered in (s), paced over the window",
            result["storm_s"],
            f"≈ {result['window_s']:g} (the schedule kept)",
            result["storm_s"] <= result["window_s"] * 1.1 + 1,
        ),
        target(
            "2 storm",
            "incident list p95 during storm (ms)",
            p95,
            f"≤ {LIST_P95_MS:.0f}",
            p95 is not None and p95 <= LIST_P95_MS and set(result["list"]["statuses"]) == {"200"},
        ),
        target("2 storm", "alerts lost", result["alerts_lost"], "0", result["alerts_lost"] == 0),
    ]

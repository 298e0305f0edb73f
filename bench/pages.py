"""Benchmark 4: pages at scale — 10,000 incidents, 500,000 alerts, 200,000 timeline events.

The data is loaded with COPY (psycopg 3) in two steps, and the pages are measured after each:
first a tenth of it, then all of it, so the query counts printed side by side show whether they
grow with the data. The incident whose page and timeline are measured is a real one when the
replay works (scenario 01 replayed and analysed here, so its page has evidence, an analysis and
proposals), with alerts and timeline events added to it: 50 and 100 at the first size, 500 and
1,000 at the second (the page shows 50 alerts, the timeline 200 events, at a time).

Server time is measured in this process with Django's test client (the whole middleware stack,
production settings, a logged-in viewer; no socket, no gunicorn): the time from request to
response, p50/p95 over BENCH_PAGES_REQUESTS requests after a warm-up. Query counts come from
CaptureQueriesContext, and the slowest queries of each page at the larger size are EXPLAINed
(ANALYZE, BUFFERS) into the JSON.

Target: server time p95 ≤ 50 ms for the list, the incident page and its timeline, and query
counts that do not grow with the data.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from datetime import UTC, datetime, timedelta

from .common import (
    PAGES_ALERTS,
    PAGES_EVENTS,
    PAGES_INCIDENTS,
    PAGES_TARGET_ALERTS,
    ROOT,
    Config,
    cpu_clock,
    env_int,
    latency_summary,
    stolen_share,
    table,
    target,
)

P95_MS = 50.0
FIRST_SHARE = 0.1
TARGETED = ("list", "detail", "timeline")
SEVERITIES = [("critical", 5), ("warning", 3), ("info", 1), ("high", 4)]
ALERTNAMES = [
    "VLLMKVCacheNearlyFull",
    "VLLMTimeToFirstTokenHigh",
    "GPUXidError",
    "KubePodCrashLooping",
    "KubePodNotReady",
    "NodeNotReady",
    "HighErrorRate",
    "GPUTemperatureHigh",
]


def _copy(model, columns: list[str], rows) -> int:
    """COPY rows into the model's table; other NOT NULL columns get the field's default."""
    from django.db import connection

    fields = {f.column: f for f in model._meta.concrete_fields}
    extra_columns, extra_values = [], []
    for column, f in fields.items():
        if column in columns or f.primary_key:
            continue
        default = f.get_default() if f.has_default() else None
        if default is None and not f.null:
            default = "" if f.get_internal_type() in ("CharField", "TextField") else 0
        extra_columns.append(column)
        extra_values.append(f.get_db_prep_save(default, connection))
    names = ", ".join(f'"{c}"' for c in [*columns, *extra_columns])
    count = 0
    sql = f'COPY "{model._meta.db_table}" ({names}) FROM STDIN'
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row((*row, *extra_values))
            count += 1
    return count


def _split_counts(total: int, buckets: int, rng: random.Random) -> list[int]:
    """`total` spread over `buckets`, unevenly (a few big incidents, many small ones)."""
    if buckets <= 0:
        return []
    weights = [rng.paretovariate(2.0) for _ in range(buckets)]
    scale = total / sum(weights)
    counts = [int(w * scale) for w in weights]
    for i in range(total - sum(counts)):
        counts[i % buckets] += 1
    return counts


class Loader:
    """Synthetic incidents with their alerts and timeline, appended in steps."""

    def __init__(self, cluster_id: int, seed: int = 4) -> None:
        self.cluster_id = cluster_id
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC)
        self.serial = 0

    def load(self, incidents: int, alerts: int, events: int) -> dict:
        from django.db import connection

        from incidents.models import Alert, Incident, TimelineEvent

        timings = {}
        started = time.monotonic()
        before = Incident.objects.order_by("-id").values_list("id", flat=True).first() or 0
        base = self.serial
        self.serial += incidents
        rows = []
        for n in range(base, base + incidents):
            sev, rank = SEVERITIES[n % len(SEVERITIES)]
            name = ALERTNAMES[n % len(ALERTNAMES)]
            status = "resolved" if n % 20 else ("open" if n % 40 else "acknowledged")
            opened = self.now - timedelta(days=90) + timedelta(seconds=n * 700)
            key = f'{{}}:{{alertname="{name}", bench="{n}"}}'
            rows.append(
                (
                    self.cluster_id,
                    f"{name} in ns-{n % 50} (bench {n})",
                    status,
                    sev,
                    rank,
                    f"svc-{n % 120}",
                    f"ns-{n % 50}",
                    key,
                    hashlib.sha256(key.encode()).hexdigest(),
                    "",
                    json.dumps({"alertname": name, "namespace": f"ns-{n % 50}"}),
                    opened,
                    opened + timedelta(hours=1) if status == "resolved" else None,
                    opened + timedelta(hours=1),
                    0,
                    0,
                    json.dumps({}),
                )
            )
        _copy(
            Incident,
            [
                "cluster_id",
                "title",
                "status",
                "severity",
                "severity_rank",
                "service",
                "namespace",
                "grouping_key",
                "group_hash",
                "correlation_key",
                "labels",
                "opened_at",
                "resolved_at",
                "updated_at",
                "alert_count",
                "firing_count",
                "scope",
            ],
            rows,
        )
        timings["incidents_s"] = round(time.monotonic() - started, 2)
        ids = list(
            Incident.objects.filter(id__gt=before)
            .order_by("id")
            .values_list("id", "group_hash", "opened_at")
        )
        t = time.monotonic()
        alert_counts = _split_counts(alerts, len(ids), self.rng)
        self._alerts(Alert, ids, alert_counts)
        timings["alerts_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        event_counts = _split_counts(events, len(ids), self.rng)
        self._events(TimelineEvent, [i for i, _, _ in ids], [o for _, _, o in ids], event_counts)
        timings["events_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE incidents_incident i SET alert_count = a.n, firing_count = a.f "
                "FROM (SELECT incident_id, count(*) n, count(*) FILTER (WHERE status='firing') f "
                "FROM incidents_alert GROUP BY incident_id) a WHERE a.incident_id = i.id "
                "AND i.id = ANY(%s)",
                [[i for i, _, _ in ids]],
            )
        timings["counters_s"] = round(time.monotonic() - t, 2)
        timings["total_s"] = round(time.monotonic() - started, 2)
        return timings

    def _alerts(self, Alert, ids, counts) -> None:
        def rows():
            for (incident_id, ghash, opened), count in zip(ids, counts, strict=True):
                for j in range(count):
                    yield self._alert_row(incident_id, ghash, opened, j)

        _copy(Alert, ALERT_COLUMNS, rows())

    def add_alerts(self, incident_id: int, ghash: str, opened: datetime, first: int, count: int):
        from incidents.models import Alert

        _copy(
            Alert,
            ALERT_COLUMNS,
            (self._alert_row(incident_id, ghash, opened, first + j) for j in range(count)),
        )

    def _alert_row(self, incident_id: int, ghash: str, opened: datetime, j: int) -> tuple:
        name = ALERTNAMES[(incident_id + j) % len(ALERTNAMES)]
        labels = {
            "alertname": name,
            "namespace": f"ns-{incident_id % 50}",
            "pod": f"pod-{incident_id}-{j}",
            "node": f"node-{j % 40}",
            "severity": "warning",
            "container": "server",
            "job": "kube-state-metrics",
        }
        starts = opened + timedelta(seconds=j)
        firing = j % 3 == 0
        return (
            self.cluster_id,
            incident_id,
            f"{incident_id:08x}{j:06x}",
            starts,
            None if firing else starts + timedelta(minutes=30),
            "firing" if firing else "resolved",
            name,
            json.dumps(labels),
            json.dumps({"summary": f"{name} on pod-{incident_id}-{j}", "runbook_url": ""}),
            f"http://prometheus:9090/graph?g0.expr=up%7Bpod%3D%22pod-{j}%22%7D",
            ghash,
            starts,
            starts,
            1,
        )

    def _events(self, TimelineEvent, ids, opened, counts) -> None:
        def rows():
            for incident_id, at0, count in zip(ids, opened, counts, strict=True):
                yield from self._event_rows(incident_id, at0, 0, count)

        _copy(TimelineEvent, EVENT_COLUMNS, rows())

    def add_events(self, incident_id: int, at0: datetime, first: int, count: int) -> None:
        from incidents.models import TimelineEvent

        _copy(TimelineEvent, EVENT_COLUMNS, self._event_rows(incident_id, at0, first, count))

    def _event_rows(self, incident_id: int, at0: datetime, first: int, count: int):
        for j in range(first, first + count):
            kind = "incident_opened" if j == 0 else ("alert_firing" if j % 2 else "alert_resolved")
            yield (
                incident_id,
                at0 + timedelta(seconds=j),
                kind,
                "alertmanager",
                f"{ALERTNAMES[j % len(ALERTNAMES)]} {kind.split('_')[1]} (namespace=ns-{incident_id % 50}, pod=pod-{incident_id}-{j})",
                json.dumps(
                    {"fingerprint": f"{incident_id:08x}{j:06x}", "labels": {"pod": f"pod-{j}"}}
                ),
            )


ALERT_COLUMNS = [
    "cluster_id",
    "incident_id",
    "fingerprint",
    "starts_at",
    "ends_at",
    "status",
    "alertname",
    "labels",
    "annotations",
    "generator_url",
    "group_hash",
    "first_seen_at",
    "last_seen_at",
    "notification_count",
]
EVENT_COLUMNS = ["incident_id", "at", "kind", "actor", "summary", "payload"]


def _real_incident(notes: list[str]) -> int | None:
    """Scenario 01 replayed and analysed here: an incident page with evidence and an analysis."""
    from replay.evaluation import analyse_now
    from replay.scenario import load_scenario
    from replay.server import serve_in_process, server_url
    from replay.world import ReplayWorld

    path = ROOT / "scenarios" / "01-bad-deploy.yaml"
    server = serve_in_process()
    try:
        with ReplayWorld(load_scenario(path)) as world:
            delivery = world.deliver(server_url(server))
            if not delivery.incident_ids:
                notes.append("the replay opened no incident")
                return None
            analysis = analyse_now(delivery.incident_ids[0])
            notes.append(
                f"measured incident: {path.name} replayed ({world.metrics_note or 'prometheus'}), "
                f"analysis {analysis.status}"
            )
            return delivery.incident_ids[0]
    except Exception as exc:
        notes.append(f"replay failed ({type(exc).__name__}: {exc}); a synthetic incident instead")
        return None
    finally:
        server.shutdown()
        server.server_close()


def _client(user):
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    return client


class _QueryTimer:
    """Every query of a request, timed with perf_counter (CaptureQueriesContext rounds to 1 ms)."""

    def __init__(self) -> None:
        self.queries: list[dict] = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            try:
                text = context["connection"].ops.last_executed_query(context["cursor"], sql, params)
            except Exception:
                text = sql
            self.queries.append({"sql": text, "ms": round(elapsed * 1000, 3)})


def _measure(client, path: str, requests: int, headers: dict | None = None) -> dict:
    from django.db import connection

    headers = headers or {}
    for _ in range(3):
        response = client.get(path, secure=True, headers=headers)
    status = response.status_code
    times = []
    clock = cpu_clock()
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path, secure=True, headers=headers)
        times.append(time.perf_counter() - started)
    stolen = stolen_share(clock, cpu_clock())
    timer = _QueryTimer()
    with connection.execute_wrapper(timer):
        response = client.get(path, secure=True, headers=headers)
    queries = timer.queries
    return {
        "path": path,
        "status": status,
        "bytes": len(response.content),
        "ms": latency_summary(times),
        # Wall time includes what the hypervisor took: a page can read slow for the host's sake.
        "stolen_share": stolen,
        "queries": len(queries),
        "query_ms": round(sum(q["ms"] for q in queries), 2),
        "slowest": sorted(queries, key=lambda q: -q["ms"])[:3],
    }


def _explain(slowest: list[dict]) -> list[dict]:
    from django.db import connection

    plans = []
    for q in slowest[:2]:
        sql = q["sql"]
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        try:
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                plan = "\n".join(row[0] for row in cursor.fetchall())
        except Exception as exc:
            plan = f"EXPLAIN failed: {exc}"
        plans.append({"sql": sql[:2000], "ms": q["ms"], "plan": plan})
    return plans


def run(cfg: Config) -> dict:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection

    from incidents.clusters import default_cluster
    from incidents.models import Incident

    scale = cfg.scale
    requests = env_int("BENCH_PAGES_REQUESTS", 50 if scale >= 0.5 else 10)
    totals = {
        "incidents": max(20, round(PAGES_INCIDENTS * scale)),
        "alerts": max(200, round(PAGES_ALERTS * scale)),
        "events": max(100, round(PAGES_EVENTS * scale)),
    }
    target_alerts = PAGES_TARGET_ALERTS
    notes: list[str] = []
    incident_id = _real_incident(notes)
    cluster = default_cluster()
    loader = Loader(cluster.pk)
    if incident_id is None:
        loader.load(1, 0, 1)
        incident_id = Incident.objects.order_by("-id").values_list("id", flat=True).first()
    incident = Incident.objects.get(pk=incident_id)

    user = get_user_model().objects.create_user(username="bench-viewer")
    user.groups.add(Group.objects.get(name="viewer"))
    client = _client(user)
    api_key = _api_key()

    steps = []
    loaded = {"incidents": 0, "alerts": 0, "events": 0}
    target_loaded = {"alerts": 0, "events": 0}
    for share in (FIRST_SHARE, 1.0):
        want = {k: round(v * share) for k, v in totals.items()}
        add = {k: want[k] - loaded[k] for k in want}
        timings = loader.load(add["incidents"], add["alerts"], add["events"])
        t = time.monotonic()
        alerts_now = round(target_alerts * share)
        events_now = round(2 * target_alerts * share)
        loader.add_alerts(
            incident.pk,
            incident.group_hash,
            incident.opened_at,
            target_loaded["alerts"],
            alerts_now - target_loaded["alerts"],
        )
        loader.add_events(
            incident.pk,
            incident.opened_at,
            target_loaded["events"] + 1,
            events_now - target_loaded["events"],
        )
        target_loaded = {"alerts": alerts_now, "events": events_now}
        timings["measured_incident_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        with connection.cursor() as cursor:
            for table_name in (
                "incidents_incident",
                "incidents_alert",
                "incidents_timelineevent",
            ):
                cursor.execute(f"VACUUM ANALYZE {table_name}")
        timings["vacuum_analyze_s"] = round(time.monotonic() - t, 2)
        loaded = want
        counts = _counts()
        alerts_of_target = incident.alerts.count()
        last_alert_page = max(1, -(-alerts_of_target // 50))
        pages = {
            "list": "/incidents/",
            "detail": f"/incidents/{incident.pk}/",
            "timeline": f"/incidents/{incident.pk}/timeline",
            "list_open": "/incidents/?status=open",
            "list_page_50": "/incidents/?page=50",
            "detail_last_alerts": f"/incidents/{incident.pk}/?alerts_page={last_alert_page}",
            "timeline_first_page": f"/incidents/{incident.pk}/timeline?page=1",
            "api_list": "/api/v1/incidents",
            "api_detail": f"/api/v1/incidents/{incident.pk}",
        }
        measured = {}
        for key, path in pages.items():
            headers = {"Authorization": f"Token {api_key}"} if key.startswith("api") else None
            measured[key] = _measure(client, path, requests, headers)
        if share == 1.0:
            for result in measured.values():
                result["explain"] = _explain(result["slowest"])
        steps.append(
            {
                "rows": counts,
                "measured_incident": {
                    "alerts": alerts_of_target,
                    "timeline_events": incident.timeline.count(),
                },
                "load": timings,
                "pages": measured,
            }
        )
    return {
        "requests_per_page": requests,
        "incident_id": incident.pk,
        "notes": notes,
        "steps": steps,
        "load_total_s": round(sum(s["load"]["total_s"] for s in steps), 1),
    }


def _api_key() -> str:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_token", "bench-api", role="viewer", create=True, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def _counts() -> dict:
    from django.db import connection

    out = {}
    with connection.cursor() as cursor:
        for key, table_name in (
            ("incidents", "incidents_incident"),
            ("alerts", "incidents_alert"),
            ("events", "incidents_timelineevent"),
        ):
            cursor.execute(f"SELECT count(*) FROM {table_name}")  # noqa: S608 (our constants)
            out[key] = cursor.fetchone()[0]
    return out


def report(result: dict) -> str:
    small, large = result["steps"][0], result["steps"][-1]
    rows = []
    for key, page in large["pages"].items():
        before = small["pages"][key]
        rows.append(
            [
                ("* " if key in TARGETED else "  ") + key,
                page["status"],
                before["ms"]["p95"],
                page["ms"]["p50"],
                page["ms"]["p95"],
                page["ms"]["max"],
                before["queries"],
                page["queries"],
                page["query_ms"],
                page["slowest"][0]["ms"] if page["slowest"] else None,
                round(page["bytes"] / 1024, 1),
                None if page.get("stolen_share") is None else round(page["stolen_share"] * 100),
            ]
        )
    loads = "; ".join(
        f"{s['rows']['incidents']:,} incidents / {s['rows']['alerts']:,} alerts / "
        f"{s['rows']['events']:,} events after {s['load']['total_s']:g}s load "
        f"(+{s['load']['vacuum_analyze_s']:g}s VACUUM ANALYZE), measured incident "
        f"{s['measured_incident']['alerts']} alerts, {s['measured_incident']['timeline_events']} events"
        for s in result["steps"]
    )
    text = table(
        [
            "page (* = target)",
            "status",
            "p95 ms small",
            "p50 ms",
            "p95 ms",
            "max ms",
            "queries small",
            "queries",
            "sql ms",
            "slowest q ms",
            "KiB",
            "stolen %",
        ],
        rows,
        title=(
            f"4. Pages at scale: server time in-process (test client, production settings), "
            f"{result['requests_per_page']} requests per page\n   {loads}"
        ),
    )
    if result["notes"]:
        text += "\n" + "\n".join(result["notes"])
    return text


def targets(result: dict) -> list[dict]:
    small, large = result["steps"][0], result["steps"][-1]
    out = []
    for key in TARGETED:
        p95 = large["pages"][key]["ms"]["p95"]
        out.append(target("4 pages", f"{key} server p95 ms", p95, f"≤ {P95_MS:g}", p95 <= P95_MS))
    grew = [
        f"{k} {small['pages'][k]['queries']}→{large['pages'][k]['queries']}"
        for k in large["pages"]
        if large["pages"][k]["queries"] > small["pages"][k]["queries"]
    ]
    out.append(
        target(
            "4 pages",
            "pages whose query count grew with the data",
            ", ".join(grew) or 0,
            "none",
            not grew,
        )
    )
    statuses = {k: p["status"] for k, p in large["pages"].items() if p["status"] != 200}
    out.append(
        target(
            "4 pages",
            "pages not answering 200",
            json.dumps(statuses) if statuses else 0,
            "none",
            not statuses,
        )
    )
    return out

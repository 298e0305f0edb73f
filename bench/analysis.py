"""Benchmark 3: time to analysis — from the webhook's 2xx to `analysis.status == ready`.

Every scenario is replayed through a real Prometheus (backfilled by promtool) and the Kubernetes
stand-in (replay.world.ReplayWorld), delivered over HTTP to gunicorn, and collected and analysed
by a real Celery worker; no LLM. One scenario at a time: the figure is an incident's own latency,
not a queue's. The clock starts when the hook's 2xx has been read and stops at the analysis's
`finished_at` (same machine, same clock).

The split comes from what the pipeline stores: the worker's claim (`collection_started_at`), the
`collection_started` timeline event (after scope resolution), each Evidence row's `seconds` (the
collector's own run time) and `collected_at`, `collection_finished_at`, and the analysis's
`created_at`/`finished_at`.

Targets: p50 ≤ 2 s, p95 ≤ 5 s.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from .common import Config, env_float, percentile, table, target
from .memory import PeakRSS
from .servers import CeleryWorker, Gunicorn

NOT_COLLECTED = "n/a: resolved on arrival (no firing alert), so by design never collected"
P50_S = 2.0
P95_S = 5.0
COLLECTORS = ("prometheus", "kubernetes", "logs", "gpu", "deploys")
STAGES = ("queue", "scope", *COLLECTORS, "collectors_wall", "finish", "analysis_wait", "analysis")


def _wait_for_analysis(incident_id: int, timeout: float):
    from assistant.models import Analysis
    from incidents.models import Incident

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        analysis = (
            Analysis.objects.filter(incident_id=incident_id, status__in=("ready", "failed"))
            .order_by("created_at", "id")
            .first()
        )
        if analysis is not None:
            return analysis, ""
        incident = Incident.objects.get(pk=incident_id)
        if incident.status == "resolved" and incident.collection_requested_at is None:
            return None, NOT_COLLECTED
        time.sleep(0.02)
    return None, f"no analysis within {timeout:g}s"


def _split(incident, analysis, t0: datetime) -> dict:
    from collectors.models import Evidence
    from incidents.models import TimelineEvent

    def secs(a, b):
        return round((b - a).total_seconds(), 3) if a and b else None

    started_event = (
        TimelineEvent.objects.filter(incident=incident, kind=TimelineEvent.Kind.COLLECTION_STARTED)
        .order_by("at", "id")
        .first()
    )
    scope_done = started_event.at if started_event else None
    evidence = list(Evidence.objects.filter(incident=incident))
    split: dict = {
        "total": secs(t0, analysis.finished_at),
        "queue": secs(t0, incident.collection_started_at),
        "scope": secs(incident.collection_started_at, scope_done),
    }
    last_collected = None
    failed = []
    for name in COLLECTORS:
        rows = [e for e in evidence if e.collector == name]
        seconds = [float(e.data.get("seconds", 0) or 0) for e in rows]
        split[name] = round(max(seconds), 3) if seconds else None
        for e in rows:
            if last_collected is None or e.collected_at > last_collected:
                last_collected = e.collected_at
            if e.status == "failed":
                failed.append(f"{name}: {e.reason[:80]}")
    split["collectors_wall"] = secs(scope_done, last_collected)
    split["finish"] = secs(last_collected, incident.collection_finished_at)
    split["analysis_wait"] = secs(incident.collection_finished_at, analysis.created_at)
    split["analysis"] = secs(analysis.created_at, analysis.finished_at)
    split["evidence_items"] = len(evidence)
    split["failed_sources"] = failed
    return split


def run(cfg: Config) -> dict:
    from assistant.models import Analysis
    from incidents.models import Incident
    from replay.scenario import load_scenario
    from replay.world import ReplayWorld

    from .llm_cost import prompt_cost

    workdir = Path(cfg.workdir) / "analysis"
    workdir.mkdir(parents=True, exist_ok=True)
    timeout = env_float("BENCH_ANALYSIS_TIMEOUT", 60.0)
    worker = CeleryWorker.for_run(cfg, workdir, "analysis")
    web = Gunicorn.for_run(cfg, workdir)
    worker.start()
    try:
        web.start()
    except Exception:
        worker.stop()
        raise
    sampler = PeakRSS({"gunicorn": web.pid, "celery": worker.pid}).start()
    scenarios = []
    # The first incident a fresh worker handles pays its imports (the Kubernetes client, …): one
    # replay first, reported apart, so the figures are those of a worker that has been running.
    warmups = cfg.scenarios[:1] if env_float("BENCH_ANALYSIS_WARMUP", 1) else []
    try:
        for index, path in enumerate([*warmups, *cfg.scenarios]):
            entry: dict = {"scenario": Path(path).stem}
            if index < len(warmups):
                entry["warmup"] = True
            scenarios.append(entry)
            try:
                world = ReplayWorld(load_scenario(Path(path))).start()
            except Exception as exc:
                entry["error"] = f"world did not start: {type(exc).__name__}: {exc}"
                continue
            try:
                entry["metrics"] = world.metrics_note or "prometheus"
                delivery = world.deliver(web.url)
                t0 = datetime.now(UTC)
                observed0 = time.monotonic()
                if not delivery.incident_ids:
                    entry["error"] = "the replay opened no incident"
                    continue
                incident_id = delivery.incident_ids[0]
                analysis, why = _wait_for_analysis(incident_id, timeout)
                entry["observed_s"] = round(time.monotonic() - observed0, 3)
                if analysis is None:
                    entry["error"] = why
                    continue
                entry["status"] = analysis.status
                if analysis.status != Analysis.Status.READY:
                    entry["error"] = f"analysis failed: {analysis.error[:200]}"
                incident = Incident.objects.get(pk=incident_id)
                entry.update(_split(incident, analysis, t0))
                try:
                    entry["prompt"] = prompt_cost(analysis)
                except Exception as exc:  # the prompt is extra information here
                    entry["prompt"] = {"error": f"{type(exc).__name__}: {exc}"}
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                world.stop()
    finally:
        memory = sampler.stop()
        web.stop()
        worker.stop()

    warm = [s for s in scenarios if s.get("warmup")]
    scenarios = [s for s in scenarios if not s.get("warmup")]
    timed = [s for s in scenarios if s.get("total") is not None and s.get("status") == "ready"]
    totals = [s["total"] for s in timed]
    stage_p = {}
    for stage in STAGES:
        values = [s[stage] for s in timed if s.get(stage) is not None]
        stage_p[stage] = {
            "p50": percentile(values, 50),
            "p95": percentile(values, 95),
            "max": max(values, default=None),
        }
    return {
        "scenarios": scenarios,
        "warmup": warm,
        "n": len(timed),
        "p50_s": percentile(totals, 50),
        "p95_s": percentile(totals, 95),
        "max_s": max(totals, default=None),
        "stages": stage_p,
        "not_timed": [
            s["scenario"] for s in scenarios if s not in timed and s.get("error") != NOT_COLLECTED
        ],
        "not_applicable": [s["scenario"] for s in scenarios if s.get("error") == NOT_COLLECTED],
        "gunicorn": web.describe(),
        "celery": worker.describe(),
        "memory": memory,
    }


def report(result: dict) -> str:
    headers = ["scenario", "total s", *STAGES]
    rows = []
    for s in result.get("warmup", []):
        rows.append(
            [f"(warm-up, not counted) {s['scenario']}", s.get("total")]
            + [s.get(stage) for stage in STAGES]
        )
    for s in result["scenarios"]:
        if s.get("total") is None:
            rows.append([s["scenario"], None, *([None] * (len(STAGES) - 1)), s.get("error", "")])
            continue
        rows.append([s["scenario"], s["total"], *[s.get(stage) for stage in STAGES]])
    for p in ("p50", "p95", "max"):
        rows.append(
            [
                p,
                result[f"{p}_s"],
                *[result["stages"][stage][p] for stage in STAGES],
            ]
        )
    text = table(
        headers,
        rows,
        title=(
            "3. Time to analysis (s): 2xx → analysis ready; queue = 2xx → worker claim, "
            "scope = claim → scope resolved, collectors = each one's own seconds, "
            f"collectors_wall = scope → last evidence stored; worker concurrency "
            f"{result['celery']['concurrency']}"
        ),
    )
    failed = [s for s in result["scenarios"] if s.get("failed_sources")]
    if failed:
        text += "\nsources that failed: " + "; ".join(
            f"{s['scenario']}: {', '.join(s['failed_sources'])}" for s in failed
        )
    return text


def targets(result: dict) -> list[dict]:
    p50, p95 = result["p50_s"], result["p95_s"]
    complete = not result["not_timed"]
    return [
        target(
            "3 time to analysis",
            f"p50 s ({result['n']} scenarios)",
            p50,
            f"≤ {P50_S:g}",
            p50 is not None and p50 <= P50_S,
        ),
        target(
            "3 time to analysis",
            "p95 s",
            p95,
            f"≤ {P95_S:g}",
            p95 is not None and p95 <= P95_S,
        ),
        target(
            "3 time to analysis",
            "scenarios that should but did not reach a ready analysis",
            len(result["not_timed"]),
            "0",
            complete,
        ),
    ]

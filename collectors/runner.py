"""Runs one collector for one incident and does all the bookkeeping a collector must not.

The split follows healthchecks' transports: collectors only read their source and return drafts;
here the drafts are redacted, capped in size and stored, and every way a collector can fail —
its own CollectorError, a crash, Celery's soft time limit — becomes an Evidence row marked
failed with a reason an engineer can act on. Nothing a collector does can stop the others.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from types import ModuleType

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from incidents.models import Incident

from .base import (
    AlertFacts,
    ClusterSources,
    CollectionContext,
    CollectorError,
    EvidenceDraft,
    Scope,
    Window,
    symptom_start,
)
from .models import Evidence
from .redaction import redact
from .registry import COLLECTORS, collector_named

logger = logging.getLogger(__name__)
TRUNCATION_NOTE = "truncated: the evidence was larger than VIGIL_EVIDENCE_MAX_BYTES"


def incident_alert_facts(incident: Incident, limit: int | None = None) -> tuple[AlertFacts, ...]:
    """The incident's alerts, oldest first, as collectors and rules see them."""
    rows = incident.alerts.order_by("starts_at")
    return tuple(
        AlertFacts(
            labels=a.labels,
            annotations=a.annotations,
            starts_at=a.starts_at,
            ends_at=a.ends_at,
            status=a.status,
            generator_url=a.generator_url,
        )
        for a in (rows[:limit] if limit else rows)
    )


def build_context(incident: Incident) -> CollectionContext:
    """What every collector of this incident sees: its cluster, scope, window and alerts."""
    cluster = incident.cluster
    alerts = incident_alert_facts(incident, limit=settings.VIGIL_COLLECT_MAX_ALERTS)
    firing = [a.starts_at for a in alerts if a.status == "firing"]
    first_alert_at = symptom_start(firing or [a.starts_at for a in alerts]) or incident.opened_at
    now = timezone.now()
    window = Window(
        start=min(first_alert_at, now) - settings.VIGIL_COLLECT_LOOKBACK,
        end=now,
        first_alert_at=first_alert_at,
    )
    sources = ClusterSources(
        name=cluster.name,
        prometheus_url=cluster.prometheus_url,
        alertmanager_url=cluster.alertmanager_url,
        loki_url=cluster.loki_url,
        kube_in_cluster=cluster.kube_in_cluster,
        kubeconfig_path=cluster.kubeconfig_path,
        kubeconfig=cluster.kubeconfig,
        kube_context=cluster.kube_context,
    )
    return CollectionContext(
        incident_id=incident.pk,
        cluster=sources,
        scope=Scope.from_json(incident.scope),
        window=window,
        alerts=alerts,
        timeout=settings.VIGIL_COLLECT_REQUEST_TIMEOUT,
    )


def run_collector(
    incident: Incident, name: str, ctx: CollectionContext | None = None
) -> list[Evidence]:
    """Run collector `name` and store what it found, or why it found nothing."""
    collector = collector_named(name)
    started = time.monotonic()
    ctx = ctx or build_context(incident)
    # Leave a fifth of the soft limit to draft and store what was gathered in time.
    ctx = replace(ctx, deadline=started + 0.8 * settings.VIGIL_COLLECTOR_SOFT_LIMIT)
    try:
        drafts = collect_safely(collector, ctx)
    except CollectorError as exc:
        return [store_failure(incident, name, exc.reason, started)]
    except SoftTimeLimitExceeded:
        limit = settings.VIGIL_COLLECTOR_SOFT_LIMIT
        return [
            store_failure(incident, name, f"timed out: still running after {limit:g}s", started)
        ]
    return store_drafts(incident, name, drafts, started)


def collect_safely(collector: ModuleType, ctx: CollectionContext) -> list[EvidenceDraft]:
    """A crash in a collector is a bug, but to the engineer it is a source that failed."""
    try:
        return list(collector.collect(ctx))
    except (CollectorError, SoftTimeLimitExceeded):
        raise
    except Exception as exc:
        logger.exception("collector %s crashed for incident %s", collector.NAME, ctx.incident_id)
        raise CollectorError(f"collector crashed: {type(exc).__name__}: {exc}") from exc


def store_failure(incident: Incident, name: str, reason: str, started: float) -> Evidence:
    reason, _ = redact(reason)
    return Evidence.objects.create(
        incident=incident,
        collector=name,
        kind="source_error",
        status=Evidence.Status.FAILED,
        reason=reason[:2000],
        title=f"{name}: {reason}"[:500],
        data={"seconds": round(time.monotonic() - started, 3)},
    )


def store_drafts(
    incident: Incident, name: str, drafts: list[EvidenceDraft], started: float
) -> list[Evidence]:
    """Store drafts within this collector's share of the incident's evidence budget."""
    seconds = round(time.monotonic() - started, 3)
    share = settings.VIGIL_EVIDENCE_MAX_BYTES_PER_INCIDENT // max(len(COLLECTORS), 1)
    rows: list[Evidence] = []
    used = 0
    for index, draft in enumerate(drafts):
        row = evidence_row(incident, name, draft)
        size = len(json.dumps(row.data, default=str))
        if index >= settings.VIGIL_EVIDENCE_MAX_ITEMS or used + size > share:
            rows.append(truncation_row(incident, name, dropped=len(drafts) - index))
            break
        used += size
        rows.append(row)
    if not rows:
        rows.append(
            Evidence(
                incident=incident,
                collector=name,
                kind="empty",
                title=f"{name}: nothing relevant found",
            )
        )
    for row in rows:
        row.data.setdefault("seconds", seconds)
    with transaction.atomic():
        return Evidence.objects.bulk_create(rows)


def evidence_row(incident: Incident, name: str, draft: EvidenceDraft) -> Evidence:
    data, redactions = redact(draft.data)
    title, title_redactions = redact(draft.title)
    data = cap_size(data)
    if redactions + title_redactions:
        data["redactions"] = redactions + title_redactions
    entity = draft.entity
    return Evidence(
        incident=incident,
        collector=name,
        kind=draft.kind,
        title=title[:500],
        data=data,
        entity_kind=entity.kind if entity else "",
        entity_namespace=(entity.namespace or "") if entity else "",
        entity_name=entity.name if entity else "",
    )


def truncation_row(incident: Incident, name: str, *, dropped: int) -> Evidence:
    return Evidence(
        incident=incident,
        collector=name,
        kind="truncation",
        title=f"{dropped} more {name} item(s) not kept: over the per-incident evidence budget",
        data={"dropped": dropped},
    )


def cap_size(data: dict) -> dict:
    """Keep one item below the byte cap: long lists are cut from the end, and the cut is said."""
    limit = settings.VIGIL_EVIDENCE_MAX_BYTES
    if len(json.dumps(data, default=str)) <= limit:
        return data
    capped = dict(data)
    for key in sorted(capped, key=lambda k: -len(json.dumps(capped[k], default=str))):
        value = capped[key]
        while isinstance(value, list) and value and len(json.dumps(capped, default=str)) > limit:
            value = value[: len(value) // 2]
            capped[key] = value
        if isinstance(value, str) and len(json.dumps(capped, default=str)) > limit:
            capped[key] = value[: limit // 2] + "…"
        if len(json.dumps(capped, default=str)) <= limit:
            break
    if len(json.dumps(capped, default=str)) > limit:
        capped = {"title_only": True}
    capped["truncated"] = TRUNCATION_NOTE
    return capped

"""Prometheus collector: the alerts' own expressions and the query profiles, as range queries.

What an engineer opens first is the graph of the alert itself, then the golden signals,
container resources and vLLM internals of whatever the alert is about. Both are range queries
from the window's start to its end, at a step that keeps each series under ~120 points, and each
series comes with a summary (collectors/series.py): baseline before the first alert, recent
level, ratio, extremes, and when it stepped.

Failure modes, following the collector contract (collectors/base.py):

- Prometheus unreachable, too slow, or answering with an HTTP error that is not about a query
  (401, 403, 500, a proxy's page): CollectorError from the first request that failed; the runner
  records "prometheus: failed, because …".
- Prometheus refusing one query (bad_data, execution error, its own timeout): a "metric_error"
  draft with the query and Prometheus' message; the other queries still count.
- A profile or alert query with no series: nothing; most profiles simply do not apply.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings

from .base import AlertFacts, CollectionContext, Entity, EvidenceDraft
from .profiles import Profile, bindings, load_profiles, render
from .series import (
    QueryRejected,
    Series,
    choose_step,
    interest,
    iso,
    range_query,
    rate_window,
    series_json,
    settle_time,
)
from .sources import prometheus_client

NAME = "prometheus"

MAX_SERIES = 12
"""Series kept per query: the firing ones first, then the most changed. A chart shows six."""

MAX_QUERIES = 48
"""Queries per collection; beyond this, profiles are skipped and the skip is recorded."""

MAX_PARALLEL = 4
"""Concurrent requests: a collection must fit the runner's soft limit even when each query
takes a second, without hammering the user's Prometheus."""

COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


@dataclass
class PlannedQuery:
    """One range query to run, and how to describe what it returns."""

    query: str
    title: str
    profile: str  # a profile's name, or "alert" for an alert's own expression
    unit: str
    entity: Entity | None
    first_alert_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    alert_labels: list[dict[str, str]] = field(default_factory=list)


def collect(ctx: CollectionContext) -> list[EvidenceDraft]:
    """Range-query the alerts' expressions and the scope's profiles; see the module docstring."""
    client = prometheus_client(ctx.cluster, ctx.timeout)
    step = choose_step(ctx.window.start, ctx.window.end)
    profiles = load_profiles(getattr(settings, "VIGIL_QUERY_PROFILES", "") or None)
    planned = alert_queries(ctx) + profile_queries(ctx, profiles.profiles, step)
    planned, skipped = planned[:MAX_QUERIES], planned[MAX_QUERIES:]
    results = run_queries(client, planned, ctx, step)

    alert_drafts: list[EvidenceDraft] = []
    profile_drafts: list[tuple[float, EvidenceDraft]] = []
    for plan, result in zip(planned, results, strict=True):
        draft = _draft(plan, result, ctx, step)
        if draft is None:
            continue
        if plan.profile == "alert":
            alert_drafts.append(draft)
        else:
            profile_drafts.append((_draft_interest(draft), draft))
    # Most telling first: the runner keeps drafts in order and cuts from the end.
    profile_drafts.sort(key=lambda pair: -pair[0])
    notes = [_problem_draft(problem) for problem in profiles.problems]
    if skipped:
        notes.append(_skipped_draft(skipped))
    return alert_drafts + [draft for _, draft in profile_drafts] + notes


# -- planning -----------------------------------------------------------------------------------


def alert_queries(ctx: CollectionContext) -> list[PlannedQuery]:
    """One query per distinct alert expression (several alerts often share one rule)."""
    groups: dict[str, list[AlertFacts]] = {}
    for alert in ctx.alerts:
        expr = alert_expression(alert.generator_url)
        if expr:
            groups.setdefault(" ".join(expr.split()), []).append(alert)
    planned = []
    for expr, alerts in groups.items():
        query, threshold = split_threshold(expr)
        names = list(dict.fromkeys(a.labels.get("alertname", "?") for a in alerts))
        planned.append(
            PlannedQuery(
                query=query,
                title=f"{', '.join(names)}: {query}",
                profile="alert",
                unit="",
                entity=_common_entity(alerts),
                first_alert_at=min(a.starts_at for a in alerts),
                details={"alerts": names, "alert_expr": expr, "threshold": threshold},
                alert_labels=[dict(a.labels) for a in alerts],
            )
        )
    return planned


def alert_expression(generator_url: str) -> str:
    """The PromQL of an alert's rule, from its generatorURL (`…/graph?g0.expr=…`); "" if none."""
    if not generator_url:
        return ""
    try:
        values = parse_qs(urlsplit(generator_url).query).get("g0.expr")
    except ValueError:
        return ""
    return values[0].strip() if values else ""


def split_threshold(expr: str) -> tuple[str, dict[str, Any] | None]:
    """`X > 20` -> ("X", {"op": ">", "value": 20.0}); anything else is returned whole.

    An alert rule usually compares a signal with a constant. Graphing the rule as written shows
    only the points past the threshold, which hides the baseline the summary compares with; the
    signal without its comparison shows the whole story, and the threshold is kept beside it.
    Only a single top-level comparison with a plain number on the right is split.
    """
    found = _top_level_comparisons(expr)
    if len(found) != 1:
        return expr, None
    index, op = found[0]
    left, right = expr[:index].strip(), expr[index + len(op) :].strip()
    try:
        value = float(right)
    except ValueError:
        return expr, None
    if not left:
        return expr, None
    return left, {"op": op, "value": value}


def _top_level_comparisons(expr: str) -> list[tuple[int, str]]:
    """(index, operator) of comparisons outside brackets and string literals."""
    found: list[tuple[int, str]] = []
    depth, index, quote = 0, 0, ""
    while index < len(expr):
        char = expr[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            op = next((op for op in COMPARISONS if expr.startswith(op, index)), None)
            if op:
                found.append((index, op))
                index += len(op)
                continue
        index += 1
    return found


def profile_queries(
    ctx: CollectionContext, profiles: list[Profile], step: int
) -> list[PlannedQuery]:
    """One query per profile and binding (entity) in scope."""
    window = rate_window(step)
    planned = []
    for profile in profiles:
        for binding in bindings(profile, ctx.scope):
            planned.append(
                PlannedQuery(
                    query=render(profile, binding, step=step, rate_window=window),
                    title=f"{profile.title} — {binding.label}",
                    profile=profile.name,
                    unit=profile.unit,
                    entity=binding.entity,
                    first_alert_at=ctx.window.first_alert_at,
                    details={"binding": binding.as_dict(), "profile_source": profile.source},
                )
            )
    return planned


def _common_entity(alerts: list[AlertFacts]) -> Entity | None:
    """The object all these alerts name by their labels, if they agree on one."""
    entities = {_entity_from_labels(a.labels) for a in alerts}
    return entities.pop() if len(entities) == 1 else None


def _entity_from_labels(labels: dict[str, str]) -> Entity | None:
    """The object an alert is about, by its labels.

    A GPU alert (it has a `gpu` or `UUID` label) is about the node: its pod labels only say
    which workload used the GPU. Otherwise the most specific workload label wins.
    """
    namespace = labels.get("namespace") or None
    node = labels.get("node") or labels.get("kubernetes_node") or labels.get("Hostname")
    if node and (labels.get("gpu") or labels.get("UUID")):
        return Entity("Node", None, node)
    for label, kind in (
        ("pod", "Pod"),
        ("deployment", "Deployment"),
        ("statefulset", "StatefulSet"),
        ("daemonset", "DaemonSet"),
    ):
        if labels.get(label) and namespace:
            return Entity(kind, namespace, labels[label])
    if node:
        return Entity("Node", None, node)
    return Entity("Namespace", None, namespace) if namespace else None


# -- running ------------------------------------------------------------------------------------


def run_queries(
    client: Any, planned: list[PlannedQuery], ctx: CollectionContext, step: int
) -> list[list[Series] | QueryRejected]:
    """Run the queries a few at a time; results in the order planned.

    A query Prometheus refuses comes back as its QueryRejected. A source failure (CollectorError)
    is raised from the first query, in planned order, that hit it; queries not started yet are
    cancelled and the ones in flight are left to finish within their own timeout.
    """

    def one(plan: PlannedQuery) -> list[Series] | QueryRejected:
        if ctx.out_of_time():
            return QueryRejected(plan.query, "skipped", "not run: the collector's time was up", 0)
        try:
            return range_query(
                client,
                plan.query,
                start=ctx.window.start,
                end=ctx.window.end,
                step=step,
                timeout=ctx.timeout,
            )
        except QueryRejected as exc:
            return exc

    if not planned:
        return []
    pool = ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(planned)))
    try:
        futures = [pool.submit(one, plan) for plan in planned]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# -- drafting -----------------------------------------------------------------------------------


def _draft(
    plan: PlannedQuery, result: list[Series] | QueryRejected, ctx: CollectionContext, step: int
) -> EvidenceDraft | None:
    if isinstance(result, QueryRejected):
        return EvidenceDraft(
            kind="metric_error",
            title=f"Prometheus refused the query for {plan.title}"[:500],
            entity=plan.entity,
            data={
                "query": plan.query,
                "profile": plan.profile,
                "error_type": result.error_type,
                "status": result.status,
                "message": result.message,
                **plan.details,
            },
        )
    if not result:
        return None
    rendered = [
        {
            **series_json(
                s,
                plan.first_alert_at,
                settle_after=settle_time(plan.query, s, ctx.window.start, step),
            ),
            **_firing(s, plan),
        }
        for s in result
    ]
    rendered.sort(key=lambda s: (not s.get("firing", False), -interest(s["summary"])))
    return EvidenceDraft(
        kind="metric",
        title=plan.title[:500],
        entity=plan.entity,
        data={
            "query": plan.query,
            "unit": plan.unit,
            "profile": plan.profile,
            "series": rendered[:MAX_SERIES],
            "series_total": len(rendered),
            "first_alert_at": iso(plan.first_alert_at),
            "start": iso(ctx.window.start),
            "end": iso(ctx.window.end),
            "step": step,
            **plan.details,
        },
    )


def _firing(series: Series, plan: PlannedQuery) -> dict[str, bool]:
    """For an alert's query: whether this series is one an alert of the incident fired for.

    An alert carries its series' labels plus the rule's own, so the series that fired agrees
    with some alert on every label both have (and shares at least one, unless the series has
    none at all). Agreeing only on shared labels, rather than carrying all of them, tolerates
    alerts whose labels were trimmed by relabelling. The other series are peers to compare with.
    """
    if plan.profile != "alert":
        return {}
    labels = {k: v for k, v in series.labels.items() if k != "__name__"}

    def fired_for(alert: dict[str, str]) -> bool:
        shared = [k for k in labels if k in alert]
        if labels and not shared:
            return False
        return all(alert[k] == labels[k] for k in shared)

    return {"firing": any(fired_for(alert) for alert in plan.alert_labels)}


def _draft_interest(draft: EvidenceDraft) -> float:
    series = draft.data.get("series") or []
    return max((interest(s["summary"]) for s in series), default=0.0)


def _problem_draft(problem: str) -> EvidenceDraft:
    return EvidenceDraft(
        kind="metric_error",
        title="Some query profiles could not be used",
        data={"error_type": "profile", "message": problem},
    )


def _skipped_draft(skipped: list[PlannedQuery]) -> EvidenceDraft:
    names = sorted({plan.title for plan in skipped})
    return EvidenceDraft(
        kind="metric_error",
        title=f"{len(skipped)} profile queries not run: over {MAX_QUERIES} per collection",
        data={
            "error_type": "limit",
            "message": f"{len(skipped)} queries beyond the limit of {MAX_QUERIES} were not run",
            "skipped": names[:50],
        },
    )

"""Container logs of the affected pods, reduced to error signatures (see collectors/signatures.py).

From Kubernetes: for the pods in scope, the troubled ones first (not ready, waiting, restarting;
at most MAX_PODS), each container's current log, and its previous instance's log when it has
restarted or terminated (a crash-looping container's current instance has usually printed
nothing useful yet). Reads are bounded: the last TAIL_LINES lines, since the window's start,
at most LIMIT_BYTES. A 400 from the log endpoint (a container that never started, no previous
instance) is a fact about the pod, not a failure: the draft says "no log: <why>".

From Loki, when the cluster has one: a LogQL `query_range` over the window for the same pods,
filtered to lines with error words, grouped the same way. Loki failing is noted in a
`collection_note`; the collector fails only when every source it tried failed.

Every draft is a `log_signatures` item per pod, container and instance:
`{source, namespace, pod, container, previous, lines_read, signatures: [{signature, level,
category, count, first, last, examples}], signatures_dropped, truncated, no_log}`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests
from kubernetes.client.exceptions import ApiException

from .base import CollectionContext, CollectorError, Entity, EvidenceDraft
from .kubernetes import OUT_OF_TIME, KubeReader, collection_note
from .signatures import LogLine, parse_timestamped, summarise
from .sources import http_error

NAME = "logs"

MAX_PODS = 6
MAX_CONTAINERS = 3  # per pod: the named ones and the troubled ones first
TAIL_LINES = 500
LIMIT_BYTES = 512 * 1024
MAX_SIGNATURES = 25
LOKI_LIMIT = 2000  # lines per query
LOKI_MAX_PODS = 30
# RE2 (LogQL): lines worth reading; the signature grouping decides what each one is.
LOKI_FILTER = (
    r"(?i)(error|exception|traceback|fatal|panic|critical|warn|fail|oom|killed|xid|nccl"
    r"|timeout|timed out|refused|\" 5[0-9][0-9] |code\":5[0-9][0-9]|status\":5[0-9][0-9]"
    r"| 5[0-9][0-9] | 429 )"
)


def collect(ctx: CollectionContext) -> list[EvidenceDraft]:
    """Log signatures per pod/container from Kubernetes, and from Loki when configured."""
    if not ctx.scope.pods:
        return []
    sources = []
    if ctx.cluster.has_kubernetes:
        sources.append(("kubernetes", _kubernetes_logs))
    if ctx.cluster.loki_url:
        sources.append(("loki", _loki_logs))
    drafts: list[EvidenceDraft] = []
    failures: list[tuple[str, CollectorError]] = []
    for source, read in sources:
        try:
            drafts.extend(read(ctx))
        except CollectorError as exc:
            failures.append((source, exc))
    if failures and len(failures) == len(sources):
        if len(failures) == 1:
            raise failures[0][1]
        raise CollectorError(
            "; ".join(f"{source}: {exc.reason}" for source, exc in failures),
            retryable=any(exc.retryable for _, exc in failures),
        )
    for source, exc in failures:
        drafts.append(collection_note(source, [exc.reason]))
    return drafts


# --- Kubernetes --------------------------------------------------------------------------------


def _kubernetes_logs(ctx: CollectionContext) -> list[EvidenceDraft]:
    refusals: list[CollectorError] = []
    drafts: list[EvidenceDraft] = []

    def attempt(read: Callable[[], Any]) -> Any:
        """A refusal is noted and skipped; an outage, or the runner's deadline, stops reading."""
        if ctx.out_of_time():
            raise CollectorError(OUT_OF_TIME, retryable=True)
        try:
            return read()
        except CollectorError as exc:
            if exc.retryable:
                raise
            refusals.append(exc)
            return None

    with KubeReader(ctx.cluster, ctx.timeout) as kube:
        try:
            pods = [
                pod
                for entity in ctx.scope.pods
                if (pod := attempt(lambda e=entity: kube.pod(e.namespace or "default", e.name)))
            ]
            since = _since_seconds(ctx)
            for pod in choose_pods(pods)[:MAX_PODS]:
                for container, previous in log_targets(pod, ctx.scope.containers):
                    draft = attempt(
                        lambda p=pod, c=container, prev=previous: _container_log(
                            kube, p, c, prev, since
                        )
                    )
                    if draft is not None:
                        drafts.append(draft)
        except CollectorError as exc:
            if not drafts:
                raise
            refusals.append(exc)  # an outage midway: keep what was read, say what stopped it
    if refusals and not drafts:
        raise refusals[0]
    if refusals:
        drafts.append(collection_note("kubernetes", [e.reason for e in refusals]))
    return drafts


def choose_pods(pods: list[dict]) -> list[dict]:
    """Troubled pods first (waiting, not ready, restarted), then in scope order."""

    def trouble(pod: dict) -> tuple[int, int]:
        status = pod.get("status") or {}
        statuses = (status.get("containerStatuses") or []) + (
            status.get("initContainerStatuses") or []
        )
        restarts = sum(s.get("restartCount", 0) for s in statuses)
        score = sum(
            2 * bool((s.get("state") or {}).get("waiting"))
            + (not s.get("ready"))
            + bool((s.get("lastState") or {}).get("terminated"))
            for s in statuses
        )
        if status.get("phase") not in ("Running", "Succeeded"):
            score += 1
        return -score, -restarts

    return sorted(pods, key=trouble)  # sorted() is stable: scope order breaks ties


def log_targets(pod: dict, named: list[str]) -> list[tuple[str, bool]]:
    """(container, previous) pairs to read: current logs, and previous ones after a restart."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = {
        s.get("name"): s
        for s in (status.get("containerStatuses") or [])
        + (status.get("initContainerStatuses") or [])
    }
    containers = [c["name"] for c in spec.get("containers") or []]
    # An init container matters only when it is the one failing.
    containers += [
        c["name"]
        for c in spec.get("initContainers") or []
        if statuses.get(c["name"], {}).get("restartCount")
        or (statuses.get(c["name"], {}).get("state") or {}).get("waiting")
    ]

    def priority(name: str) -> tuple[bool, bool]:
        s = statuses.get(name, {})
        return name not in named, bool(s.get("ready")) and not s.get("restartCount")

    targets = []
    for name in sorted(containers, key=priority)[:MAX_CONTAINERS]:
        container_status = statuses.get(name, {})
        waiting = "waiting" in (container_status.get("state") or {})
        ended = (container_status.get("lastState") or {}).get("terminated")
        # A container waiting to restart has no new instance: its "current" log is the
        # previous instance's, and reading both would count every line twice.
        if not (waiting and ended):
            targets.append((name, False))
        if container_status.get("restartCount") or ended:
            targets.append((name, True))
    return targets


def _since_seconds(ctx: CollectionContext) -> int:
    """`sinceSeconds` is relative to the server's now: from the window's start until now."""
    return max(1, math.ceil((datetime.now(UTC) - ctx.window.start).total_seconds()))


def _container_log(
    kube: KubeReader, pod: dict, container: str, previous: bool, since: int
) -> EvidenceDraft:
    namespace = pod["metadata"].get("namespace") or "default"
    name = pod["metadata"]["name"]
    no_log = None
    text = ""
    try:
        text = kube.log(
            namespace,
            name,
            container,
            previous=previous,
            timestamps=True,
            tail_lines=TAIL_LINES,
            since_seconds=since,
            limit_bytes=LIMIT_BYTES,
        )
    except CollectorError as exc:
        if not _is_bad_request(exc):
            raise
        no_log = f"no log: {_api_message(exc)}"
    lines = parse_timestamped(text)
    signatures, dropped = summarise(lines, limit=MAX_SIGNATURES)
    data = {
        "source": "kubernetes",
        "namespace": namespace,
        "pod": name,
        "container": container,
        "previous": previous,
        "lines_read": len(lines),
        "signatures": signatures,
        "signatures_dropped": dropped,
        "truncated": len(lines) >= TAIL_LINES or len(text.encode()) >= LIMIT_BYTES,
        "no_log": no_log,
    }
    return EvidenceDraft(
        kind="log_signatures",
        title=_title(data),
        entity=Entity("Pod", namespace, name),
        data=data,
    )


def _is_bad_request(exc: CollectorError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, ApiException) and cause.status == 400


def _api_message(exc: CollectorError) -> str:
    """The API server's own words (the Status message), without our wording around them."""
    cause = exc.__cause__
    try:
        return json.loads(cause.body).get("message") or exc.reason  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return exc.reason


def _title(data: dict[str, Any]) -> str:
    instance = " (previous instance)" if data["previous"] else ""
    head = f"Logs of {data['namespace']}/{data['pod']} {data['container']}{instance}"
    if data["source"] == "loki":
        head = f"Loki: {head}"
    if data["no_log"]:
        return f"{head}: {data['no_log']}"[:300]
    signatures = data["signatures"]
    if not signatures:
        return f"{head}: {data['lines_read']} lines, no warnings or errors"
    top = signatures[0]
    return (
        f"{head}: {len(signatures) + data['signatures_dropped']} problem signature(s); "
        f"top {top['level']}: {top['signature']} ×{top['count']}"
    )[:300]


# --- Loki --------------------------------------------------------------------------------------


def _loki_logs(ctx: CollectionContext) -> list[EvidenceDraft]:
    by_namespace: dict[str, list[str]] = defaultdict(list)
    for entity in ctx.scope.pods[:LOKI_MAX_PODS]:
        by_namespace[entity.namespace or "default"].append(entity.name)
    drafts = []
    for namespace, pods in by_namespace.items():
        if ctx.out_of_time():
            if drafts:
                break  # what was read is kept; the runner notes the time limit
            raise CollectorError(f"Loki: {OUT_OF_TIME}", retryable=True)
        query = loki_query(namespace, pods)
        result = _query_range(ctx, query)
        drafts.extend(_loki_drafts(namespace, result, query))
    return drafts


def loki_query(namespace: str, pods: list[str]) -> str:
    """`{namespace="x", pod=~"a|b"} |~ "<error words>"` (raw strings: no escaping to get wrong)."""
    alternation = "|".join(pod.replace(".", "\\.") for pod in pods)
    return f"{{namespace=`{namespace}`, pod=~`{alternation}`}} |~ `{LOKI_FILTER}`"


def _query_range(ctx: CollectionContext, query: str) -> list[dict]:
    url = ctx.cluster.loki_url.rstrip("/") + "/loki/api/v1/query_range"
    params = {
        "query": query,
        "start": str(int(ctx.window.start.timestamp() * 1e9)),
        "end": str(int(ctx.window.end.timestamp() * 1e9)),
        "limit": str(LOKI_LIMIT),
        "direction": "backward",
    }
    try:
        response = requests.get(url, params=params, timeout=ctx.timeout)
    except requests.RequestException as exc:
        raise http_error(exc, "Loki", ctx.timeout) from exc
    if response.status_code != 200:
        raise CollectorError(
            f"Loki answered {response.status_code} to query_range: {response.text.strip()[:200]}",
            retryable=response.status_code >= 500 or response.status_code == 429,
        )
    try:
        body = response.json()
        return list(body["data"]["result"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CollectorError(
            f"Loki sent an answer that is not a query_range result: {exc}"
        ) from exc


def _loki_drafts(namespace: str, streams: list[dict], query: str) -> list[EvidenceDraft]:
    entries: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for stream in streams:
        labels = stream.get("stream") or {}
        key = (labels.get("pod", "?"), labels.get("container", ""))
        for value in stream.get("values") or []:
            if len(value) >= 2 and str(value[0]).isdigit():
                entries[key].append((int(value[0]), str(value[1])))
    total = sum(len(v) for v in entries.values())
    drafts = []
    for (pod, container), values in sorted(entries.items()):
        values.sort(key=lambda v: v[0])  # Loki answered newest first; tracebacks read forwards
        lines = [LogLine(datetime.fromtimestamp(ns / 1e9, UTC), text) for ns, text in values]
        signatures, dropped = summarise(lines, limit=MAX_SIGNATURES)
        data = {
            "source": "loki",
            "namespace": namespace,
            "pod": pod,
            "container": container,
            "previous": False,
            "lines_read": len(lines),
            "signatures": signatures,
            "signatures_dropped": dropped,
            "truncated": total >= LOKI_LIMIT,
            "no_log": None,
            "query": query,
        }
        drafts.append(
            EvidenceDraft(
                kind="log_signatures",
                title=_title(data),
                entity=Entity("Pod", namespace, pod),
                data=data,
            )
        )
    return drafts

"""dependency-failure: the alerting workload is fine; a component it calls is down or unreachable.

The caller's logs blame the far side at the connection level (connection refused, timeouts,
unknown host) and name it (`cache-redis.search.svc:6379`, `postgres://db:5432`, a bare Service
name). The root cause is that dependency, so the entity is its Deployment/StatefulSet when the
cluster runs it, else the Service the caller reaches it through (an ExternalName Service for a
dependency outside the cluster). Its own state raises the confidence: pods Pending
(FailedScheduling), evicted, crash-looping or not ready, its Deployment unavailable, its own
alerts, and that trouble starting no later than the caller's errors. Errors without a named
target, 429s (upstream-rate-limit), a missing configuration key that merely mentions a database
(crash-loop) and old noise (first seen long before the symptom) do not make a strong candidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from collectors.base import Entity

from ..base import Candidate, EvidenceItem, Facts, Proposal
from . import common as c

CATEGORY = "dependency-failure"
_SVC = re.compile(
    r"\b([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.svc(?:\.cluster\.local)?\b"
)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^@/\s]+@)?([A-Za-z0-9.-]+)(?::\d+)?", re.IGNORECASE)
_HOST_PORT = re.compile(
    r"(?:connect(?:ing)? to|connection to|dial tcp|host|server|address|at)\s+[\"'(]?([A-Za-z][A-Za-z0-9.-]*):(\d{2,5})\b",
    re.IGNORECASE,
)
KINDS = (
    "redis",
    "postgres",
    "mysql",
    "mongo",
    "qdrant",
    "milvus",
    "weaviate",
    "elastic",
    "opensearch",
    "kafka",
    "rabbitmq",
    "nats",
    "minio",
    "memcached",
    "vector",
)
LOCAL = {"localhost"}  # IP addresses are skipped anyway: they name no component
GRACE = timedelta(minutes=2)


@dataclass
class Blame:
    """Connection failures of one caller towards one dependency."""

    caller: Entity
    target: Entity
    host: str
    sigs: list[c.Signature] = field(default_factory=list)

    @property
    def first(self) -> datetime | None:
        return c.earliest(s.first for s in self.sigs)


@dataclass
class State:
    """What the evidence says about the dependency itself."""

    problems: list[str] = field(default_factory=list)
    since: datetime | None = None
    evidence_ids: list[int] = field(default_factory=list)
    scheduling: str = ""
    evicted: str = ""
    own_failure: str = ""  # a failure family of its own (crash loop, OOM kill, image pull)


def evaluate(facts: Facts) -> list[Candidate]:
    return [_candidate(facts, blame) for blame in _blames(facts).values()]


def _blames(facts: Facts) -> dict[tuple[Entity, Entity], Blame]:
    found: dict[tuple[Entity, Entity], Blame] = {}
    for sig in c.signatures(facts.of_kind("log_signatures")):
        if sig.category == "http-429" or not c.CONNECTION_FAILURE.search(sig.full_text):
            continue
        namespace = sig.row.data.get("namespace")
        caller = c.workload_of_pod(facts, namespace, sig.pod)
        if caller is None:
            continue
        for host, target in _targets(facts, sig.full_text, namespace):
            if target == caller or target.name == caller.name:
                continue
            found.setdefault((caller, target), Blame(caller, target, host)).sigs.append(sig)
    return found


def _targets(facts: Facts, text: str, namespace: str | None) -> list[tuple[str, Entity]]:
    """The components a log line names as the far side, resolved to cluster objects."""
    hosts: list[tuple[str, str | None]] = [(m.group(0), None) for m in _SVC.finditer(text)]
    hosts += [(m.group(1), None) for m in _URL.finditer(text)]
    hosts += [(m.group(1), None) for m in _HOST_PORT.finditer(text)]
    resolved = [
        (host, _resolve(facts, host, namespace)) for host, _ in hosts if host.lower() not in LOCAL
    ]
    found = [(h, e) for h, e in resolved if e is not None]
    if not found:
        found = [
            (k, e)
            for k in KINDS
            if re.search(rf"\b{k}", text, re.I)
            for e in _workloads_named(facts, k, namespace)
        ]
    return list(dict.fromkeys(found))


def _resolve(facts: Facts, host: str, namespace: str | None) -> Entity | None:
    """`name.ns.svc…`, `name.ns` or a bare `name` as the workload that serves it, else its Service."""
    if re.fullmatch(r"[\d.]+", host):
        return None  # an IP says nothing about which component
    labels = host.lower().split(".")
    namespaces = {w.namespace for w in c.known_workloads(facts)} | set(facts.scope.namespaces)
    if len(labels) >= 3 and labels[2] == "svc":
        name, ns = labels[0], labels[1]
    elif len(labels) == 2 and labels[1] in namespaces:
        name, ns = labels
    elif len(labels) == 1:
        name, ns = labels[0], namespace
    else:
        return _known_service(facts, labels[0])  # an outside host: only a Service we know of
    workload = next(
        (w for w in c.known_workloads(facts) if w.namespace == ns and w.name == name), None
    )
    return workload or Entity("Service", ns, name)


def _known_service(facts: Facts, name: str) -> Entity | None:
    return next((s for s in facts.scope.services if s.name == name), None)


def _workloads_named(facts: Facts, kind: str, namespace: str | None) -> list[Entity]:
    return [w for w in c.known_workloads(facts) if w.namespace == namespace and kind in w.name]


def _state(facts: Facts, target: Entity) -> State:
    state = State()
    for row in c.pods_by_workload(facts).get(target, []):
        _pod_state(state, row)
    history = c.rollout_history_row(facts, target)
    if history:
        for cond in history.data.get("conditions") or []:
            if cond.get("type") == "Available" and cond.get("status") == "False":
                state.problems.append(f"{target} is unavailable ({cond.get('reason')})")
                state.since = c.earliest(
                    [state.since, c.parse_time(cond.get("lastTransitionTime"))]
                )
                state.evidence_ids.append(history.id)
    for row in facts.of_kind("k8s_events"):
        for event in row.data.get("events") or []:
            if event.get("type") != "Warning":
                continue
            if (row.entity == target) or (
                event.get("name") and c.pod_belongs(event["name"], target.name)
            ):
                state.problems.append(f"{event.get('reason')}: {event.get('message', '')[:160]}")
                state.since = c.earliest([state.since, c.parse_time(event.get("first"))])
                state.evidence_ids.append(row.id)
                if event.get("reason") == "FailedScheduling":
                    state.scheduling = event.get("message", "")
    own_alerts = [a for a in facts.alerts if c.alert_concerns(a, target)]
    if own_alerts:
        state.problems.append(
            f"its own alerts fire ({', '.join(a.labels.get('alertname', '?') for a in own_alerts)})"
        )
        state.since = c.earliest([state.since, *(a.starts_at for a in own_alerts)])
    state.problems = list(dict.fromkeys(state.problems))
    return state


# Failure families a dependency can have in its own right: their rules name the cause more
# precisely than "the dependency is down", so dependency-failure yields to them.
OWN_FAMILY_WAITING = {
    "CrashLoopBackOff": "crash-loop",
    "ErrImagePull": "image-pull-failure",
    "ImagePullBackOff": "image-pull-failure",
}


def _own_failure(row: EvidenceItem) -> str:
    for container in c.containers(row):
        if c.last_terminated(container).get("reason") == "OOMKilled":
            return "oom-killed"
        family = OWN_FAMILY_WAITING.get(c.waiting_reason(container))
        if family:
            return family
    return ""


def _pod_state(state: State, row: EvidenceItem) -> None:
    data = row.data
    name = data.get("pod")
    state.own_failure = state.own_failure or _own_failure(row)
    if data.get("reason") == "Evicted" or data.get("phase") == "Failed":
        state.problems.append(
            f"pod {name} {data.get('reason') or 'failed'}: {(data.get('message') or '').strip()[:160]}"
        )
        state.evicted = data.get("message") or ""
        ended = [c.parse_time(c.last_terminated(k).get("finishedAt")) for k in c.containers(row)]
        state.since = c.earliest([state.since, *ended])
        state.evidence_ids.append(row.id)
    elif data.get("phase") == "Pending":
        unscheduled = next(
            (k for k in data.get("conditions") or [] if k.get("reason") == "Unschedulable"), None
        )
        state.problems.append(
            f"pod {name} Pending" + (f" ({unscheduled.get('message')})" if unscheduled else "")
        )
        state.since = c.earliest([state.since, c.parse_time(data.get("createdAt"))])
        state.evidence_ids.append(row.id)
    elif any(c.waiting_reason(k) or not k.get("ready") for k in c.containers(row)):
        state.problems.append(f"pod {name} not ready")
        state.evidence_ids.append(row.id)


def _candidate(facts: Facts, blame: Blame) -> Candidate:
    state = _state(facts, blame.target)
    first = blame.first
    onset = c.symptom_start(facts, blame.caller)
    score = 0.55
    if state.problems:
        score += 0.25
        if state.since and first and state.since <= first + GRACE:
            score += 0.1
    if first and first < onset - c.OLD_NOISE:
        score -= 0.3  # the caller has complained for long before the symptom: old noise
    if blame.target.kind == "Service" and not state.problems:
        score -= 0.05  # nothing in the cluster confirms the far side is down
    if state.own_failure:
        # The callers' errors are real, but the dependency's own failure is the more specific
        # root cause, and its own rule says what to do about it.
        score = min(score, 0.6)
    evidence = [*(s.row.id for s in blame.sigs), *state.evidence_ids]
    return Candidate(
        category=CATEGORY,
        entity=blame.target,
        confidence=c.clamp(score),
        evidence_ids=evidence,
        explanation=_explain(facts, blame, state),
        proposals=[
            Proposal(
                "none",
                None,
                {"steps": _steps(blame, state)},
                f"The fault is in {blame.target}, not in {blame.caller}.",
            )
        ],
    )


def _explain(facts: Facts, blame: Blame, state: State) -> str:
    sig = max(blame.sigs, key=lambda s: s.count)
    text = (
        f"{blame.caller} fails to reach {blame.host} ({sig.text[:160]!r}, {sum(s.count for s in blame.sigs)} times, "
        f"first at {c.ago(facts, blame.first)}), so its errors come from {blame.target}. "
    )
    if state.problems:
        text += f"{blame.target} is itself in trouble since {c.hhmm(state.since)}: {'; '.join(state.problems[:3])}."
    else:
        text += f"The evidence holds nothing about {blame.target}'s own state; check it directly."
    if state.own_failure:
        text += (
            f" Its pods show a {state.own_failure} of their own, which is the more specific cause."
        )
    return text.strip()


def _steps(blame: Blame, state: State) -> str:
    target = blame.target
    if state.scheduling or "Insufficient" in " ".join(state.problems):
        first = (
            f"Get {target} scheduled again: free or add a node with the resources its pod requests (scale the node "
            "group, or move a lower-priority workload), and give it a PriorityClass and requests that match its real "
            "use so it is not the first eviction candidate."
        )
    elif state.evicted:
        first = f"{target}'s pod was evicted ({state.evicted.strip()[:120]}); restore it and size its requests to its real use."
    elif state.problems:
        first = f"Restore {target}: {state.problems[0]}. Read its events and logs (kubectl describe, kubectl logs)."
    else:
        first = (
            f"Check {target} and what it points to (kubectl get endpoints; for an ExternalName Service, the outside "
            "host's status and the network path to it)."
        )
    return f"{first} Then confirm that {blame.caller} stops failing; no action on {blame.caller} itself is needed."

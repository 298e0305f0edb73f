"""upstream-rate-limit: a model provider or gateway answers 429 / quota exceeded to a healthy caller.

The signature is in the caller's own logs: HTTP 429 on its OUTGOING calls (a client log line
with a URL, "from upstream"), a provider's RateLimitError, "rate_limit_exceeded", tokens-per-
minute quota wording. 429s the service itself returns to its clients (an access-log line with
only a path) are its own throttling, not an upstream's. The serving side must look healthy (no
restarts, no crash loop, no new revision): then nothing in the cluster is broken and the fix is
traffic shaping or more quota, an action for people. Retries climbing (a retry metric or alert
stepping up) confirm it. The entity is the caller's Service (TAXONOMY.md).
"""

from __future__ import annotations

import re
from datetime import datetime

from collectors.base import Entity

from ..base import Candidate, Facts, Proposal
from . import common as c

CATEGORY = "upstream-rate-limit"
OUTGOING = re.compile(
    r"from upstream|https?://|HTTP Request:|RateLimitError|rate_limit_exceeded|quota|tokens per min",
    re.I,
)
QUOTA = re.compile(
    r"quota|tokens per min|requests per min|\bTPM\b|\bRPM\b|rate_limit_exceeded|insufficient_quota",
    re.I,
)
PROVIDER_URL = re.compile(r"https?://([A-Za-z0-9.-]+)")
MODEL = re.compile(
    r"(?:for|model[=: ]+['\"]?)\s*((?:gpt|claude|gemini|llama|mistral|o\d)[\w.\-]*)", re.I
)


def evaluate(facts: Facts) -> list[Candidate]:
    grouped: dict[Entity, list[c.Signature]] = {}
    for sig in c.signatures(facts.of_kind("log_signatures")):
        if not (c.RATE_LIMITED.search(sig.full_text) and OUTGOING.search(sig.full_text)):
            continue
        caller = c.workload_of_pod(facts, sig.row.data.get("namespace"), sig.pod)
        if caller is not None:
            grouped.setdefault(caller, []).append(sig)
    return [_candidate(facts, caller, sigs) for caller, sigs in grouped.items()]


def _service_of(facts: Facts, caller: Entity) -> Entity:
    """The caller's Service: one in scope of the same name, else the one its alerts name."""
    for service in facts.scope.services:
        if service.namespace == caller.namespace and service.name == caller.name:
            return service
    for alert in facts.alerts:
        name = alert.labels.get("service")
        if (
            name
            and alert.labels.get("namespace") == caller.namespace
            and c.alert_concerns(alert, caller)
        ):
            return Entity("Service", caller.namespace, name)
    return Entity("Service", caller.namespace, caller.name)


def _unhealthy_pods(facts: Facts, caller: Entity) -> list[str]:
    pods = []
    for row in c.pods_by_workload(facts).get(caller, []):
        if any(
            c.waiting_reason(k) or int(k.get("restartCount") or 0) > 0 for k in c.containers(row)
        ):
            pods.append(row.data.get("pod", ""))
    return pods


def _retries_up(facts: Facts, caller: Entity) -> list[int]:
    return [
        row.id
        for row, _ in c.metric_steps_up(facts, caller)
        if "retr" in f"{row.title} {row.data.get('query')}".lower()
    ]


def _candidate(facts: Facts, caller: Entity, sigs: list[c.Signature]) -> Candidate:
    first = c.earliest(s.first for s in sigs)
    onset = c.symptom_start(facts, caller)
    text = "\n".join(s.full_text for s in sigs)
    unhealthy = _unhealthy_pods(facts, caller)
    retries = _retries_up(facts, caller)
    changed = c.changed_in_window(facts, caller)

    score = 0.6
    if QUOTA.search(text):
        score += 0.1
    if not unhealthy:
        score += 0.1
    else:
        score -= 0.15
    if retries:
        score += 0.05
    if first and first >= onset - c.OLD_NOISE:
        score += 0.05
    else:
        score -= 0.3  # 429s long before the symptom: background noise
    if changed:
        score -= 0.15
    service = _service_of(facts, caller)
    return Candidate(
        category=CATEGORY,
        entity=service,
        confidence=c.clamp(score),
        evidence_ids=[*(s.row.id for s in sigs), *retries],
        explanation=_explain(facts, caller, service, sigs, first, unhealthy, bool(retries)),
        proposals=[
            Proposal(
                "none",
                None,
                {"steps": _steps(service, text)},
                "The provider throttles; nothing in the cluster is broken.",
            )
        ],
    )


def _explain(
    facts: Facts,
    caller: Entity,
    service: Entity,
    sigs: list[c.Signature],
    first: datetime | None,
    unhealthy: list[str],
    retries: bool,
) -> str:
    count = sum(s.count for s in sigs)
    top = max(sigs, key=lambda s: s.count)
    text = (
        f"{service} ({caller}) is being rate-limited by its upstream: {count} 429/quota errors in its logs "
        f"(e.g. {top.text[:150]!r}), first at {c.ago(facts, first)}. "
    )
    if retries:
        text += "Its client retries climb with them. "
    text += (
        f"Its own pods are not healthy ({', '.join(unhealthy)}), which weakens this reading."
        if unhealthy
        else "Its pods are healthy (no restarts), so the serving side is not the fault."
    )
    return text


def _steps(service: Entity, text: str) -> str:
    host = next(
        (h for h in PROVIDER_URL.findall(text) if "svc" not in h and "platform" not in h), None
    )
    model = MODEL.search(text)
    what = f" for {model.group(1)}" if model else ""
    via = f" (called through {host})" if host else ""
    return (
        f"Confirm the 429s{what} are quota or rate-limit answers from the provider{via}; ask the provider account "
        "owner to raise the limit or move competing consumers to their own project or key; meanwhile cap "
        f"{service}'s concurrency and token budget at the gateway and keep its retries bounded with backoff."
    )

"""oom-killed: the kernel kills a container at its memory limit (OOMKilled, exit 137), again and again.

The kernel's verdict in `lastState.terminated.reason: OOMKilled` is specific; memory working set
near the limit and several kills (restarts on more than one pod) make it certain. Its logs are
usually clean: a killed process prints no traceback, so an absence of errors is no counter
evidence. Exit 137 with reason Error (an eviction, a SIGKILL after a failed probe) is not an OOM
kill. When the kills started right after a new revision of the workload, the revision is the
cause (bad-deploy) and raising the limit only hides it, so the confidence stays low here.

The remediation raises the limit by half, rounded up to whole Gi, and the request in proportion:
computed from the container's current resources, never from a fixed size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from collectors.base import Entity

from ..base import Candidate, EvidenceItem, Facts, Proposal
from . import common as c

CATEGORY = "oom-killed"
GROWTH = 1.5
RECENT = timedelta(hours=2)
NEAR_LIMIT = 0.9


@dataclass
class Kills:
    """OOM kills of one container of a workload."""

    container: str
    pods: list[str] = field(default_factory=list)
    restarts: int = 0
    last_at: datetime | None = None
    first_at: datetime | None = None
    limits: dict[str, str] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)
    evidence_ids: list[int] = field(default_factory=list)


def evaluate(facts: Facts) -> list[Candidate]:
    found = []
    for entity, rows in c.pods_by_workload(facts).items():
        for kills in _kills(rows).values():
            found.append(_candidate(facts, entity, kills))
    return found


def _kills(rows: list[EvidenceItem]) -> dict[str, Kills]:
    kills: dict[str, Kills] = {}
    for row in rows:
        for container in c.containers(row):
            ended = c.last_terminated(container)
            if ended.get("reason") != "OOMKilled":
                continue
            name = container.get("name", "")
            entry = kills.setdefault(name, Kills(container=name))
            entry.pods.append(row.data.get("pod", ""))
            entry.restarts += int(container.get("restartCount") or 0)
            finished = c.parse_time(ended.get("finishedAt"))
            entry.last_at = max(filter(None, [entry.last_at, finished]), default=None)
            entry.first_at = c.earliest(
                [entry.first_at, c.parse_time(ended.get("startedAt")), finished]
            )
            resources = container.get("resources") or {}
            entry.limits = entry.limits or dict(resources.get("limits") or {})
            entry.requests = entry.requests or dict(resources.get("requests") or {})
            entry.evidence_ids.append(row.id)
    return kills


def _memory_near_limit(facts: Facts, entity: Entity) -> list[int]:
    """Metric rows showing the workload's memory at (or near) its limit."""
    ids = []
    for row in facts.of_kind("metric"):
        if row.entity != entity or "memory" not in f"{row.title} {row.data.get('profile')}".lower():
            continue
        for series in row.data.get("series") or []:
            summary = series.get("summary") or {}
            if (
                "limit" in (row.data.get("profile") or row.title)
                and (summary.get("max") or 0) >= NEAR_LIMIT
            ):
                ids.append(row.id)
                break
    return ids


def _candidate(facts: Facts, entity: Entity, kills: Kills) -> Candidate:
    near_limit = _memory_near_limit(facts, entity)
    rollout = c.rollout_of(facts, entity)
    new_revision = bool(
        rollout
        and rollout.at
        and (
            any(p.startswith(f"{rollout.replicaset}-") for p in kills.pods if rollout.replicaset)
            or (kills.first_at and kills.first_at >= rollout.at)
        )
    )
    score = 0.65
    if kills.last_at and facts.opened_at - kills.last_at <= RECENT:
        score += 0.1
    if near_limit:
        score += 0.1
    if len(set(kills.pods)) > 1 or kills.restarts >= 3:
        score += 0.07
    if new_revision:
        score = min(score, 0.45)  # the kills came with a new revision: bad-deploy explains them
    evidence = [
        *kills.evidence_ids,
        *near_limit,
        *([rollout.evidence_id] if new_revision and rollout else []),
    ]
    return Candidate(
        category=CATEGORY,
        entity=entity,
        confidence=c.clamp(score),
        evidence_ids=evidence,
        explanation=_explain(
            facts, entity, kills, bool(near_limit), rollout if new_revision else None
        ),
        proposals=_proposals(entity, kills),
    )


def _explain(
    facts: Facts, entity: Entity, kills: Kills, near_limit: bool, rollout: c.Rollout | None
) -> str:
    pods = ", ".join(dict.fromkeys(kills.pods))
    limit = kills.limits.get("memory")
    text = (
        f"The {kills.container} container of {entity} was OOM-killed by the kernel (exit 137) on {pods}, "
        f"{kills.restarts} restarts in all, the last kill at {c.ago(facts, kills.last_at)}"
        f"{f', against a memory limit of {limit}' if limit else ''}. "
    )
    if near_limit:
        text += "Its memory working set reached the limit before the kills. "
    if rollout:
        text += (
            f"The kills follow revision {rollout.revision} rolled out at {c.hhmm(rollout.at)}, so the new revision is "
            "the more likely cause."
        )
    else:
        text += "No new revision explains it: the workload needs more memory than its limit allows."
    return text.strip()


def _proposals(entity: Entity, kills: Kills) -> list[Proposal]:
    limit = c.parse_bytes(kills.limits.get("memory"))
    if not limit:
        return [
            Proposal(
                "none",
                None,
                {
                    "steps": f"Container {kills.container} of {entity} has no memory limit and is still OOM-killed: "
                    "check the node's memory pressure and set a request and limit above its peak use."
                },
                "No limit to raise.",
            )
        ]
    new_limit = c.format_memory(limit * GROWTH)
    request = c.parse_bytes(kills.requests.get("memory"))
    new_request = (
        c.format_memory(min(request * GROWTH, c.parse_bytes(new_limit) or 0))
        if request
        else new_limit
    )
    return [
        Proposal(
            "patch-resources",
            entity,
            {
                "container": kills.container,
                "requests": {"memory": new_request},
                "limits": {"memory": new_limit},
            },
            f"Raise the memory limit of {kills.container} from {kills.limits.get('memory')} to {new_limit} "
            f"(request {kills.requests.get('memory', 'unset')} to {new_request}) so the kernel stops killing it.",
        )
    ]

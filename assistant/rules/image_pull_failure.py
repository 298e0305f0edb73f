"""image-pull-failure: pods of the workload wait on an image the kubelet cannot pull.

ErrImagePull / ImagePullBackOff (in a container's waiting state or in Failed/BackOff events)
is as specific as Kubernetes evidence gets, so the signature alone is strong. What decides the
remediation is whether a new revision brought the unpullable image: then rolling back to the
previous revision restores capacity at once (the old pods still serve), and the registry
credentials or image name can be fixed before rolling forward. Without a new revision (a
registry outage, a deleted tag, a rotated pull secret) there is nothing to roll back to, and
the steps say what to check. Pending pods that wait on an image are not a scheduling problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from collectors.base import Entity

from ..base import Candidate, EvidenceItem, Facts, Proposal
from . import common as c

CATEGORY = "image-pull-failure"
PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
PULL_EVENT = re.compile(
    r"ErrImagePull|ImagePullBackOff|Failed to pull image|Back-off pulling image|InvalidImageName"
)
CAUSES = (
    (
        re.compile(r"authoriz|unauthori[sz]ed|pull access denied|denied|forbidden|401|403", re.I),
        "access denied",
    ),
    (re.compile(r"not found|manifest unknown|does not exist|404", re.I), "image or tag not found"),
    (
        re.compile(r"timeout|i/o timeout|connection refused|no such host|TLS", re.I),
        "registry unreachable",
    ),
    (re.compile(r"toomanyrequests|rate limit", re.I), "registry rate limit"),
)


@dataclass
class PullTrouble:
    pods: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    first: datetime | None = None
    evidence_ids: list[int] = field(default_factory=list)
    from_events: bool = False


def evaluate(facts: Facts) -> list[Candidate]:
    troubles = _troubles(facts)
    return [
        _candidate(facts, entity, trouble) for entity, trouble in troubles.items() if trouble.pods
    ]


def _troubles(facts: Facts) -> dict[Entity, PullTrouble]:
    found: dict[Entity, PullTrouble] = {}
    for entity, rows in c.pods_by_workload(facts).items():
        for row in rows:
            _add_pod(found.setdefault(entity, PullTrouble()), row)
    for row in facts.of_kind("k8s_events"):
        for event in row.data.get("events") or []:
            if not PULL_EVENT.search(f"{event.get('reason', '')} {event.get('message', '')}"):
                continue
            entity = c.workload_of_pod(facts, event.get("namespace"), event.get("name", ""))
            if entity is None and row.entity is not None and row.entity.kind in c.WORKLOAD_KINDS:
                entity = row.entity
            if entity is None:
                continue
            trouble = found.setdefault(entity, PullTrouble())
            trouble.from_events = True
            trouble.evidence_ids.append(row.id)
            trouble.messages.append(event.get("message", ""))
            if event.get("name") and event.get("name") not in trouble.pods:
                trouble.pods.append(event["name"])
            trouble.first = c.earliest([trouble.first, c.parse_time(event.get("first"))])
    return found


def _add_pod(trouble: PullTrouble, row: EvidenceItem) -> None:
    for container in c.containers(row):
        if c.waiting_reason(container) not in PULL_REASONS:
            continue
        trouble.pods.append(row.data.get("pod", ""))
        trouble.images.append(container.get("image", ""))
        trouble.messages.append(
            ((container.get("state") or {}).get("waiting") or {}).get("message") or ""
        )
        trouble.evidence_ids.append(row.id)
        trouble.first = c.earliest([trouble.first, c.parse_time(row.data.get("createdAt"))])


def _cause(messages: list[str]) -> str | None:
    text = "\n".join(messages)
    return next((name for pattern, name in CAUSES if pattern.search(text)), None)


def _candidate(facts: Facts, entity: Entity, trouble: PullTrouble) -> Candidate:
    rollout = c.rollout_of(facts, entity)
    brought_by_rollout = bool(
        rollout
        and rollout.at
        and (trouble.first is None or trouble.first >= rollout.at - timedelta(minutes=2))
        and (not trouble.images or any(_same_image(i, rollout.images) for i in trouble.images))
    )
    confidence = 0.7
    if trouble.images and trouble.from_events:
        confidence += 0.1  # the pod state and the kubelet's events agree
    if brought_by_rollout:
        confidence += 0.15
    evidence = [*trouble.evidence_ids, *([rollout.evidence_id] if rollout else [])]
    evidence += [row.id for row, _ in c.ci_changes(facts, entity)]
    return Candidate(
        category=CATEGORY,
        entity=entity,
        confidence=c.clamp(confidence),
        evidence_ids=evidence,
        explanation=_explain(facts, entity, trouble, rollout if brought_by_rollout else None),
        proposals=_proposals(entity, trouble, rollout if brought_by_rollout else None),
    )


def _same_image(image: str, images: list[str]) -> bool:
    """`acmeml/x:1` and `docker.io/acmeml/x:1` are one image."""
    bare = image.removeprefix("docker.io/").removeprefix("library/")
    return any(
        bare == i.removeprefix("docker.io/").removeprefix("library/") or image.endswith(i)
        for i in images
    )


def _explain(facts: Facts, entity: Entity, trouble: PullTrouble, rollout: c.Rollout | None) -> str:
    pods = ", ".join(dict.fromkeys(trouble.pods))
    images = ", ".join(dict.fromkeys(i for i in trouble.images if i)) or "its image"
    cause = _cause(trouble.messages)
    text = (
        f"Pods of {entity} ({pods}) cannot pull {images} (ErrImagePull / ImagePullBackOff"
        f"{'; ' + cause if cause else ''}) since {c.ago(facts, trouble.first)}. "
    )
    if rollout:
        text += (
            f"The image came with revision {rollout.revision}, rolled out at {c.hhmm(rollout.at)}; revision "
            f"{rollout.previous_revision} ({', '.join(rollout.previous_images)}) still runs on the old pods."
        )
    else:
        text += "No new revision of the workload brought this image, so there is nothing to roll back to."
    return text


def _proposals(entity: Entity, trouble: PullTrouble, rollout: c.Rollout | None) -> list[Proposal]:
    cause = _cause(trouble.messages)
    fix = _fix(entity, cause)
    if rollout and rollout.previous_revision is not None:
        return [
            Proposal(
                "rollout-undo",
                entity,
                {
                    "to_revision": rollout.previous_revision,
                    "image": ", ".join(rollout.previous_images),
                },
                f"Revision {rollout.revision} cannot start anywhere; revision {rollout.previous_revision} restores "
                "capacity now.",
            ),
            Proposal(
                "none",
                None,
                {"steps": fix + " Then roll forward again."},
                "Fix the pull before rolling forward.",
            ),
        ]
    return [
        Proposal("none", None, {"steps": fix}, "No earlier revision brought the failing image.")
    ]


def _fix(entity: Entity, cause: str | None) -> str:
    if cause == "access denied":
        return (
            f"Give {entity} credentials for the registry: add an imagePullSecret to its pod template "
            "(or the service account) that can read the image's repository."
        )
    if cause == "image or tag not found":
        return f"Check that the image and tag {entity} references exist in the registry; publish it or fix the tag."
    if cause == "registry unreachable":
        return f"Check that the nodes running {entity} can reach the registry (DNS, egress, TLS, registry status)."
    return (
        f"Run kubectl describe pod on a failing pod of {entity} and fix what the pull error names."
    )

"""bad-deploy: a new revision of the workload, shortly before the symptom, is what fails.

The signature is a change and a contrast: a rollout (a new ReplicaSet in the window, often also
reported by CI) of the affected Deployment, the symptom starting minutes after it, the new
ReplicaSet's pods erroring while the old ones served cleanly. Each part is weighed separately so
the distractors stay weak: a deploy long before the symptom (the new pods served cleanly for half
an hour), a symptom that began before the rollout, errors that blame another component (refused
connections to a cache), an image that never pulled (image-pull-failure is the more specific
family). Deploys of other workloads never make a candidate here: the collector already keeps
other namespaces out, and another workload's change is a dependency question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from collectors.base import Entity

from ..base import Candidate, EvidenceItem, Facts, Proposal
from . import common as c

CATEGORY = "bad-deploy"
PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
GRACE = timedelta(minutes=2)  # clocks of alerts, logs and the API differ by a scrape or two


@dataclass
class Change:
    """The workload's latest change in the window and the revision to go back to."""

    entity: Entity
    at: datetime
    revision: int | None
    previous_revision: int | None
    images: list[str]
    previous_images: list[str]
    replicaset: str
    evidence_ids: list[int] = field(default_factory=list)
    reported_by_ci: bool = False


@dataclass
class NewPodTrouble:
    """How the new ReplicaSet's pods behave, and how the old ones compare."""

    errors: list[c.Signature] = field(default_factory=list)
    crashing: list[str] = field(default_factory=list)
    pull_failing: list[str] = field(default_factory=list)
    metric_contrast: bool = False
    old_clean: bool = False
    evidence_ids: list[int] = field(default_factory=list)


def evaluate(facts: Facts) -> list[Candidate]:
    return [cand for change in _changes(facts) if (cand := _candidate(facts, change))]


def _changes(facts: Facts) -> list[Change]:
    changes: dict[Entity, Change] = {}
    for rollout in c.rollouts(facts):
        if rollout.at is None:
            continue
        changes[rollout.entity] = Change(
            entity=rollout.entity,
            at=rollout.at,
            revision=rollout.revision,
            previous_revision=rollout.previous_revision,
            images=rollout.images,
            previous_images=rollout.previous_images,
            replicaset=rollout.replicaset,
            evidence_ids=[rollout.evidence_id],
        )
    for entity in c.known_workloads(facts):
        for row, ci in c.ci_changes(facts, entity):
            if not ci.get("workload_in_scope", True):
                continue
            at = c.parse_time(ci.get("at"))
            if entity in changes:
                changes[entity].reported_by_ci = True
                changes[entity].evidence_ids.append(row.id)
            elif at is not None:
                changes[entity] = _ci_only_change(facts, entity, at, row)
    return list(changes.values())


def _ci_only_change(facts: Facts, entity: Entity, at: datetime, row: EvidenceItem) -> Change:
    """A reported deploy with no new ReplicaSet in the window: go back to the previous one."""
    history = c.rollout_history_row(facts, entity)
    sets = sorted(
        (history.data.get("replicaSets") or []) if history else [],
        key=lambda rs: -(rs.get("revision") or 0),
    )
    current = next((rs for rs in sets if rs.get("current")), sets[0] if sets else {})
    older = next(
        (rs for rs in sets if (rs.get("revision") or 0) < (current.get("revision") or 0)), {}
    )
    return Change(
        entity=entity,
        at=at,
        revision=current.get("revision"),
        previous_revision=older.get("revision"),
        images=list(current.get("images") or []),
        previous_images=list(older.get("images") or []),
        replicaset=current.get("name") or "",
        evidence_ids=[row.id] + ([history.id] if history else []),
        reported_by_ci=True,
    )


def _candidate(facts: Facts, change: Change) -> Candidate | None:
    trouble = _new_pod_trouble(facts, change)
    onset = _onset(facts, change, trouble)
    if onset is None:
        return None
    gap = onset - change.at
    confidence = _confidence(change, trouble, gap)
    return Candidate(
        category=CATEGORY,
        entity=change.entity,
        confidence=confidence,
        evidence_ids=[*change.evidence_ids, *trouble.evidence_ids],
        explanation=_explain(facts, change, trouble, onset, gap),
        proposals=_proposals(change),
    )


def _onset(facts: Facts, change: Change, trouble: NewPodTrouble) -> datetime | None:
    """The symptom's start: the workload's alerts, its metrics stepping up, its new errors."""
    steps = [at for _, at in c.metric_steps_up(facts, change.entity) if at >= change.at - GRACE]
    moments = [c.symptom_start(facts, change.entity), *steps, *(s.first for s in trouble.errors)]
    own_alerts = any(c.alert_concerns(a, change.entity) for a in facts.alerts)
    if not own_alerts and not steps and not trouble.errors and not trouble.crashing:
        return None  # nothing says this workload is the one in trouble
    return c.earliest(moments)


def _new_pod_trouble(facts: Facts, change: Change) -> NewPodTrouble:
    trouble = NewPodTrouble()
    new_prefix = f"{change.replicaset}-" if change.replicaset else None
    pods = c.pods_by_workload(facts).get(change.entity, [])
    old_rows = []
    for row in pods:
        name = row.data.get("pod", "")
        if new_prefix and not name.startswith(new_prefix):
            old_rows.append(row)
            continue
        for container in c.containers(row):
            if c.waiting_reason(container) in PULL_FAILURES:
                trouble.pull_failing.append(name)
            elif c.waiting_reason(container) == "CrashLoopBackOff" or (
                container.get("restartCount", 0) > 0 and c.last_terminated(container)
            ):
                trouble.crashing.append(name)
        if name in trouble.pull_failing or name in trouble.crashing:
            trouble.evidence_ids.append(row.id)
    for sig in c.signatures(c.logs_of(facts, change.entity)):
        is_new = not new_prefix or sig.pod.startswith(new_prefix)
        if (
            is_new
            and sig.level in ("error", "fatal")
            and (sig.first is None or sig.first >= change.at - GRACE)
        ):
            trouble.errors.append(sig)
            trouble.evidence_ids.append(sig.row.id)
    trouble.metric_contrast = _metric_contrast(
        facts, change, trouble, _first_trouble(facts, change, trouble)
    )
    trouble.old_clean = trouble.metric_contrast or _old_pods_clean(facts, change, old_rows)
    return trouble


def _first_trouble(facts: Facts, change: Change, trouble: NewPodTrouble) -> datetime:
    return (
        c.earliest([c.symptom_start(facts, change.entity), *(s.first for s in trouble.errors)])
        or facts.opened_at
    )


def _metric_contrast(facts: Facts, change: Change, trouble: NewPodTrouble, since: datetime) -> bool:
    """Per-pod error series: the new ReplicaSet's pods clearly worse than the old ones AT THE SAME TIME.

    Old pods that stopped serving long before the symptom (the rollout finished, then all went
    quiet for half an hour) are no contrast: they never saw the traffic that fails now.
    """
    if not change.replicaset:
        return False
    for row in facts.of_kind("metric"):
        if row.entity != change.entity or not _is_error_metric(row):
            continue
        new, old = [], []
        for series in row.data.get("series") or []:
            pod = (series.get("labels") or {}).get("pod", "")
            summary = series.get("summary") or {}
            recent = summary.get("recent")
            if recent is None or not pod:
                continue
            is_new = pod.startswith(f"{change.replicaset}-")
            last_at = c.parse_time(summary.get("last_at"))
            if not is_new and (last_at is None or last_at < since - timedelta(minutes=5)):
                continue
            (new if pod.startswith(f"{change.replicaset}-") else old).append(float(recent))
        if new and old and min(new) > 2 * max(old) + 0.01:
            trouble.evidence_ids.append(row.id)
            return True
    return False


def _is_error_metric(row: EvidenceItem) -> bool:
    text = f"{row.title} {row.data.get('profile') or ''}".lower()
    return "error" in text or "5xx" in text


def _old_pods_clean(facts: Facts, change: Change, old_rows: list[EvidenceItem]) -> bool:
    """Old pods still running without restarts and with no new errors in their logs."""
    if not old_rows:
        return False
    for row in old_rows:
        if any(c.waiting_reason(k) or k.get("restartCount", 0) for k in c.containers(row)):
            return False
    old_pods = {r.data.get("pod") for r in old_rows}
    return not any(
        s.pod in old_pods and s.level in ("error", "fatal")
        for s in c.signatures(c.logs_of(facts, change.entity))
    )


def _confidence(change: Change, trouble: NewPodTrouble, gap: timedelta) -> float:
    if gap < -GRACE:
        return c.clamp(0.12)  # the symptom was there before the change
    score = 0.45
    if gap <= c.CHANGE_TIGHT:
        score += 0.2
    elif gap <= c.CHANGE_LOOSE:
        score += 0.05
    else:
        score -= 0.2
    # When any error blames another component, the generic 500s beside it are its echo.
    elsewhere = any(c.points_elsewhere(s) for s in trouble.errors)
    own_failures = [] if elsewhere else trouble.errors
    if own_failures or trouble.crashing or trouble.metric_contrast:
        score += 0.2
    if trouble.old_clean:
        score += 0.1
    if change.reported_by_ci:
        score += 0.05
    if elsewhere:
        score -= 0.3  # the new pods only report failures of something else
    if trouble.pull_failing:
        score = min(score, 0.5)  # the image never ran: image-pull-failure says it better
    return c.clamp(score)


def _explain(
    facts: Facts, change: Change, trouble: NewPodTrouble, onset: datetime, gap: timedelta
) -> str:
    minutes = round(gap.total_seconds() / 60)
    images = ", ".join(change.images) or "a new pod template"
    text = (
        f"{change.entity} rolled out revision {change.revision} ({images}) at {c.ago(facts, change.at)}"
        f"{' (also reported by CI/CD)' if change.reported_by_ci else ''}, replacing revision "
        f"{change.previous_revision}. "
    )
    if gap < -GRACE:
        return (
            text
            + f"The symptom began at {c.hhmm(onset)}, before the rollout, so the change did not cause it."
        )
    text += f"The symptom began at {c.hhmm(onset)}, {minutes} min after the rollout. "
    if trouble.pull_failing:
        text += f"The new pods never started ({', '.join(trouble.pull_failing)} cannot pull the image). "
    if trouble.errors:
        top = max(trouble.errors, key=lambda s: s.count)
        text += f"The new ReplicaSet's pods log errors that were not there before: {top.text!r} (first {c.hhmm(top.first)}). "
    if trouble.crashing:
        text += f"New pods restart: {', '.join(sorted(set(trouble.crashing)))}. "
    if trouble.metric_contrast:
        text += "Per pod, the new ReplicaSet's error rate is far above the old one's. "
    elif trouble.old_clean:
        text += "The old ReplicaSet's pods stayed healthy. "
    if any(c.points_elsewhere(s) for s in trouble.errors):
        text += "Its errors blame another component, which points away from the change. "
    if gap > c.CHANGE_LOOSE:
        text += "The new revision served for a long time before the symptom, which makes it an unlikely cause."
    return text.strip()


def _proposals(change: Change) -> list[Proposal]:
    if change.previous_revision is None:
        return [
            Proposal(
                "none",
                None,
                {
                    "steps": f"Find the last good revision of {change.entity} (kubectl rollout history) and roll back to it."
                },
                "No earlier revision of the workload is known.",
            )
        ]
    params: dict = {"to_revision": change.previous_revision}
    if change.previous_images:
        params["image"] = ", ".join(change.previous_images)
    return [
        Proposal(
            "rollout-undo",
            change.entity,
            params,
            f"Revision {change.revision} of {change.entity} is the change that preceded the symptom; "
            f"revision {change.previous_revision} served cleanly before it.",
        )
    ]

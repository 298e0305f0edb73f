"""gpu-memory-exhaustion: the GPU runs out of memory (CUDA OOM) and the engine dies, no kernel OOM kill.

"CUDA out of memory" / torch.OutOfMemoryError in the log of a workload's pods (the signature
category `cuda-oom`) is specific; crashes of the same containers that were NOT OOM-killed by the
kernel (exit 1, Error) and framebuffer near full (a GPU alert, gpu_health) confirm it. An old,
rare CUDA OOM that was there long before the symptom is noise, not the cause.

Remediation: when a new revision of the workload came right before the first OOM, roll it back;
otherwise more replicas spread the requests that need the memory (double the current count, from
the Deployment's spec), with runbook steps to bound per-request memory as the lasting fix.
"""

from __future__ import annotations

from datetime import timedelta

from collectors.base import Entity

from ..base import Candidate, EvidenceItem, Facts, Proposal
from . import common as c

CATEGORY = "gpu-memory-exhaustion"
FB_NEAR_FULL = 0.9


def evaluate(facts: Facts) -> list[Candidate]:
    found = []
    for entity in c.known_workloads(facts):
        ooms = [s for s in c.signatures(c.logs_of(facts, entity)) if s.category == "cuda-oom"]
        if ooms:
            found.append(_candidate(facts, entity, ooms))
    return found


def _crashed_without_kernel_oom(
    facts: Facts, entity: Entity, pods: set[str]
) -> tuple[list[int], bool]:
    """Pod rows of the workload whose containers restarted, and whether any was OOM-killed."""
    ids, kernel = [], False
    for row in c.pods_by_workload(facts).get(entity, []):
        if row.data.get("pod") not in pods:
            continue
        for container in c.containers(row):
            ended = c.last_terminated(container)
            if ended.get("reason") == "OOMKilled":
                kernel = True
            elif container.get("restartCount") or c.waiting_reason(container) == "CrashLoopBackOff":
                ids.append(row.id)
    return list(dict.fromkeys(ids)), kernel


def _framebuffer_full(facts: Facts, entity: Entity) -> list[int]:
    """GPU evidence of the workload's nodes showing the framebuffer (nearly) full."""
    nodes = {row.data.get("node") for row in c.pods_by_workload(facts).get(entity, [])}
    pods = {row.data.get("pod") for row in c.pods_by_workload(facts).get(entity, [])}
    ids = []
    for row in facts.of_kind("metric"):
        about_fb = "FB_USED" in (row.data.get("query") or "") or any(
            "framebuffer" in a.lower() for a in row.data.get("alerts") or []
        )
        if about_fb and any(_full_series(s, nodes | pods) for s in row.data.get("series") or []):
            ids.append(row.id)
    for row in facts.of_kind("gpu_health"):
        if row.entity and row.entity.name in nodes and _fb_ratio(row) >= FB_NEAR_FULL:
            ids.append(row.id)
    return ids


def _full_series(series: dict, names: set) -> bool:
    """A framebuffer series of one of the workload's pods or nodes that reached FB_NEAR_FULL."""
    labels = series.get("labels") or {}
    mine = bool(names & {labels.get("pod"), labels.get("Hostname"), labels.get("node")})
    return mine and ((series.get("summary") or {}).get("max") or 0) >= FB_NEAR_FULL


def _fb_ratio(row: EvidenceItem) -> float:
    """The fullest GPU's framebuffer use, 0..1 (gpu_health's `fb_used_ratio`)."""
    ratios = [g.get("fb_used_ratio") for g in row.data.get("gpus") or []]
    return max((float(r) for r in ratios if isinstance(r, (int, float))), default=0.0)


def _candidate(facts: Facts, entity: Entity, ooms: list[c.Signature]) -> Candidate:
    pods = {s.pod for s in ooms}
    first = c.earliest(s.first for s in ooms)
    crashed, kernel_oom = _crashed_without_kernel_oom(facts, entity, pods)
    framebuffer = _framebuffer_full(facts, entity)
    onset = c.symptom_start(facts, entity)
    old_noise = bool(first and first < onset - c.OLD_NOISE)
    rollout = c.rollout_of(facts, entity)
    caused_by_change = bool(
        rollout
        and rollout.at
        and first
        and rollout.at <= first
        and first - rollout.at <= timedelta(minutes=60)
    )

    score = 0.7
    if crashed:
        score += 0.1
    if not kernel_oom:
        score += 0.05
    if framebuffer:
        score += 0.05
    if len(pods) > 1:
        score += 0.05
    if old_noise:
        score -= 0.4
    evidence = [
        *(s.row.id for s in ooms),
        *crashed,
        *framebuffer,
        *([rollout.evidence_id] if caused_by_change and rollout else []),
    ]
    return Candidate(
        category=CATEGORY,
        entity=entity,
        confidence=c.clamp(score),
        evidence_ids=evidence,
        explanation=_explain(
            facts,
            entity,
            ooms,
            bool(crashed),
            kernel_oom,
            bool(framebuffer),
            old_noise,
            rollout if caused_by_change else None,
        ),
        proposals=_proposals(facts, entity, ooms, rollout if caused_by_change else None),
    )


def _explain(
    facts: Facts,
    entity: Entity,
    ooms: list[c.Signature],
    crashed: bool,
    kernel_oom: bool,
    framebuffer: bool,
    old_noise: bool,
    rollout: c.Rollout | None,
) -> str:
    pods = ", ".join(sorted({s.pod for s in ooms}))
    first = c.earliest(s.first for s in ooms)
    example = (
        ooms[0].examples[0].strip().splitlines()[-1][:220] if ooms[0].examples else ooms[0].text
    )
    text = f"GPU memory ran out in {entity}: {pods} logged {example!r}, first at {c.ago(facts, first)}. "
    if crashed:
        text += "The engine died with it and the containers restart" + (
            " (exit code 1, not a kernel OOM kill). "
            if not kernel_oom
            else "; some were also OOM-killed by the kernel. "
        )
    if framebuffer:
        text += "The GPU framebuffer was nearly full. "
    if old_noise:
        text += "These errors began long before the symptom, so they are probably old noise. "
    if rollout:
        text += f"It began after revision {rollout.revision} rolled out at {c.hhmm(rollout.at)}."
    return text.strip()


def _proposals(
    facts: Facts, entity: Entity, ooms: list[c.Signature], rollout: c.Rollout | None
) -> list[Proposal]:
    steps = Proposal(
        "none",
        None,
        {
            "steps": f"Bound the GPU memory one request of {entity} can take: cap input sizes (image pixels, "
            "context length), lower --max-num-seqs or --gpu-memory-utilization to leave headroom for activations, "
            "then compare the failing requests with the ones that pass."
        },
        "The lasting fix limits what a single batch may allocate.",
    )
    proposals = []
    if rollout and rollout.previous_revision is not None:
        proposals.append(
            Proposal(
                "rollout-undo",
                entity,
                {
                    "to_revision": rollout.previous_revision,
                    "image": ", ".join(rollout.previous_images),
                },
                f"The CUDA OOMs began after revision {rollout.revision}; revision {rollout.previous_revision} ran without them.",
            )
        )
    replicas = c.desired_replicas(facts, entity)
    if replicas:
        proposals.append(
            Proposal(
                "scale-deployment",
                entity,
                {"replicas": replicas * 2},
                f"{replicas} replicas each run out of GPU memory; {replicas * 2} spread the large requests thinner "
                "while the per-request memory is bounded.",
            )
        )
    return [*proposals, steps]

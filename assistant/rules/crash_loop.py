"""crash-loop: containers of an unchanged workload exit with an application error and restart.

CrashLoopBackOff (or repeated restarts after a non-zero exit) with an application error in the
previous instance's log, and NO new revision of the workload in the window: the cause lies in
something the pod reads at start (a Secret key removed, a ConfigMap edited in place, a rotated
credential, a dependency down at start), so rolling back would not help and the remediation is
runbook steps that name the workload and the error. The same crash has more specific
explanations that other families own, and the confidence drops when they are present:

- a new revision of the workload right before the crashes: bad-deploy;
- OOMKilled (exit 137): oom-killed; CUDA out of memory in the log: gpu-memory-exhaustion;
- GPU faults (Xid, GPU lost, CUDA errors) in the log, or the crashing pods all on one node while
  the workload's pods elsewhere are fine: a node or GPU fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from collectors.base import Entity

from ..base import Candidate, EvidenceItem, Facts, Proposal
from . import common as c

CATEGORY = "crash-loop"
OTHER_FAMILY = {
    "cuda-oom": "gpu-memory-exhaustion",
    "gpu-fault": "a GPU fault",
    "cuda-error": "a GPU fault",
    "nccl": "a GPU fault",
    "oom": "oom-killed",
}
APP_ERROR_CATEGORIES = {"python-exception", "go-panic", "crash", "error"}
# Start-up failures that point at configuration the pod reads: what the runbook should name.
CONFIG_ERROR = re.compile(
    r"KeyError: '(?P<key>[A-Z][A-Z0-9_]+)'|environment variable (?P<env>[A-Z][A-Z0-9_]+)"
    r"|(?P<env2>[A-Z][A-Z0-9_]{2,}) (?:is )?(?:not set|missing|required)|missing required|not set"
    r"|No such file or directory|FileNotFoundError|permission denied|authentication failed"
    r"|invalid (?:credentials|password|token|api key)|Unauthorized|AccessDenied|certificate",
    re.IGNORECASE,
)


@dataclass
class Crashes:
    pods: list[str] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)
    healthy_elsewhere: set[str] = field(default_factory=set)
    exits: list[str] = field(default_factory=list)
    first_exit: datetime | None = None
    evidence_ids: list[int] = field(default_factory=list)


def evaluate(facts: Facts) -> list[Candidate]:
    found = []
    for entity, rows in c.pods_by_workload(facts).items():
        crashes = _crashes(rows)
        if crashes.pods:
            found.append(_candidate(facts, entity, crashes))
    return found


def _crashes(rows: list[EvidenceItem]) -> Crashes:
    crashes = Crashes()
    healthy_nodes = set()
    for row in rows:
        crashing = False
        for container in c.containers(row):
            ended = c.last_terminated(container)
            if ended.get("reason") == "OOMKilled":
                continue  # the kernel's doing: oom-killed
            backoff = c.waiting_reason(container) == "CrashLoopBackOff"
            restarts = int(container.get("restartCount") or 0)
            if backoff or (restarts >= 2 and ended.get("exitCode") not in (None, 0)):
                crashing = True
                crashes.exits.append(
                    f"{container.get('name')}: {ended.get('reason', 'exit')} {ended.get('exitCode', '?')}"
                )
                crashes.first_exit = c.earliest(
                    [crashes.first_exit, c.parse_time(ended.get("finishedAt"))]
                )
        if crashing:
            crashes.pods.append(row.data.get("pod", ""))
            crashes.nodes.add(row.data.get("node") or "")
            crashes.evidence_ids.append(row.id)
        elif row.data.get("phase") == "Running" and all(k.get("ready") for k in c.containers(row)):
            healthy_nodes.add(row.data.get("node") or "")
    crashes.healthy_elsewhere = healthy_nodes - crashes.nodes
    return crashes


def _app_errors(facts: Facts, entity: Entity, crashes: Crashes) -> list[c.Signature]:
    """Errors the crashing pods logged (the previous instance's log tells why it exited)."""
    return [
        s
        for s in c.signatures(c.logs_of(facts, entity))
        if s.pod in crashes.pods and s.level in ("error", "fatal")
    ]


def _candidate(facts: Facts, entity: Entity, crashes: Crashes) -> Candidate:
    errors = _app_errors(facts, entity, crashes)
    other = sorted({OTHER_FAMILY[s.category] for s in errors if s.category in OTHER_FAMILY})
    app = [s for s in errors if s.category in APP_ERROR_CATEGORIES and not c.points_elsewhere(s)]
    config = next((m for s in app for ex in [s.full_text] if (m := CONFIG_ERROR.search(ex))), None)
    changed = c.changed_in_window(facts, entity)
    one_node = len(crashes.nodes) == 1 and bool(crashes.healthy_elsewhere)

    score = 0.5
    if app:
        score += 0.1
    if not changed and c.rollout_history_row(facts, entity) is not None:
        score += 0.15  # the history says nothing changed: rolling back cannot help
    if config:
        score += 0.1
    if one_node:
        score -= 0.25  # only the pods on one node crash: suspect the node or its GPU
    if changed:
        score = min(score, 0.3)  # a new revision right before: bad-deploy
    if other:
        score = min(score, 0.3)
    evidence = [*crashes.evidence_ids, *(s.row.id for s in errors)]
    history = c.rollout_history_row(facts, entity)
    if history:
        evidence.append(history.id)
    return Candidate(
        category=CATEGORY,
        entity=entity,
        confidence=c.clamp(score),
        evidence_ids=evidence,
        explanation=_explain(facts, entity, crashes, app, changed, other, one_node),
        proposals=[
            Proposal(
                "none", None, {"steps": _steps(entity, crashes, app, config)}, _rationale(changed)
            )
        ],
    )


def _explain(
    facts: Facts,
    entity: Entity,
    crashes: Crashes,
    app: list[c.Signature],
    changed: bool,
    other: list[str],
    one_node: bool,
) -> str:
    text = (
        f"Pods of {entity} crash-loop ({', '.join(crashes.pods)}; {', '.join(dict.fromkeys(crashes.exits))}), "
        f"one of them exiting at {c.ago(facts, crashes.first_exit)}. "
    )
    if app:
        top = app[0]
        text += f"The exiting instance logged {_example(top)!r} at {c.hhmm(top.first)}. "
    text += (
        "A new revision of the workload came shortly before, so the change is the likelier cause. "
        if changed
        else "No new revision of the workload was rolled out in the window, so rolling back would not help. "
    )
    if other:
        text += f"The logs also show {', '.join(other)}, a more specific explanation. "
    if one_node:
        text += f"Only pods on {', '.join(sorted(crashes.nodes))} crash while the others run elsewhere. "
    return text.strip()


def _example(sig: c.Signature) -> str:
    """The line that names the error: the last line of the first example (a traceback's end)."""
    example = sig.examples[0] if sig.examples else sig.text
    return example.strip().splitlines()[-1][:200]


def _steps(
    entity: Entity, crashes: Crashes, app: list[c.Signature], config: re.Match | None
) -> str:
    pods = ", ".join(crashes.pods)
    key = config and (config.group("key") or config.group("env") or config.group("env2"))
    if key:
        first = (
            f"Restore the {key} setting that {entity} reads at start: check the Secrets and ConfigMaps its pod "
            f"template loads (env, envFrom) and their sources (ExternalSecret, GitOps) for the missing {key} key."
        )
    elif app:
        first = f"Read why {entity} exits at start ({_example(app[0])!r}) and fix the configuration, credential or dependency it names."
    else:
        first = f"Read the previous log of a crashing pod of {entity} (kubectl logs --previous) and fix what it names."
    return f"{first} Then delete the crash-looping pods ({pods}) so they restart with it; no rollback, the image is unchanged."


def _rationale(changed: bool) -> str:
    if changed:
        return "The workload changed shortly before; check the rollout first."
    return (
        "The crash is not explained by a new revision; the fix is in what the pod reads at start."
    )

"""drain-node: cordon a Node, then evict its pods through the Eviction API.

What `kubectl drain X --ignore-daemonsets --grace-period=N` does, minus the wait for the pods to
terminate: cordon (cordon_node.py), list the pods on the Node (`fieldSelector
spec.nodeName=X`, all namespaces), leave out DaemonSet-owned pods (their controller would put
them straight back) and mirror pods (annotation `kubernetes.io/config.mirror`: the kubelet owns
them), and POST a policy/v1 Eviction for each of the others with `deleteOptions.gracePeriodSeconds`.
The API server refuses an eviction that would break a PodDisruptionBudget with 429: like kubectl,
the drain tries those again every VIGIL_DRAIN_RETRY_INTERVAL seconds for up to
VIGIL_DRAIN_RETRY_SECONDS (the budget frees up as the evicted pods' replacements become ready);
a pod still refused then is reported as blocked (ok=False: the drain is not finished; running the
action again later evicts what is left). Unlike kubectl, pods without a controller are evicted
too (kubectl needs --force for them); the preview names them, since nothing will recreate them.

The preview dry-runs the cordon and every eviction, so it shows which evictions a budget blocks
right now. Fingerprint: the Node's uid; the pods evicted are the ones on the Node at execution,
listed in the outcome. Idempotent: a cordoned Node is not patched again, evicted pods are no longer
listed, and a pod gone between the list and its eviction (404) counts as gone.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from django.conf import settings
from kubernetes import client
from pydantic import Field

from collectors.base import Entity

from .base import (
    ActionContext,
    ActionError,
    BaseAction,
    Outcome,
    Params,
    Preview,
    WholeNumber,
    check_params_unchanged,
    make_fingerprint,
    read_fingerprint,
    unified_diff,
)
from .cordon_node import is_cordoned, patch_unschedulable
from .kube import (
    KubeSession,
    check_same_object,
    controller_of,
    json_body,
    spec_view,
    status_message,
)

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


class DrainNodeParams(Params):
    grace_seconds: Annotated[WholeNumber, Field(ge=0, le=3600)] = 30


class DrainNode(BaseAction):
    name = "drain-node"
    target_kind = "Node"
    params_model = DrainNodeParams

    def preview(self, target: Entity | None, params: Any, ctx: ActionContext) -> Preview:
        params = self.typed(params)
        self.validate(target, params, ctx)
        assert target is not None
        with KubeSession(ctx) as kube:
            node = kube.node(target)
            fingerprint = make_fingerprint(
                uid=node["metadata"].get("uid"), params=self.params_digest(params)
            )
            after_node = node
            if not is_cordoned(node):
                after_node = patch_unschedulable(kube, target, True, dry_run=True)
            evict, skipped = _classify(_pods_on(kube, target))
            kept = [name for name, _ in skipped]
            blocked: list[str] = []
            for pod in evict:
                status, answer = _evict(kube, pod, params.grace_seconds, dry_run=True)
                if status == 429:
                    blocked.append(f"{_name(pod)} ({status_message(answer)})")
                    kept.append(_name(pod))
            unmanaged = [_name(p) for p in evict if controller_of(p) is None]
            parts = [
                f"Drain {target}: {'cordon it, then ' if not is_cordoned(node) else ''}"
                f"evict {len(evict)} pod{'' if len(evict) == 1 else 's'} "
                f"(grace period {params.grace_seconds}s)"
            ]
            if blocked:
                parts.append(
                    f"{len(blocked)} blocked now by a PodDisruptionBudget: {', '.join(blocked)}"
                )
            if unmanaged:
                parts.append(f"no controller recreates {', '.join(unmanaged)}")
            if skipped:
                parts.append("left in place: " + ", ".join(f"{n} ({why})" for n, why in skipped))
            before = {
                "node": spec_view(node),
                "pods": sorted([_name(p) for p in evict] + [n for n, _ in skipped]),
            }
            after = {"node": spec_view(after_node), "pods": sorted(kept)}
            return Preview(
                summary="; ".join(parts),
                requests=kube.sent_without_dry_run(),
                diff=unified_diff(before, after, str(target)),
                fingerprint=fingerprint,
            )

    def execute(
        self, target: Entity | None, params: Any, ctx: ActionContext, *, fingerprint: str
    ) -> Outcome:
        params = self.typed(params)
        self.validate(target, params, ctx)
        assert target is not None
        facts = read_fingerprint(fingerprint, "uid", "params")
        check_params_unchanged(self, params, facts)
        with KubeSession(ctx) as kube:
            node = kube.node(target)
            check_same_object(node, facts, str(target), generation=False)
            cordoned = False
            if not is_cordoned(node):
                patch_unschedulable(kube, target, True, dry_run=False)
                cordoned = True
            evict, skipped = _classify(_pods_on(kube, target))
            evicted, gone, blocked, failed = _evict_until_allowed(kube, evict, params.grace_seconds)
            ok = not blocked and not failed
            message = (
                f"{target} {'cordoned' if cordoned else 'was already cordoned'}; "
                f"{len(evicted)} pod{'' if len(evicted) == 1 else 's'} evicted"
            )
            if blocked:
                message += (
                    f", {len(blocked)} blocked by a PodDisruptionBudget (run the drain again "
                    "once the budget allows)"
                )
            if failed:
                message += f", {len(failed)} failed: {failed[0]['reason']}"
            return Outcome(
                ok=ok,
                message=message,
                requests=kube.writes,
                responses=kube.answers,
                result={
                    "cordoned": cordoned,
                    "evicted": evicted,
                    "gone": gone,
                    "blocked": blocked,
                    "failed": failed,
                    "skipped": [{"pod": n, "why": why} for n, why in skipped],
                    "grace_seconds": params.grace_seconds,
                },
            )


def _evict_until_allowed(
    kube: KubeSession, pods: list[dict], grace: int
) -> tuple[list[str], list[str], list[dict], list[dict]]:
    """(evicted, gone, blocked, failed): the evictions a budget refuses are tried again every
    VIGIL_DRAIN_RETRY_INTERVAL seconds until VIGIL_DRAIN_RETRY_SECONDS have passed."""
    evicted: list[str] = []
    gone: list[str] = []
    failed: list[dict] = []
    deadline = _clock() + settings.VIGIL_DRAIN_RETRY_SECONDS
    while True:
        refused: list[tuple[dict, str]] = []
        for pod in pods:
            try:
                status, answer = _evict(kube, pod, grace, dry_run=False)
            except ActionError as exc:
                failed.append({"pod": _name(pod), "reason": exc.message})
                continue
            if status == 429:
                refused.append((pod, status_message(answer)))
            elif status == 404:
                gone.append(_name(pod))
            else:
                evicted.append(_name(pod))
        pause = settings.VIGIL_DRAIN_RETRY_INTERVAL
        if not refused or _clock() + pause > deadline:
            blocked = [{"pod": _name(pod), "reason": reason} for pod, reason in refused]
            return evicted, gone, blocked, failed
        _wait(pause)
        pods = [pod for pod, _ in refused]


def _wait(seconds: float) -> None:
    """Between two tries of the refused evictions (tests replace it, and _clock)."""
    time.sleep(seconds)


def _clock() -> float:
    return time.monotonic()


def _pods_on(kube: KubeSession, target: Entity) -> list[dict]:
    return kube.items(
        kube.core.list_pod_for_all_namespaces,
        doing="list pods",
        field_selector=f"spec.nodeName={target.name}",
    )


def _name(pod: dict) -> str:
    metadata = pod["metadata"]
    return f"{metadata.get('namespace')}/{metadata['name']}"


def _classify(pods: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """(pods to evict, [(pod, why it stays)]), in list order."""
    evict: list[dict] = []
    skipped: list[tuple[str, str]] = []
    for pod in pods:
        owner = controller_of(pod) or {}
        if MIRROR_ANNOTATION in ((pod["metadata"].get("annotations")) or {}):
            skipped.append((_name(pod), "mirror pod"))
        elif owner.get("kind") == "DaemonSet":
            skipped.append((_name(pod), f"DaemonSet {owner.get('name')}"))
        else:
            evict.append(pod)
    return evict, skipped


def _evict(kube: KubeSession, pod: dict, grace: int, *, dry_run: bool) -> tuple[int, Any]:
    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
    body = client.V1Eviction(
        api_version="policy/v1",
        kind="Eviction",
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        delete_options=client.V1DeleteOptions(grace_period_seconds=grace),
    )
    kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
    return kube.call(
        kube.core.create_namespaced_pod_eviction,
        name,
        namespace,
        body,
        doing=f"create pods/eviction in {namespace}",
        allow=(404, 429),
        _headers=json_body(),
        **kwargs,
    )


ACTION = DrainNode()

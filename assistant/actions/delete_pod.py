"""delete-pod: delete one pod so that its controller replaces it.

`kubectl delete pod X -n NS` through `delete_namespaced_pod`, with the pod's own grace period and
a DeleteOptions precondition on the uid the preview saw: a pod of the same name created since (a
StatefulSet's replacement) is never the one deleted. Fingerprint: that uid. The goal is "this pod
instance is gone", so a pod that is already gone, or replaced by a new one of the same name, is
a success with nothing sent (a retry after the delete went through lands there).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from collectors.base import Entity

from .base import (
    ActionContext,
    BaseAction,
    Outcome,
    Params,
    Preview,
    check_params_unchanged,
    make_fingerprint,
    read_fingerprint,
    unified_diff,
)
from .kube import KubeSession, controller_of, json_body


class DeletePodParams(Params):
    pass


class DeletePod(BaseAction):
    name = "delete-pod"
    target_kind = "Pod"
    params_model = DeletePodParams

    def preview(self, target: Entity | None, params: Any, ctx: ActionContext) -> Preview:
        params = self.typed(params)
        self.validate(target, params, ctx)
        assert target is not None
        with KubeSession(ctx) as kube:
            pod = _read(kube, target)
            uid = pod["metadata"].get("uid") if pod else None
            fingerprint = make_fingerprint(uid=uid, params=self.params_digest(params))
            if pod is None:
                return Preview(
                    summary=f"Nothing to do: {target} no longer exists",
                    requests=[],
                    diff="",
                    fingerprint=fingerprint,
                )
            after = _delete(kube, target, uid, dry_run=True)
            return Preview(
                summary=f"Delete {target} ({_describe(pod)}); {_replacement(pod)}",
                requests=kube.sent_without_dry_run(),
                diff=unified_diff(_view(pod), _view(after), str(target)),
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
            pod = _read(kube, target)
            if pod is None or str(pod["metadata"].get("uid")) != facts["uid"]:
                return _gone(target, pod)
            status, answer = kube.call(
                kube.core.delete_namespaced_pod,
                target.name,
                target.namespace,
                doing=f"delete pods in {target.namespace}",
                allow=(404, 409),
                body=_options(facts["uid"]),
                _headers=json_body(),
            )
            if status in (404, 409):
                # 404: deleted meanwhile; 409: the uid precondition failed, so the pod of that
                # name is a new one and the one approved is gone. Either way: done.
                outcome = _gone(target, None)
                outcome.requests, outcome.responses = kube.writes, kube.answers
                return outcome
            return Outcome(
                ok=True,
                message=f"{target} deleted; {_replacement(pod)}",
                requests=kube.writes,
                responses=kube.answers,
                result={
                    "uid": facts["uid"],
                    "grace_period_seconds": (answer or {})
                    .get("metadata", {})
                    .get("deletionGracePeriodSeconds"),
                },
            )


def _read(kube: KubeSession, target: Entity) -> dict | None:
    return kube.read_or_none(
        kube.core.read_namespaced_pod,
        target.name,
        target.namespace,
        doing=f"get pods in {target.namespace}",
    )


def _options(uid: str) -> client.V1DeleteOptions:
    return client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))


def _delete(kube: KubeSession, target: Entity, uid: str, *, dry_run: bool) -> dict:
    kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
    return kube.read(
        kube.core.delete_namespaced_pod,
        target.name,
        target.namespace,
        doing=f"delete pods in {target.namespace}",
        body=_options(uid),
        _headers=json_body(),
        **kwargs,
    )


def _gone(target: Entity, replacement: dict | None) -> Outcome:
    if replacement is None:
        message = f"{target} is already gone; nothing sent"
    else:
        message = f"{target} was already replaced by a new pod of the same name; nothing sent"
    return Outcome(ok=True, message=message, result={"skipped": True})


def _describe(pod: dict) -> str:
    status = pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName")
    phase = status.get("phase") or "Unknown"
    return f"{phase} on {node}" if node else phase


def _replacement(pod: dict) -> str:
    owner = controller_of(pod)
    if owner is None:
        return "it has no controller: nothing will replace it"
    return f"its {owner.get('kind')} {owner.get('name')} creates a replacement"


def _view(pod: dict) -> dict:
    metadata = pod.get("metadata") or {}
    return {
        "metadata": {
            key: metadata[key]
            for key in (
                "name",
                "namespace",
                "uid",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            )
            if key in metadata
        }
    }


ACTION = DeletePod()

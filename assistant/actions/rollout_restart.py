"""rollout-restart: replace a Deployment's pods, one rolling update, with an unchanged spec.

What `kubectl rollout restart deployment/X` sends: a strategic merge patch setting
`spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]` to now (RFC 3339). The
new annotation changes the pod template, so the controller rolls every pod. A paused Deployment
is refused, as kubectl refuses it.

Fingerprint: uid, generation and the time of the preview. A retry after the patch went through
finds a restartedAt later than the preview (someone, this execution included, restarted it since)
and succeeds without restarting a second time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from collectors.base import Entity

from . import base
from .base import (
    ActionContext,
    ActionError,
    BaseAction,
    Outcome,
    Params,
    Preview,
    check_params_unchanged,
    make_fingerprint,
    read_fingerprint,
    rfc3339,
    unified_diff,
)
from .kube import (
    FIELD_MANAGER,
    STRATEGIC_MERGE_PATCH,
    KubeSession,
    check_same_object,
    deployment_fingerprint_facts,
    spec_view,
)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class RolloutRestartParams(Params):
    pass


class RolloutRestart(BaseAction):
    name = "rollout-restart"
    target_kind = "Deployment"
    params_model = RolloutRestartParams

    def preview(self, target: Entity | None, params: Any, ctx: ActionContext) -> Preview:
        params = self.typed(params)
        self.validate(target, params, ctx)
        assert target is not None
        now = base.utc_now()
        with KubeSession(ctx) as kube:
            deployment = kube.deployment(target)
            _refuse_paused(target, deployment)
            after = _patch(kube, target, rfc3339(now), dry_run=True)
            replicas = deployment["spec"].get("replicas", 1)
            return Preview(
                summary=(
                    f"Restart {target}: a rolling replacement of its {replicas} pod"
                    f"{'' if replicas == 1 else 's'} with the same spec"
                ),
                requests=kube.sent_without_dry_run(),
                diff=unified_diff(spec_view(deployment), spec_view(after), str(target)),
                fingerprint=make_fingerprint(
                    **deployment_fingerprint_facts(deployment),
                    at=int(now.timestamp()),
                    params=self.params_digest(params),
                ),
            )

    def execute(
        self, target: Entity | None, params: Any, ctx: ActionContext, *, fingerprint: str
    ) -> Outcome:
        params = self.typed(params)
        self.validate(target, params, ctx)
        assert target is not None
        facts = read_fingerprint(fingerprint, "uid", "generation", "at", "params")
        check_params_unchanged(self, params, facts)
        with KubeSession(ctx) as kube:
            deployment = kube.deployment(target)
            check_same_object(deployment, facts, str(target), generation=False)
            restarted = _restarted_at(deployment)
            if restarted is not None and restarted.timestamp() >= int(facts["at"]):
                return Outcome(
                    ok=True,
                    message=(
                        f"{target} was already restarted at {rfc3339(restarted)}, after the "
                        "preview; nothing sent"
                    ),
                    result={"skipped": True, "restarted_at": rfc3339(restarted)},
                )
            check_same_object(deployment, facts, str(target))
            _refuse_paused(target, deployment)
            now = rfc3339(base.utc_now())
            _patch(kube, target, now, dry_run=False)
            return Outcome(
                ok=True,
                message=f"{target} restarted (restartedAt {now})",
                requests=kube.writes,
                responses=kube.answers,
                result={"restarted_at": now},
            )


def _refuse_paused(target: Entity, deployment: dict) -> None:
    if deployment["spec"].get("paused"):
        raise ActionError(
            f"{target} is paused: a restart would not roll out; resume it first "
            f"(kubectl rollout resume deployment/{target.name} -n {target.namespace})"
        )


def _restarted_at(deployment: dict) -> datetime | None:
    template = deployment["spec"].get("template") or {}
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _patch(kube: KubeSession, target: Entity, now: str, *, dry_run: bool) -> dict:
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
    kwargs: dict[str, Any] = {
        "field_manager": FIELD_MANAGER,
        "_content_type": STRATEGIC_MERGE_PATCH,
    }
    if dry_run:
        kwargs["dry_run"] = "All"
    return kube.read(
        kube.apps.patch_namespaced_deployment,
        target.name,
        target.namespace,
        body,
        doing=f"patch deployments in {target.namespace}",
        **kwargs,
    )


ACTION = RolloutRestart()

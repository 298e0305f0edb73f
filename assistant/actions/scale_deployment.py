"""scale-deployment: set a Deployment's replica count through its `scale` subresource.

`kubectl scale deployment/X --replicas=N` as the official client sends it:
`patch_namespaced_deployment_scale` with the strategic merge patch `{"spec": {"replicas": N}}`
(PATCH …/deployments/X/scale). Setting an absolute count is idempotent by nature: a retry finds
`spec.replicas` already N and sends nothing. Fingerprint: uid and generation (a scale by someone
else, an HPA included, moves the generation: the preview's "from" would be wrong).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from collectors.base import Entity

from .base import (
    ActionContext,
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
from .kube import (
    FIELD_MANAGER,
    STRATEGIC_MERGE_PATCH,
    KubeSession,
    check_same_object,
    deployment_fingerprint_facts,
)


class ScaleDeploymentParams(Params):
    replicas: Annotated[WholeNumber, Field(ge=1, le=1000)]


class ScaleDeployment(BaseAction):
    name = "scale-deployment"
    target_kind = "Deployment"
    params_model = ScaleDeploymentParams

    def preview(self, target: Entity | None, params: Any, ctx: ActionContext) -> Preview:
        params = self.typed(params)
        self.validate(target, params, ctx)
        assert target is not None
        with KubeSession(ctx) as kube:
            deployment = kube.deployment(target)
            fingerprint = make_fingerprint(
                **deployment_fingerprint_facts(deployment), params=self.params_digest(params)
            )
            current = deployment["spec"].get("replicas", 1)
            if current == params.replicas:
                return Preview(
                    summary=f"Nothing to do: {target} already has {current} replicas",
                    requests=[],
                    diff="",
                    fingerprint=fingerprint,
                )
            scale = kube.read(
                kube.apps.read_namespaced_deployment_scale,
                target.name,
                target.namespace,
                doing=f"get deployments/scale in {target.namespace}",
            )
            after = _patch(kube, target, params.replicas, dry_run=True)
            return Preview(
                summary=f"Scale {target} from {current} to {params.replicas} replicas",
                requests=kube.sent_without_dry_run(),
                diff=unified_diff(_view(scale), _view(after), f"Scale of {target}"),
                fingerprint=fingerprint,
            )

    def execute(
        self, target: Entity | None, params: Any, ctx: ActionContext, *, fingerprint: str
    ) -> Outcome:
        params = self.typed(params)
        self.validate(target, params, ctx)
        assert target is not None
        facts = read_fingerprint(fingerprint, "uid", "generation", "params")
        check_params_unchanged(self, params, facts)
        with KubeSession(ctx) as kube:
            deployment = kube.deployment(target)
            check_same_object(deployment, facts, str(target), generation=False)
            current = deployment["spec"].get("replicas", 1)
            if current == params.replicas:
                return Outcome(
                    ok=True,
                    message=f"{target} already has {current} replicas; nothing sent",
                    result={"skipped": True, "replicas": current},
                )
            check_same_object(deployment, facts, str(target))
            _patch(kube, target, params.replicas, dry_run=False)
            return Outcome(
                ok=True,
                message=f"{target} scaled from {current} to {params.replicas} replicas",
                requests=kube.writes,
                responses=kube.answers,
                result={"from_replicas": current, "replicas": params.replicas},
            )


def _view(scale: dict) -> dict:
    return {"spec": scale.get("spec") or {}}


def _patch(kube: KubeSession, target: Entity, replicas: int, *, dry_run: bool) -> dict:
    kwargs: dict[str, Any] = {
        "field_manager": FIELD_MANAGER,
        "_content_type": STRATEGIC_MERGE_PATCH,
    }
    if dry_run:
        kwargs["dry_run"] = "All"
    return kube.read(
        kube.apps.patch_namespaced_deployment_scale,
        target.name,
        target.namespace,
        {"spec": {"replicas": replicas}},
        doing=f"patch deployments/scale in {target.namespace}",
        **kwargs,
    )


ACTION = ScaleDeployment()

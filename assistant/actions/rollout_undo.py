"""rollout-undo: restore the pod template of an earlier revision of a Deployment.

What `kubectl rollout undo deployment/X [--to-revision=N]` does (kubectl's
`polymorphichelpers.DeploymentRollbacker`):

1. Take the Deployment's ReplicaSets: those its selector matches whose controller
   ownerReference is the Deployment (uid). Each carries its revision in the
   `deployment.kubernetes.io/revision` annotation.
2. Pick the target: `to_revision` when given (it must exist), else the previous revision, the
   highest below the current one (the Deployment's own revision annotation, else the highest).
3. Refuse a paused Deployment; do nothing when its template already equals the target's,
   ignoring the `pod-template-hash` label.
4. Send a JSON patch (`application/json-patch+json`) that replaces `/spec/template` with the
   target ReplicaSet's template minus the `pod-template-hash` label, and `/metadata/annotations`
   with the Deployment's own values of the annotations kubectl keeps (last-applied-configuration,
   revision, revision-history, desired-replicas, max-replicas, the deprecated rollbackTo) plus
   every other annotation of the target ReplicaSet (its change-cause among them). The
   Deployment's other annotations are dropped, exactly as kubectl drops them.

The deployment controller then adopts the old ReplicaSet again under a new revision (max + 1).

One addition to kubectl's patch: a first operation replacing `/metadata/resourceVersion` with the
value just read. The API server treats a resourceVersion in a patch as a precondition, so a
change between this read and the write answers 409 (ActionConflict) instead of being overwritten
with a template computed from stale state. Fingerprint: the Deployment's uid and generation, the
target ReplicaSet's name and revision. A retry after the patch went through finds the template
already equal to that ReplicaSet's (the revision numbers have moved by then, the name has not)
and succeeds without sending anything.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

from pydantic import Field

from collectors.base import Entity

from .base import (
    ActionConflict,
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
from .kube import (
    FIELD_MANAGER,
    JSON_PATCH,
    POD_TEMPLATE_HASH,
    REVISION,
    KubeSession,
    check_same_object,
    containers_of,
    controller_of,
    label_selector,
    spec_view,
)

# kubectl's annotationsToSkip: kept from the Deployment, never copied from the ReplicaSet.
ANNOTATIONS_TO_SKIP = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
)


class RolloutUndoParams(Params):
    to_revision: Annotated[WholeNumber | None, Field(ge=1)] = None
    # The image(s) the proposal expects the target revision to run ("a, b" for several
    # containers), as the rules write them. Informational; when given it must match, so that a
    # revision number that changed meaning since the analysis is caught.
    image: str | None = None


class RolloutUndo(BaseAction):
    name = "rollout-undo"
    target_kind = "Deployment"
    params_model = RolloutUndoParams

    def preview(self, target: Entity | None, params: Any, ctx: ActionContext) -> Preview:
        params = self.typed(params)
        self.validate(target, params, ctx)
        assert target is not None
        with KubeSession(ctx) as kube:
            deployment = kube.deployment(target)
            revisions = _revisions(kube, target, deployment)
            chosen = _choose(target, deployment, revisions, params)
            fingerprint = make_fingerprint(
                uid=deployment["metadata"].get("uid"),
                generation=deployment["metadata"].get("generation"),
                rs=chosen["metadata"]["name"],
                revision=_revision(chosen),
                params=self.params_digest(params),
            )
            current = _current_revision(deployment, revisions)
            if _same_template(chosen, deployment):
                return Preview(
                    summary=(
                        f"Nothing to do: {target} already runs the pod template of revision "
                        f"{_revision(chosen)}"
                    ),
                    requests=[],
                    diff="",
                    fingerprint=fingerprint,
                )
            _refuse_paused(target, deployment)
            after = _patch(kube, target, deployment, chosen, dry_run=True)
            return Preview(
                summary=(
                    f"Roll back {target} from revision {current} to {_revision(chosen)}"
                    f"{_changes(deployment['spec'].get('template') or {}, chosen['spec']['template'])}"
                ),
                requests=kube.sent_without_dry_run(),
                diff=unified_diff(spec_view(deployment), spec_view(after), str(target)),
                fingerprint=fingerprint,
            )

    def execute(
        self, target: Entity | None, params: Any, ctx: ActionContext, *, fingerprint: str
    ) -> Outcome:
        params = self.typed(params)
        self.validate(target, params, ctx)
        assert target is not None
        facts = read_fingerprint(fingerprint, "uid", "generation", "rs", "revision", "params")
        check_params_unchanged(self, params, facts)
        with KubeSession(ctx) as kube:
            deployment = kube.deployment(target)
            check_same_object(deployment, facts, str(target), generation=False)
            chosen = kube.read_or_none(
                kube.apps.read_namespaced_replica_set,
                facts["rs"],
                target.namespace,
                doing=f"get replicasets in {target.namespace}",
            )
            owner = controller_of(chosen) if chosen else None
            if chosen is None or not owner or owner.get("uid") != facts["uid"]:
                raise ActionConflict(
                    f"ReplicaSet {target.namespace}/{facts['rs']} (revision {facts['revision']}) "
                    f"that the preview rolled {target} back to is gone: preview again"
                )
            if _same_template(chosen, deployment):
                return Outcome(
                    ok=True,
                    message=(
                        f"{target} already runs the pod template of ReplicaSet {facts['rs']} "
                        f"(revision {facts['revision']} at the preview); nothing sent"
                    ),
                    result={"skipped": True, "replicaset": facts["rs"]},
                )
            check_same_object(deployment, facts, str(target))
            _refuse_paused(target, deployment)
            revisions = _revisions(kube, target, deployment)
            current = _current_revision(deployment, revisions)
            _patch(kube, target, deployment, chosen, dry_run=False)
            return Outcome(
                ok=True,
                message=f"{target} rolled back to revision {facts['revision']}",
                requests=kube.writes,
                responses=kube.answers,
                result={
                    "from_revision": current,
                    "to_revision": int(facts["revision"]),
                    "replicaset": facts["rs"],
                    "images": _images(chosen["spec"]["template"]),
                },
            )


def _revision(rs: dict) -> int | None:
    value = ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _revisions(kube: KubeSession, target: Entity, deployment: dict) -> list[dict]:
    """The Deployment's ReplicaSets that carry a revision, as kubectl's GetAllReplicaSets finds them."""
    uid = deployment["metadata"].get("uid")
    selector = label_selector(deployment["spec"].get("selector"))
    if not selector:
        raise ActionError(f"{target} has an empty selector: its ReplicaSets cannot be told apart")
    replicasets = kube.items(
        kube.apps.list_namespaced_replica_set,
        target.namespace,
        doing=f"list replicasets in {target.namespace}",
        label_selector=selector,
    )
    owned = [
        rs
        for rs in replicasets
        if (controller_of(rs) or {}).get("uid") == uid and _revision(rs) is not None
    ]
    return sorted(owned, key=lambda rs: _revision(rs) or 0)


def _current_revision(deployment: dict, revisions: list[dict]) -> int | None:
    annotations = deployment["metadata"].get("annotations") or {}
    try:
        return int(annotations[REVISION])
    except (KeyError, TypeError, ValueError):
        return _revision(revisions[-1]) if revisions else None


def _choose(
    target: Entity, deployment: dict, revisions: list[dict], params: RolloutUndoParams
) -> dict:
    known = ", ".join(str(_revision(rs)) for rs in revisions) or "none"
    if params.to_revision is not None:
        chosen = next((rs for rs in revisions if _revision(rs) == params.to_revision), None)
        if chosen is None:
            raise ActionError(
                f"{target} has no revision {params.to_revision} (its revisions: {known})"
            )
    else:
        current = _current_revision(deployment, revisions)
        earlier = [rs for rs in revisions if current is None or (_revision(rs) or 0) < current]
        if not earlier:
            raise ActionError(
                f"{target} has no revision before {current} to roll back to (its revisions: {known})"
            )
        chosen = earlier[-1]
    if params.image:
        expected = {image.strip() for image in params.image.split(",") if image.strip()}
        runs = set(_images(chosen["spec"]["template"]).values())
        if expected and not expected <= runs:
            raise ActionError(
                f"revision {_revision(chosen)} of {target} runs {', '.join(sorted(runs))}, not "
                f"{', '.join(sorted(expected))} as the proposal expected: check the revision"
            )
    return chosen


def _without_hash(template: dict) -> dict:
    template = copy.deepcopy(template or {})
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return template


def _same_template(rs: dict, deployment: dict) -> bool:
    """kubectl's equalIgnoreHash."""
    return _without_hash(rs["spec"].get("template")) == _without_hash(
        deployment["spec"].get("template")
    )


def _refuse_paused(target: Entity, deployment: dict) -> None:
    if deployment["spec"].get("paused"):
        raise ActionError(
            f"{target} is paused: a rollback would not roll out; resume it first "
            f"(kubectl rollout resume deployment/{target.name} -n {target.namespace})"
        )


def rollback_patch(deployment: dict, chosen: dict) -> list[dict]:
    """kubectl's patch (spec/template, then annotations), after a resourceVersion precondition."""
    current = deployment["metadata"].get("annotations") or {}
    annotations = {key: current[key] for key in ANNOTATIONS_TO_SKIP if key in current}
    for key, value in ((chosen["metadata"].get("annotations")) or {}).items():
        if key not in ANNOTATIONS_TO_SKIP:
            annotations[key] = value
    # Go's json.Marshal writes a map's keys sorted; so does this, for a byte-identical value.
    annotations = dict(sorted(annotations.items()))
    return [
        {
            "op": "replace",
            "path": "/metadata/resourceVersion",
            "value": deployment["metadata"]["resourceVersion"],
        },
        {
            "op": "replace",
            "path": "/spec/template",
            "value": _without_hash(chosen["spec"]["template"]),
        },
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]


def _patch(
    kube: KubeSession, target: Entity, deployment: dict, chosen: dict, *, dry_run: bool
) -> dict:
    kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "_content_type": JSON_PATCH}
    if dry_run:
        kwargs["dry_run"] = "All"
    return kube.read(
        kube.apps.patch_namespaced_deployment,
        target.name,
        target.namespace,
        rollback_patch(deployment, chosen),
        doing=f"patch deployments in {target.namespace}",
        **kwargs,
    )


def _images(template: dict) -> dict[str, str]:
    return {c.get("name", "?"): c.get("image", "") for c in containers_of(template)}


def _changes(now: dict, then: dict) -> str:
    """` (image a → b)`, or the fields of the pod template that differ when the image does not."""
    before, after = _images(now), _images(then)
    changed_images = [
        (name, before.get(name), image)
        for name, image in after.items()
        if before.get(name) != image
    ]
    if changed_images:
        if len(after) == 1:
            _, old, new = changed_images[0]
            return f" (image {old or 'none'} → {new})"
        return " (" + "; ".join(f"{n}: {o or 'none'} → {i}" for n, o, i in changed_images) + ")"
    old_containers = {c.get("name"): c for c in containers_of(now)}
    fields = []
    for container in containers_of(then):
        name = container.get("name")
        old = old_containers.get(name, {})
        for key in ("args", "command", "env", "envFrom", "resources", "volumeMounts"):
            if old.get(key) != container.get(key):
                fields.append(f"{key} of {name}")
    if not fields and _without_hash(now) != _without_hash(then):
        fields.append("pod template")
    return f" (changes {', '.join(fields)})" if fields else ""


ACTION = RolloutUndo()

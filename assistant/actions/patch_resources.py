"""patch-resources: change one container's resource requests and/or limits in a Deployment.

`kubectl set resources deployment/X -c C --requests=… --limits=…` as a strategic merge patch of
the pod template: `{"spec": {"template": {"spec": {"containers": [{"name": C, "resources":
{"requests": {…}, "limits": {…}}}]}}}}`. Containers merge by name and the resource maps merge,
so only the quantities given change. The pods roll, as with any template change.

Parameters: `container` (must be a container of the pod template), `requests` and `limits`, maps
of `cpu`, `memory`, `nvidia.com/gpu` to Kubernetes quantities (at least one given). Checked
before anything is sent, in the API server's own terms: quantities well-formed and positive,
memory not in millibytes (`512m` is half a byte: surely `512Mi` was meant), GPUs whole; and on the
result, each request at most its limit, GPU request equal to the GPU limit (extended resources
cannot be overcommitted). Fingerprint: uid and generation. Nothing is sent when the container
already has these quantities (a retry after the patch went through).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from collectors.base import Entity

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
    unified_diff,
)
from .kube import (
    FIELD_MANAGER,
    STRATEGIC_MERGE_PATCH,
    KubeSession,
    check_same_object,
    containers_of,
    deployment_fingerprint_facts,
    spec_view,
)

GPU = "nvidia.com/gpu"
ResourceName = Literal["cpu", "memory", "nvidia.com/gpu"]

# A Kubernetes quantity (apimachinery's resource.Quantity), positive: a decimal number, then a
# binary suffix (Ki…Ei), a decimal SI suffix (m, k, M…E) or a decimal exponent (e6, E-3).
QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def quantity_value(text: str) -> Decimal | None:
    """The value of a quantity string, or None when it is not one."""
    match = QUANTITY.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    try:
        number = Decimal(match["number"])
    except InvalidOperation:
        return None
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))


def _as_text(value: Any) -> Any:
    # `cpu: 2` in JSON is the quantity "2"; booleans are not quantities.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, "g")
    return value


Quantity = Annotated[str, BeforeValidator(_as_text)]


def quantity_problem(resource: str, text: str) -> str | None:
    value = quantity_value(text)
    if value is None:
        return f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 40Gi)"
    if value <= 0:
        return f"{text!r} must be more than zero"
    suffix = QUANTITY.match(text.strip())["suffix"]  # type: ignore[index]  # value is not None
    if resource == "memory" and suffix == "m":
        return f"{text!r} is in millibytes; write Mi (mebibytes) or M"
    if resource == GPU and (value != value.to_integral_value() or suffix not in (None, "")):
        return f"{text!r}: GPUs are whole numbers (1, 2, …)"
    return None


class PatchResourcesParams(Params):
    container: Annotated[str, Field(min_length=1)]
    requests: dict[ResourceName, Quantity] | None = None
    limits: dict[ResourceName, Quantity] | None = None

    @model_validator(mode="after")
    def _quantities(self) -> PatchResourcesParams:
        if not self.requests and not self.limits:
            raise ValueError("give requests or limits (or both): there is nothing to change")
        problems = [
            f"{kind}.{resource}: {problem}"
            for kind, values in (("requests", self.requests), ("limits", self.limits))
            for resource, text in (values or {}).items()
            if (problem := quantity_problem(resource, text))
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PatchResources(BaseAction):
    name = "patch-resources"
    target_kind = "Deployment"
    params_model = PatchResourcesParams

    def preview(self, target: Entity | None, params: Any, ctx: ActionContext) -> Preview:
        params = self.typed(params)
        self.validate(target, params, ctx)
        assert target is not None
        with KubeSession(ctx) as kube:
            deployment = kube.deployment(target)
            fingerprint = make_fingerprint(
                **deployment_fingerprint_facts(deployment), params=self.params_digest(params)
            )
            current = _container(target, deployment, params.container)
            changes = _changes(current, params)
            if not changes:
                return Preview(
                    summary=(
                        f"Nothing to do: container {params.container} of {target} already has "
                        "these resources"
                    ),
                    requests=[],
                    diff="",
                    fingerprint=fingerprint,
                )
            _check_result(target, current, params)
            after = _patch(kube, target, params, dry_run=True)
            return Preview(
                summary=(
                    f"Set the resources of container {params.container} in {target}: "
                    f"{', '.join(changes)} (its pods roll)"
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
        facts = read_fingerprint(fingerprint, "uid", "generation", "params")
        check_params_unchanged(self, params, facts)
        with KubeSession(ctx) as kube:
            deployment = kube.deployment(target)
            check_same_object(deployment, facts, str(target), generation=False)
            current = _container(target, deployment, params.container)
            changes = _changes(current, params)
            if not changes:
                return Outcome(
                    ok=True,
                    message=(
                        f"container {params.container} of {target} already has these "
                        "resources; nothing sent"
                    ),
                    result={"skipped": True},
                )
            check_same_object(deployment, facts, str(target))
            _check_result(target, current, params)
            _patch(kube, target, params, dry_run=False)
            return Outcome(
                ok=True,
                message=f"resources of container {params.container} in {target} set: {', '.join(changes)}",
                requests=kube.writes,
                responses=kube.answers,
                result={
                    "container": params.container,
                    "requests": dict(params.requests or {}),
                    "limits": dict(params.limits or {}),
                    "before": current.get("resources") or {},
                },
            )


def _container(target: Entity, deployment: dict, name: str) -> dict:
    containers = containers_of(deployment["spec"].get("template") or {})
    for container in containers:
        if container.get("name") == name:
            return container
    names = ", ".join(c.get("name", "?") for c in containers) or "none"
    raise ActionError(
        f"{target} has no container {name!r} in its pod template (its containers: {names})"
    )


def _changes(container: dict, params: PatchResourcesParams) -> list[str]:
    """`limits.memory 48Gi → 64Gi` for every given quantity that differs from the current one."""
    resources = container.get("resources") or {}
    changes = []
    for kind, values in (("requests", params.requests), ("limits", params.limits)):
        current = resources.get(kind) or {}
        for resource, text in (values or {}).items():
            old = current.get(resource)
            if old is None or quantity_value(str(old)) != quantity_value(text):
                changes.append(f"{kind}.{resource} {old or 'unset'} → {text}")
    return changes


def _check_result(target: Entity, container: dict, params: PatchResourcesParams) -> None:
    """Refuse what the API server would refuse in the merged resources, in plain words."""
    resources = container.get("resources") or {}
    requests = {**(resources.get("requests") or {}), **(params.requests or {})}
    limits = {**(resources.get("limits") or {}), **(params.limits or {})}
    problems = []
    for resource in sorted(set(requests) | set(limits)):
        request, limit = requests.get(resource), limits.get(resource)
        request_value = quantity_value(str(request)) if request is not None else None
        limit_value = quantity_value(str(limit)) if limit is not None else None
        if resource == GPU:
            if request is not None and limit is None:
                problems.append(f"{GPU}: a request needs an equal limit")
            elif request_value is not None and request_value != limit_value:
                problems.append(f"{GPU}: request {request} must equal limit {limit}")
        elif request_value is not None and limit_value is not None and request_value > limit_value:
            problems.append(f"{resource}: request {request} would exceed limit {limit}")
    if problems:
        raise ActionError(
            f"patch-resources on container {params.container} of {target}: " + "; ".join(problems)
        )


def _patch(
    kube: KubeSession, target: Entity, params: PatchResourcesParams, *, dry_run: bool
) -> dict:
    resources: dict[str, dict[str, str]] = {}
    if params.requests:
        resources["requests"] = dict(params.requests)
    if params.limits:
        resources["limits"] = dict(params.limits)
    body = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": params.container, "resources": resources}]}
            }
        }
    }
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


ACTION = PatchResources()

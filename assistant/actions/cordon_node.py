"""cordon-node: mark a Node unschedulable, so no new pod lands on it; its pods keep running.

`kubectl cordon X`: a strategic merge patch `{"spec": {"unschedulable": true}}` of the Node
(`patch_node`). Fingerprint: the Node's uid (a Node's resourceVersion moves with every status
heartbeat, and cordoning does not depend on its state). Cordoning a cordoned Node sends nothing.
`Cordon` also serves uncordon-node (uncordon_node.py) and the first step of drain-node.
"""

from __future__ import annotations

from typing import Any

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
from .kube import FIELD_MANAGER, STRATEGIC_MERGE_PATCH, KubeSession, check_same_object, spec_view


class CordonParams(Params):
    pass


class Cordon(BaseAction):
    """Set `spec.unschedulable` to `unschedulable` (a subclass names the action)."""

    target_kind = "Node"
    params_model = CordonParams
    unschedulable: bool

    def preview(self, target: Entity | None, params: Any, ctx: ActionContext) -> Preview:
        params = self.typed(params)
        self.validate(target, params, ctx)
        assert target is not None
        with KubeSession(ctx) as kube:
            node = kube.node(target)
            fingerprint = make_fingerprint(
                uid=node["metadata"].get("uid"), params=self.params_digest(params)
            )
            if is_cordoned(node) == self.unschedulable:
                state = "cordoned" if self.unschedulable else "schedulable"
                return Preview(
                    summary=f"Nothing to do: {target} is already {state}",
                    requests=[],
                    diff="",
                    fingerprint=fingerprint,
                )
            after = patch_unschedulable(kube, target, self.unschedulable, dry_run=True)
            if self.unschedulable:
                summary = (
                    f"Cordon {target}: no new pods will be scheduled on it; its pods keep running"
                )
            else:
                summary = f"Uncordon {target}: the scheduler may place pods on it again"
            return Preview(
                summary=summary,
                requests=kube.sent_without_dry_run(),
                diff=unified_diff(spec_view(node), spec_view(after), str(target)),
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
            done = "cordoned" if self.unschedulable else "uncordoned"
            if is_cordoned(node) == self.unschedulable:
                state = "cordoned" if self.unschedulable else "schedulable"
                return Outcome(
                    ok=True,
                    message=f"{target} is already {state}; nothing sent",
                    result={"skipped": True, "unschedulable": self.unschedulable},
                )
            patch_unschedulable(kube, target, self.unschedulable, dry_run=False)
            return Outcome(
                ok=True,
                message=f"{target} {done}",
                requests=kube.writes,
                responses=kube.answers,
                result={"unschedulable": self.unschedulable},
            )


def is_cordoned(node: dict) -> bool:
    return bool((node.get("spec") or {}).get("unschedulable"))


def patch_unschedulable(
    kube: KubeSession, target: Entity, unschedulable: bool, *, dry_run: bool
) -> dict:
    kwargs: dict[str, Any] = {
        "field_manager": FIELD_MANAGER,
        "_content_type": STRATEGIC_MERGE_PATCH,
    }
    if dry_run:
        kwargs["dry_run"] = "All"
    return kube.read(
        kube.core.patch_node,
        target.name,
        {"spec": {"unschedulable": unschedulable}},
        doing="patch nodes",
        **kwargs,
    )


class CordonNode(Cordon):
    name = "cordon-node"
    unschedulable = True


ACTION = CordonNode()

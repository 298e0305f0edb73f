"""The remediation catalogue (TAXONOMY.md actions): one module per action, each exposing `ACTION`.

`CATALOGUE` maps every action name of the taxonomy to its action object; `get(name)` is the one
way the assistant looks an action up. The contract (ActionContext, Preview, Outcome, ActionError,
ActionConflict) is in `base.py`.
"""

from __future__ import annotations

from . import (
    cordon_node,
    delete_pod,
    drain_node,
    none,
    patch_resources,
    rollout_restart,
    rollout_undo,
    scale_deployment,
    silence_alert,
    uncordon_node,
)
from .base import Action, ActionConflict, ActionContext, ActionError, Outcome, Preview

__all__ = [
    "CATALOGUE",
    "Action",
    "ActionConflict",
    "ActionContext",
    "ActionError",
    "Outcome",
    "Preview",
    "expire_silence",
    "get",
]

# An explicit list, in TAXONOMY.md's order.
CATALOGUE: dict[str, Action] = {
    module.ACTION.name: module.ACTION
    for module in (
        rollout_undo,
        rollout_restart,
        scale_deployment,
        delete_pod,
        cordon_node,
        uncordon_node,
        drain_node,
        patch_resources,
        silence_alert,
        none,
    )
}

expire_silence = silence_alert.expire_silence


def get(name: str) -> Action:
    """The action called `name`; ActionError naming the catalogue for anything else."""
    try:
        return CATALOGUE[name]
    except (KeyError, TypeError):
        raise ActionError(
            f"unknown action {name!r}; the catalogue has: {', '.join(CATALOGUE)}"
        ) from None

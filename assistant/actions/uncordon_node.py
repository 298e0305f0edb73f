"""uncordon-node: let the scheduler place pods on a Node again (`kubectl uncordon X`).

The strategic merge patch `{"spec": {"unschedulable": false}}`; everything else is cordon-node's
(see cordon_node.py): fingerprint by uid, nothing sent when the Node is already schedulable.
"""

from __future__ import annotations

from .cordon_node import Cordon


class UncordonNode(Cordon):
    name = "uncordon-node"
    unschedulable = False


ACTION = UncordonNode()

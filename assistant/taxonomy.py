"""Root-cause categories and remediation actions: the contract of TAXONOMY.md (never rename).

The API returns these identifiers, scenarios expect them and evaluation scores them, so they live
in one place that the loader, the rules and the action catalogue all import.
"""

from __future__ import annotations

# category -> the entity kinds its root cause can be
CATEGORIES: dict[str, frozenset[str]] = {
    "bad-deploy": frozenset({"Deployment", "StatefulSet"}),
    "gpu-hardware-fault": frozenset({"Node"}),
    "gpu-memory-exhaustion": frozenset({"Deployment"}),
    "kv-cache-saturation": frozenset({"Deployment"}),
    "traffic-surge": frozenset({"Deployment", "Service"}),
    "oom-killed": frozenset({"Deployment"}),
    "crash-loop": frozenset({"Deployment"}),
    "image-pull-failure": frozenset({"Deployment"}),
    "node-failure": frozenset({"Node"}),
    "gpu-thermal-throttle": frozenset({"Node"}),
    "upstream-rate-limit": frozenset({"Service"}),
    "dependency-failure": frozenset({"Deployment", "Service"}),
    "unknown": frozenset(),  # the alert's own entity, whatever its kind
}

# action -> (target kind or None, parameter names)
ACTIONS: dict[str, tuple[str | None, frozenset[str]]] = {
    "rollout-undo": ("Deployment", frozenset({"to_revision"})),
    "rollout-restart": ("Deployment", frozenset()),
    "scale-deployment": ("Deployment", frozenset({"replicas"})),
    "delete-pod": ("Pod", frozenset()),
    "cordon-node": ("Node", frozenset()),
    "uncordon-node": ("Node", frozenset()),
    "drain-node": ("Node", frozenset({"grace_seconds"})),
    "patch-resources": ("Deployment", frozenset({"container", "requests", "limits"})),
    "silence-alert": ("Alertmanager", frozenset({"matchers", "duration", "comment"})),
    "none": (None, frozenset({"steps"})),
}

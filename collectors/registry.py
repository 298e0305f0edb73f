"""The collectors that run for every incident: an explicit list, no discovery magic.

Each name is a module of this package exposing `NAME` and `collect(ctx) -> list[EvidenceDraft]`
(collectors/base.py). The name is also the `collector` value the API reports.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

COLLECTORS: tuple[str, ...] = ("prometheus", "kubernetes", "logs", "gpu", "deploys")


def collector_named(name: str) -> ModuleType:
    if name not in COLLECTORS:
        raise ValueError(f"unknown collector {name!r}; known: {', '.join(COLLECTORS)}")
    return import_module(f"collectors.{name}")

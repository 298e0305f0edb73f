"""The collectors that run for every incident, in order. An explicit list: no discovery magic.

Each entry is a module exposing `NAME` and `collect(incident) -> list[EvidenceDraft]`; the
collectors issue adds Prometheus, Kubernetes, logs, GPU and deploys here.
"""

from __future__ import annotations

COLLECTORS: list = []

"""Deploys collector: the changes before the symptom, from CI/CD and from Kubernetes rollouts.

CI/CD reports through `POST /api/v1/deploys` at any time, often long before an incident; the
Kubernetes API knows rollouts nobody reported (a `kubectl apply` by hand). Both are merged into
one list of changes per workload, newest first, so "what changed?" has one answer.
"""

from __future__ import annotations

from datetime import datetime

from incidents.models import Cluster

from .base import CollectionContext, Entity, EvidenceDraft
from .models import DeployEvent
from .sources import kubernetes_api_client, kubernetes_error

NAME = "deploys"
REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"


def collect(ctx: CollectionContext) -> list[EvidenceDraft]:
    changes = reported_deploys(ctx) + rollouts(ctx)
    by_workload: dict[Entity, list[dict]] = {}
    for entity, change in changes:
        by_workload.setdefault(entity, []).append(change)
    drafts = []
    for entity, items in sorted(by_workload.items()):
        items.sort(key=lambda c: c["at"], reverse=True)
        latest = items[0]
        drafts.append(
            EvidenceDraft(
                kind="deploys",
                title=f"{len(items)} change(s) to {entity}; latest {latest['version'] or latest['source']} at {latest['at']}",
                entity=entity,
                data={"changes": items, "first_alert_at": ctx.window.first_alert_at.isoformat()},
            )
        )
    return drafts


def _namespaces(ctx: CollectionContext) -> set[str]:
    return set(ctx.scope.namespaces) | {e.namespace for e in ctx.scope.entities() if e.namespace}


def reported_deploys(ctx: CollectionContext) -> list[tuple[Entity, dict]]:
    """CI/CD events in the window, in the namespaces in scope (all of them if none is known).

    Deploys of other workloads in the same namespace are kept, marked, because a dependency's
    change can be the cause; deploys in other namespaces are left out: they are distractors.
    """
    cluster = Cluster.objects.filter(name=ctx.cluster.name).first()
    if cluster is None:
        return []
    events = DeployEvent.objects.filter(
        cluster=cluster, at__gte=ctx.window.start, at__lte=ctx.window.end
    )
    namespaces = _namespaces(ctx)
    if namespaces:
        events = events.filter(namespace__in=namespaces)
    workloads = {(w.namespace or "", w.name): w for w in ctx.scope.workloads()}
    found = []
    for event in events:
        workload = workloads.get((event.namespace, event.service))
        entity = workload or Entity("Deployment", event.namespace or None, event.service)
        found.append((entity, _deploy_change(event, ctx, in_scope=workload is not None)))
    return found


def _deploy_change(event: DeployEvent, ctx: CollectionContext, *, in_scope: bool) -> dict:
    return {
        "source": "ci",
        "at": event.at.isoformat(),
        "version": event.version,
        "previous_version": event.previous_version,
        "model": event.model,
        "author": event.author,
        "description": event.description,
        "url": event.url,
        "workload_in_scope": in_scope,
        "before_alert": event.at <= ctx.window.first_alert_at,
    }


def rollouts(ctx: CollectionContext) -> list[tuple[Entity, dict]]:
    """ReplicaSets of the Deployments in scope created in the window: each is a rollout."""
    deployments = ctx.scope.deployments
    if not deployments or not ctx.cluster.has_kubernetes:
        return []
    from kubernetes import client

    apps = client.AppsV1Api(kubernetes_api_client(ctx.cluster, ctx.timeout))
    found = []
    for deployment in deployments:
        try:
            replica_sets = apps.list_namespaced_replica_set(
                deployment.namespace, _request_timeout=ctx.timeout
            ).items
        except Exception as exc:
            raise kubernetes_error(exc, f"list replicasets in {deployment.namespace}") from exc
        for rs in replica_sets:
            owners = rs.metadata.owner_references or []
            if not any(o.kind == "Deployment" and o.name == deployment.name for o in owners):
                continue
            created: datetime = rs.metadata.creation_timestamp
            if created is None or not (ctx.window.start <= created <= ctx.window.end):
                continue
            annotations = rs.metadata.annotations or {}
            images = (
                [c.image for c in rs.spec.template.spec.containers]
                if rs.spec and rs.spec.template
                else []
            )
            found.append(
                (
                    deployment,
                    {
                        "source": "kubernetes",
                        "at": created.isoformat(),
                        "version": ", ".join(images),
                        "revision": annotations.get(REVISION, ""),
                        "replicaset": rs.metadata.name,
                        "change_cause": annotations.get(CHANGE_CAUSE, ""),
                        "before_alert": created <= ctx.window.first_alert_at,
                    },
                )
            )
    return found

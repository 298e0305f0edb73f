"""The default Cluster comes from the environment; others are managed in the admin."""

from __future__ import annotations

from django.conf import settings

from .models import Cluster


def default_cluster() -> Cluster:
    """Create the default cluster on first use, and keep it in step with the environment."""
    wanted = {
        "prometheus_url": settings.VIGIL_PROMETHEUS_URL,
        "alertmanager_url": settings.VIGIL_ALERTMANAGER_URL,
        "loki_url": settings.VIGIL_LOKI_URL,
        "kubeconfig_path": settings.KUBECONFIG,
    }
    cluster, created = Cluster.objects.get_or_create(
        name=settings.VIGIL_CLUSTER_NAME, defaults=wanted
    )
    if not created:
        changed = [f for f, v in wanted.items() if v and getattr(cluster, f) != v]
        for field in changed:
            setattr(cluster, field, wanted[field])
        if changed:
            cluster.save(update_fields=changed)
    return cluster

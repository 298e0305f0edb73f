"""Evidence: what a collector found (or why it could not), tagged with the entity it is about."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Evidence(models.Model):
    class Status(models.TextChoices):
        OK = "ok"
        FAILED = "failed"

    incident = models.ForeignKey(
        "incidents.Incident", on_delete=models.CASCADE, related_name="evidence"
    )
    collector = models.CharField(
        max_length=50, help_text="Module name: prometheus, kubernetes, logs…"
    )
    kind = models.CharField(max_length=50)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    reason = models.TextField(blank=True)
    entity_kind = models.CharField(max_length=50, blank=True)
    entity_namespace = models.CharField(max_length=253, blank=True)
    entity_name = models.CharField(max_length=253, blank=True)
    title = models.CharField(max_length=500)
    data = models.JSONField(default=dict, blank=True)
    collected_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["collected_at", "id"]
        verbose_name_plural = "evidence"
        indexes = [
            models.Index(fields=["incident", "collector"], name="evidence_incident_collector")
        ]

    def __str__(self) -> str:
        return f"{self.collector}/{self.kind}: {self.title}"

    @property
    def entity(self) -> dict | None:
        if not self.entity_kind:
            return None
        return {
            "kind": self.entity_kind,
            "namespace": self.entity_namespace or None,
            "name": self.entity_name,
        }


class DeployEvent(models.Model):
    """A change CI/CD reported (`POST /api/v1/deploys`): evidence for bad-deploy hypotheses."""

    cluster = models.ForeignKey(
        "incidents.Cluster", on_delete=models.PROTECT, related_name="deploys"
    )
    integration = models.ForeignKey(
        "incidents.Integration", on_delete=models.SET_NULL, null=True, related_name="deploys"
    )
    service = models.CharField(max_length=253, help_text="The Deployment or StatefulSet name.")
    namespace = models.CharField(max_length=253, blank=True)
    version = models.CharField(max_length=500)
    previous_version = models.CharField(max_length=500, blank=True)
    model = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(default=timezone.now)
    author = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    url = models.URLField(max_length=2000, blank=True)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(
                fields=["cluster", "namespace", "service", "-at"], name="deploy_service_at"
            )
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service} {self.version}"


class GpuSnapshot(models.Model):
    """What the NVML agent read on one node (`POST /api/v1/gpu-snapshots`).

    Node-local facts DCGM may not export (Xid events as they happen, row-remap state, clock-event
    reasons by name) for GPU hypotheses; `gpus` keeps the agent's per-GPU dicts as validated.
    """

    cluster = models.ForeignKey(
        "incidents.Cluster", on_delete=models.PROTECT, related_name="gpu_snapshots"
    )
    integration = models.ForeignKey(
        "incidents.Integration",
        on_delete=models.SET_NULL,
        null=True,
        related_name="gpu_snapshots",
    )
    node = models.CharField(max_length=253, help_text="The Kubernetes Node name.")
    taken_at = models.DateTimeField(help_text="When the agent read NVML.")
    received_at = models.DateTimeField(default=timezone.now)
    gpus = models.JSONField(
        default=list,
        blank=True,
        help_text="One dict per GPU: index, uuid, name, temperature_c, power_w, ECC, Xids…",
    )
    driver_version = models.CharField(max_length=80, blank=True)
    cuda_version = models.CharField(max_length=20, blank=True)
    agent_version = models.CharField(max_length=40, blank=True)

    class Meta:
        ordering = ["-taken_at", "-id"]
        indexes = [
            models.Index(fields=["cluster", "node", "-taken_at"], name="gpu_snapshot_node_taken")
        ]

    def __str__(self) -> str:
        return f"{self.node} @ {self.taken_at:%Y-%m-%d %H:%M:%S} ({self.gpu_count} GPUs)"

    @property
    def gpu_count(self) -> int:
        return len(self.gpus or [])

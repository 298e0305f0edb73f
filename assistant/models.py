"""Analyses of incidents and the remediation proposals they carry."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Analysis(models.Model):
    """One run of the assistant over an incident's evidence: a draft for an engineer to review."""

    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        FAILED = "failed"

    class Source(models.TextChoices):
        RULES = "rules"
        LLM = "llm"

    incident = models.ForeignKey(
        "incidents.Incident", on_delete=models.CASCADE, related_name="analyses"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.RULES)
    summary = models.TextField(blank=True)
    # Ranked: [{category, entity: {kind, namespace, name}, confidence, evidence: [ids], explanation}]
    hypotheses = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "analyses"
        indexes = [
            models.Index(fields=["incident", "-created_at"], name="analysis_incident_newest")
        ]

    def __str__(self) -> str:
        return f"analysis {self.pk} of incident {self.incident_id} ({self.status})"


class ActionProposal(models.Model):
    """A remediation from the catalogue with a concrete target; nothing runs without approval."""

    class Status(models.TextChoices):
        PROPOSED = "proposed"

    incident = models.ForeignKey(
        "incidents.Incident", on_delete=models.CASCADE, related_name="actions"
    )
    analysis = models.ForeignKey(
        Analysis, on_delete=models.CASCADE, null=True, blank=True, related_name="actions"
    )
    rank = models.PositiveSmallIntegerField(default=0)
    action = models.CharField(max_length=40)
    target_kind = models.CharField(max_length=50, blank=True)
    target_namespace = models.CharField(max_length=253, blank=True)
    target_name = models.CharField(max_length=253, blank=True)
    params = models.JSONField(default=dict, blank=True)
    rationale = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PROPOSED)
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        help_text="Empty when the assistant proposed it.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["rank", "id"]

    def __str__(self) -> str:
        return f"{self.action} {self.target_kind} {self.target_name}"

    @property
    def target(self) -> dict | None:
        if not self.target_kind:
            return None
        return {
            "kind": self.target_kind,
            "namespace": self.target_namespace or None,
            "name": self.target_name,
        }

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

    class LLMStatus(models.TextChoices):
        OFF = "off", "no LLM configured"
        PENDING = "pending", "narrative being written"
        OK = "ok", "narrative written"
        FALLBACK = "fallback", "LLM failed: the deterministic draft stands"

    class ReviewStatus(models.TextChoices):
        DRAFT = "draft"
        APPROVED = "approved"
        REJECTED = "rejected"

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

    # The deterministic draft, kept even when the LLM rewrites summary and ranking: the fallback,
    # and the baseline that shows whether the LLM changed the top hypothesis.
    rules_summary = models.TextField(blank=True)
    rules_hypotheses = models.JSONField(default=list, blank=True)

    # The LLM narrative (assistant/llm/), when one is configured.
    llm_status = models.CharField(
        max_length=10, choices=LLMStatus.choices, default=LLMStatus.OFF, blank=True
    )
    llm_error = models.TextField(blank=True, help_text="Why the deterministic draft stands.")
    llm_started_at = models.DateTimeField(
        null=True, blank=True, help_text="When a worker claimed the narrative (one call at a time)."
    )
    llm_dropped = models.JSONField(
        default=list, blank=True, help_text="What the code check removed from the LLM's answer."
    )
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="The prompt as counted by our tokenizer, before sending."
    )
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)

    # Human review: a draft until a responder approves or rejects it.
    review_status = models.CharField(
        max_length=10, choices=ReviewStatus.choices, default=ReviewStatus.DRAFT
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="reviewed_analyses",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_reason = models.TextField(blank=True, help_text="Why it was rejected.")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "analyses"
        indexes = [
            models.Index(fields=["incident", "-created_at"], name="analysis_incident_newest")
        ]

    def __str__(self) -> str:
        return f"analysis {self.pk} of incident {self.incident_id} ({self.status})"


class SummaryRevision(models.Model):
    """One version of an analysis's summary: the rules' draft, the LLM's, then each human edit.

    Versions are never changed or deleted, so any two can be diffed; the Analysis's `summary` is
    the newest one's text.
    """

    class Source(models.TextChoices):
        RULES = "rules"
        LLM = "llm"
        EDIT = "edit"

    analysis = models.ForeignKey(Analysis, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    text = models.TextField()
    source = models.CharField(max_length=10, choices=Source.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        help_text="Empty when the assistant wrote it.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["analysis", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["analysis", "number"], name="summary_revision_number_unique"
            )
        ]

    def __str__(self) -> str:
        return f"summary v{self.number} of analysis {self.analysis_id} ({self.source})"


class ActionProposal(models.Model):
    """A remediation from the catalogue with a concrete target; nothing runs without approval.

    proposed (by the assistant, or added by an engineer) → previewed (a server-side dry run) →
    approved or rejected → executing (a Celery task) → succeeded or failed; an approved action
    may be cancelled before it runs. assistant/remediation.py owns every transition.
    """

    class Status(models.TextChoices):
        PROPOSED = "proposed"
        PREVIEWED = "previewed"
        APPROVED = "approved"
        REJECTED = "rejected"
        CANCELLED = "cancelled"
        EXECUTING = "executing"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

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
    # Whoever last changed the parameters is, for four eyes, a requester too.
    edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    # The last dry run: {summary, requests, diff, fingerprint}; error when it could not run.
    preview = models.JSONField(default=dict, blank=True)
    preview_error = models.TextField(blank=True)
    previewed_at = models.DateTimeField(null=True, blank=True)
    previewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who approved, rejected or cancelled it.",
    )
    reason = models.TextField(blank=True, help_text="Why it was rejected or cancelled.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # {ok, message, requests, responses, result}: the API's answer, kept for the audit.
    outcome = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["rank", "id"]
        indexes = [models.Index(fields=["status", "updated_at"], name="action_status_updated")]

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


class ActionEvent(models.Model):
    """The audit trail of one action: who did what, when, with the exact requests sent.

    Append-only; the audit pages read it. The incident timeline gets a readable line for the
    same steps, this keeps the detail.
    """

    class Kind(models.TextChoices):
        PROPOSED = "proposed"
        ADDED = "added"
        EDITED = "edited"
        PREVIEWED = "previewed"
        PREVIEW_FAILED = "preview_failed"
        APPROVED = "approved"
        REJECTED = "rejected"
        CANCELLED = "cancelled"
        EXECUTING = "executing"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SILENCE_EXPIRED = "silence_expired"

    action = models.ForeignKey(ActionProposal, on_delete=models.CASCADE, related_name="events")
    incident = models.ForeignKey(
        "incidents.Incident", on_delete=models.CASCADE, related_name="action_events"
    )
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    actor = models.CharField(max_length=150, help_text="A username, or the system that acted.")
    detail = models.TextField(blank=True)
    requests = models.JSONField(default=list, blank=True, help_text="Exactly what was sent.")
    responses = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["incident", "at"], name="action_event_incident_at"),
            models.Index(fields=["-at"], name="action_event_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of action {self.action_id} by {self.actor}"

"""Incidents and everything that feeds them: clusters, integrations, deliveries, alerts, timeline."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone


def group_hash(group_key: str) -> str:
    """Alertmanager group keys can be long; indexes and constraints use their SHA-256."""
    return hashlib.sha256(group_key.encode()).hexdigest()


SEVERITY_RANK = {"critical": 5, "high": 4, "error": 4, "warning": 3, "low": 2, "info": 1}


def severity_rank(severity: str) -> int:
    """Unknown severities sort below every known one, above none."""
    if not severity:
        return 0
    return SEVERITY_RANK.get(severity.lower(), 1)


class Cluster(models.Model):
    """The evidence sources of one Kubernetes cluster; the environment defines the default one."""

    name = models.SlugField(max_length=100, unique=True)
    prometheus_url = models.URLField(blank=True)
    alertmanager_url = models.URLField(blank=True)
    loki_url = models.URLField(blank=True)
    kube_in_cluster = models.BooleanField(
        default=False, help_text="Use the service account Vigil runs under."
    )
    kubeconfig_path = models.CharField(max_length=500, blank=True)
    kubeconfig = models.TextField(blank=True, help_text="Kubeconfig content, if not a path.")
    kube_context = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Integration(models.Model):
    """A machine caller (Alertmanager, CI/CD, the NVML agent) and its bearer token's hash."""

    class Kind(models.TextChoices):
        ALERTMANAGER = "alertmanager"
        DEPLOY = "deploy"
        AGENT = "agent"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.ALERTMANAGER)
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="integrations")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=12, editable=False, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class ApiToken(models.Model):
    """A user's API key (`Authorization: Token <key>`), stored as its SHA-256."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    key_prefix = models.CharField(max_length=12, editable=False, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} {self.key_prefix}…"


class WebhookDelivery(models.Model):
    """One request to a hook, stored before anything else happens: the source of truth."""

    class Status(models.TextChoices):
        RECEIVED = "received"
        PROCESSED = "processed"
        REJECTED = "rejected"
        FAILED = "failed"

    integration = models.ForeignKey(
        Integration, on_delete=models.PROTECT, related_name="deliveries"
    )
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    body = models.BinaryField()
    content_type = models.CharField(max_length=200, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    alert_count = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["status", "received_at"], name="delivery_status_received")]

    def __str__(self) -> str:
        return f"delivery {self.pk} {self.status}"


class Incident(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        MITIGATED = "mitigated"
        RESOLVED = "resolved"

    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="incidents")
    title = models.CharField(max_length=500)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    severity = models.CharField(max_length=30, blank=True)
    severity_rank = models.PositiveSmallIntegerField(default=0)
    service = models.CharField(max_length=200, blank=True)
    namespace = models.CharField(max_length=200, blank=True)
    grouping_key = models.TextField(help_text="Alertmanager groupKey of the group that opened it.")
    group_hash = models.CharField(max_length=64, help_text="SHA-256 of grouping_key, for indexes.")
    correlation_key = models.CharField(max_length=500, blank=True)
    labels = models.JSONField(default=dict, blank=True, help_text="Labels common to its alerts.")
    opened_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    mitigated_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)
    alert_count = models.PositiveIntegerField(default=0)
    firing_count = models.PositiveIntegerField(default=0)
    collection_requested_at = models.DateTimeField(null=True, blank=True)
    collection_started_at = models.DateTimeField(null=True, blank=True)
    collection_finished_at = models.DateTimeField(null=True, blank=True)
    scope = models.JSONField(
        default=dict, blank=True, help_text="Entities in scope (collectors.base.Scope)."
    )

    class Meta:
        ordering = ["-opened_at", "-id"]
        permissions = [
            ("respond_incident", "Can acknowledge, resolve and review incidents"),
            ("approve_action", "Can approve remediation actions"),
        ]
        constraints = [
            # One open incident per Alertmanager group: concurrent notifications cannot split it.
            # group_hash first, so that no other index can serve the group's lookup: with
            # cluster first it tied with the cluster's own index (and `incident_correlation`)
            # on a near-empty table, and a generic plan made then (ingest's statements are
            # prepared) read every incident of the cluster for good.
            models.UniqueConstraint(
                fields=["group_hash", "cluster"],
                condition=~Q(status="resolved"),
                name="one_open_incident_per_group",
            ),
        ]
        indexes = [
            models.Index(fields=["-opened_at", "-id"], name="incident_newest"),
            models.Index(fields=["status", "-opened_at"], name="incident_status_newest"),
            models.Index(fields=["cluster", "correlation_key"], name="incident_correlation"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    def get_absolute_url(self) -> str:
        return reverse("incident-detail", args=[self.pk])

    def get_timeline_url(self) -> str:
        return reverse("incident-timeline", args=[self.pk])

    @property
    def is_open(self) -> bool:
        return self.status != self.Status.RESOLVED


class Alert(models.Model):
    """One alert instance: `(fingerprint, startsAt)`; a re-fire after resolution is a new one."""

    class Status(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    # No single-column indexes on these two: the unique index leads with cluster,
    # `alert_incident_status` with incident, and every index is one more write for each
    # alert a storm inserts (Meta.indexes).
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="+", db_index=False)
    incident = models.ForeignKey(
        Incident, on_delete=models.CASCADE, related_name="alerts", db_index=False
    )
    fingerprint = models.CharField(max_length=64)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices)
    alertname = models.CharField(max_length=200, blank=True)
    labels = models.JSONField(default=dict)
    annotations = models.JSONField(default=dict, blank=True)
    generator_url = models.TextField(blank=True)
    group_hash = models.CharField(max_length=64, help_text="SHA-256 of the Alertmanager groupKey.")
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    notification_count = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-starts_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["cluster", "fingerprint", "starts_at"], name="one_row_per_alert_instance"
            ),
        ]
        indexes = [
            models.Index(fields=["incident", "status"], name="alert_incident_status"),
            # group_hash first: leading with cluster, it tied with the unique index for the
            # lookup of an instance on a near-empty table, and a generic plan made then (ingest's
            # statements are prepared, incidents.repeats) read every alert of the cluster.
            models.Index(fields=["group_hash", "cluster"], name="alert_group"),
        ]

    def __str__(self) -> str:
        return f"{self.alertname or self.fingerprint} {self.status}"


class TimelineEvent(models.Model):
    """Something that happened to an incident, with a permalink anchor `#event-<id>`."""

    class Kind(models.TextChoices):
        INCIDENT_OPENED = "incident_opened"
        INCIDENT_REOPENED = "incident_reopened"
        INCIDENT_ACKNOWLEDGED = "incident_acknowledged"
        INCIDENT_MITIGATED = "incident_mitigated"
        INCIDENT_RESOLVED = "incident_resolved"
        ALERT_FIRING = "alert_firing"
        ALERT_RESOLVED = "alert_resolved"
        COLLECTION_REQUESTED = "collection_requested"
        COLLECTION_STARTED = "collection_started"
        COLLECTION_FINISHED = "collection_finished"
        ANALYSIS_READY = "analysis_ready"
        ANALYSIS_FAILED = "analysis_failed"
        ANALYSIS_NARRATED = "analysis_narrated"
        ANALYSIS_FALLBACK = "analysis_fallback"
        ANALYSIS_APPROVED = "analysis_approved"
        ANALYSIS_EDITED = "analysis_edited"
        ANALYSIS_REJECTED = "analysis_rejected"
        ACTION_ADDED = "action_added"
        ACTION_EDITED = "action_edited"
        ACTION_PREVIEWED = "action_previewed"
        ACTION_APPROVED = "action_approved"
        ACTION_REJECTED = "action_rejected"
        ACTION_CANCELLED = "action_cancelled"
        ACTION_EXECUTING = "action_executing"
        ACTION_SUCCEEDED = "action_succeeded"
        ACTION_RETRYING = "action_retrying"
        ACTION_FAILED = "action_failed"
        SILENCE_EXPIRED = "silence_expired"
        SLACK_FAILED = "slack_failed"
        NOTE = "note"

    # `timeline_incident_at` leads with incident: no index of its own (one write less per line).
    incident = models.ForeignKey(
        Incident, on_delete=models.CASCADE, related_name="timeline", db_index=False
    )
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=40, choices=Kind.choices)
    actor = models.CharField(max_length=150, help_text="A username, or the system that acted.")
    summary = models.CharField(max_length=500)
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["incident", "at", "id"], name="timeline_incident_at")]

    def __str__(self) -> str:
        return f"{self.kind} {self.summary}"

    def get_absolute_url(self) -> str:
        """The permalink: the query parameter survives the login redirect, the fragment does not."""
        return f"{self.incident.get_timeline_url()}?event={self.pk}#{self.anchor}"

    @property
    def anchor(self) -> str:
        return f"event-{self.pk}"


class SlackThread(models.Model):
    """An incident's place in Slack: its channel, its parent message, and who may send for it.

    The parent message (posted for the first announcement) heads the thread every later update
    goes into, and is updated to show the current status. `lease_until` is a short claim, not a
    database lock held across HTTP calls: one task at a time sends an incident's messages, in
    timeline order, so the parent always exists before its replies.
    """

    incident = models.OneToOneField(Incident, on_delete=models.CASCADE, related_name="slack_thread")
    channel = models.CharField(
        max_length=100, blank=True, help_text="Empty in webhook mode, or when no route matched."
    )
    ts = models.CharField(
        max_length=40, blank=True, help_text="The parent message; empty until posted."
    )
    parent_event = models.ForeignKey(
        TimelineEvent,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The event whose permalink the parent's button opens.",
    )
    shown = models.CharField(
        max_length=64, blank=True, help_text="Digest of the parent as last posted or updated."
    )
    status = models.CharField(max_length=20, blank=True, help_text="The status the parent shows.")
    error = models.TextField(blank=True, help_text="Why the parent could not be posted or updated.")
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"slack thread {self.channel}/{self.ts or '-'} of incident {self.incident_id}"


class SlackMessage(models.Model):
    """What was sent to Slack for one timeline event: a redelivered task never posts it twice."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"
        SKIPPED = "skipped"

    event = models.OneToOneField(
        TimelineEvent, on_delete=models.CASCADE, related_name="slack_message"
    )
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="slack_messages")
    kind = models.CharField(max_length=30, help_text="Which announcement (slack.Announcement).")
    channel = models.CharField(max_length=100, blank=True)
    ts = models.CharField(max_length=40, blank=True)
    thread_ts = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    retry_at = models.DateTimeField(
        null=True, blank=True, help_text="Not to be tried again before (Retry-After, backoff)."
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "created_at"], name="slack_message_status")]

    def __str__(self) -> str:
        return f"slack {self.kind} for event {self.event_id} ({self.status})"


class SlackEventReceipt(models.Model):
    """One Events API callback, by Slack's `event_id`: a retried delivery is answered, not redone."""

    class Status(models.TextChoices):
        RECEIVED = "received"
        DONE = "done"
        FAILED = "failed"

    event_id = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=50)
    payload = models.JSONField(default=dict, help_text="The event (Slack's inner `event` object).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"slack {self.kind} {self.event_id} ({self.status})"

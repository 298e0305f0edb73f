"""The admin manages clusters and integrations; the rest is read-only for inspection."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .alertmanager import PayloadError
from .ingest import process_delivery
from .models import (
    Alert,
    ApiToken,
    Cluster,
    Incident,
    Integration,
    SlackEventReceipt,
    SlackMessage,
    SlackThread,
    TimelineEvent,
    WebhookDelivery,
)
from .tokens import INTEGRATION_PREFIX, display_prefix, hash_secret, new_secret


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "prometheus_url",
        "alertmanager_url",
        "kube_in_cluster",
        "kubeconfig_path",
    ]
    search_fields = ["name"]


def issue_integration_token(integration: Integration) -> str:
    """Give the integration a fresh token and return it: the only time it is ever visible."""
    token = new_secret(INTEGRATION_PREFIX)
    integration.token_hash = hash_secret(token)
    integration.token_prefix = display_prefix(token)
    return token


@admin.register(Integration)
class IntegrationAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "cluster", "token_prefix", "is_active", "last_used_at"]
    list_filter = ["kind", "cluster", "is_active"]
    readonly_fields = ["token_prefix", "created_at", "last_used_at"]
    actions = ["rotate_token"]

    def save_model(self, request: HttpRequest, obj: Integration, form, change: bool) -> None:
        token = None if change else issue_integration_token(obj)
        super().save_model(request, obj, form, change)
        if token:
            self._show_once(request, obj, token)

    @admin.action(description="Rotate token (the old one stops working)")
    def rotate_token(self, request: HttpRequest, queryset: QuerySet) -> None:
        for integration in queryset:
            token = issue_integration_token(integration)
            integration.save(update_fields=["token_hash", "token_prefix"])
            self._show_once(request, integration, token)

    def _show_once(self, request: HttpRequest, integration: Integration, token: str) -> None:
        messages.warning(
            request,
            f"Token for {integration.name}: {token} — copy it now, it will not be shown again.",
        )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "key_prefix", "created_at", "last_used_at"]
    readonly_fields = ["user", "key_prefix", "created_at", "last_used_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are created with `manage.py create_api_token`, which prints them once


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "integration",
        "received_at",
        "status",
        "alert_count",
        "attempts",
        "short_error",
    ]
    list_filter = ["status", "integration"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields if f.name != "body"] + [
        "body_text"
    ]
    exclude = ["body"]
    actions = ["reprocess"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="error")
    def short_error(self, obj: WebhookDelivery) -> str:
        return obj.error[:80]

    @admin.display(description="body")
    def body_text(self, obj: WebhookDelivery) -> str:
        return bytes(obj.body).decode("utf-8", "replace")

    @admin.action(description="Reprocess selected deliveries")
    def reprocess(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = rejected = 0
        for delivery in queryset.select_related("integration__cluster"):
            try:
                process_delivery(delivery)
                done += 1
            except PayloadError:
                rejected += 1
        messages.info(request, f"{done} processed, {rejected} rejected again.")


class TimelineInline(admin.TabularInline):
    model = TimelineEvent
    extra = 0
    fields = ["at", "kind", "actor", "summary"]
    readonly_fields = fields
    can_delete = False


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "status", "severity", "cluster", "opened_at", "alert_count"]
    list_filter = ["status", "severity", "cluster"]
    search_fields = ["title", "service", "namespace"]
    readonly_fields = ["grouping_key", "correlation_key", "opened_at", "updated_at"]
    inlines = [TimelineInline]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["alertname", "fingerprint", "status", "starts_at", "ends_at", "incident"]
    list_filter = ["status"]
    search_fields = ["alertname", "fingerprint"]
    raw_id_fields = ["incident"]


@admin.register(SlackThread)
class SlackThreadAdmin(admin.ModelAdmin):
    """Where each incident's Slack thread lives (channel + ts of the parent message)."""

    list_display = ("incident", "channel", "ts")
    search_fields = ("channel", "ts")
    raw_id_fields = ("incident",)


@admin.register(SlackMessage)
class SlackMessageAdmin(admin.ModelAdmin):
    """What was announced to Slack, and what failed: for answering "why did nobody get paged?"."""

    list_display = ("incident", "event", "status", "channel", "ts")
    list_filter = ("status",)
    raw_id_fields = ("incident", "event")


@admin.register(SlackEventReceipt)
class SlackEventReceiptAdmin(admin.ModelAdmin):
    list_display = ("event_id", "kind", "status")
    list_filter = ("kind", "status")

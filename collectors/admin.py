from django.contrib import admin

from .models import DeployEvent, Evidence


@admin.register(DeployEvent)
class DeployEventAdmin(admin.ModelAdmin):
    list_display = [
        "service",
        "namespace",
        "version",
        "previous_version",
        "at",
        "cluster",
        "author",
    ]
    list_filter = ["cluster", "namespace"]
    search_fields = ["service", "version", "author"]


@admin.register(Evidence)
class EvidenceAdmin(admin.ModelAdmin):
    list_display = [
        "incident",
        "collector",
        "kind",
        "status",
        "entity_kind",
        "entity_name",
        "title",
    ]
    list_filter = ["collector", "status"]
    raw_id_fields = ["incident"]

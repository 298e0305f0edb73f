from django.contrib import admin

from .models import DeployEvent, Evidence, GpuSnapshot


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


@admin.register(GpuSnapshot)
class GpuSnapshotAdmin(admin.ModelAdmin):
    list_display = ["node", "cluster", "taken_at", "gpu_count", "driver_version", "agent_version"]
    list_filter = ["cluster"]
    search_fields = ["node"]
    raw_id_fields = ["integration"]
    date_hierarchy = "taken_at"

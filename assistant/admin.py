"""Analyses in the admin: read what the assistant and the reviewers wrote, every summary version."""

from django.contrib import admin

from .models import Analysis, SummaryRevision


class SummaryRevisionInline(admin.TabularInline):
    """Versions are never changed or deleted: the history is the record."""

    model = SummaryRevision
    extra = 0
    fields = ("number", "source", "author", "created_at", "text")
    readonly_fields = fields
    can_delete = False
    ordering = ("number",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Analysis)
class AnalysisAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "incident",
        "status",
        "source",
        "llm_status",
        "review_status",
        "reviewed_by",
        "created_at",
    )
    list_filter = ("status", "source", "llm_status", "review_status")
    search_fields = ("summary", "incident__title")
    raw_id_fields = ("incident", "reviewed_by")
    readonly_fields = ("summary",)  # changed only through versions (assistant/review.py)
    inlines = [SummaryRevisionInline]

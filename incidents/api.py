"""Incident endpoints of the JSON API (mounted by vigil/api.py): session or user token auth."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from urllib.parse import urlencode

from django.db.models import Exists, OuterRef, QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError
from pydantic import BaseModel, ConfigDict

from collectors.models import Evidence

from . import permissions
from .models import Alert, Incident

router = Router(tags=["incidents"])


def _require_view(request: HttpRequest) -> None:
    if not permissions.can_view(request.user):
        raise HttpError(403, "You have no role in Vigil; ask an administrator for one.")


class EntityOut(Schema):
    kind: str
    namespace: str | None
    name: str


class AlertOut(BaseModel):
    """A plain pydantic model, not a ninja Schema, read from the dicts `resolve_alerts` makes.

    A Schema wraps every object it validates in ninja's DjangoGetter and reads each field through
    it in Python, and the alerts were Alert instances, each with two timestamps no field shows.
    An incident from a storm holds thousands of alerts: for 4,209, the answer took 294-364 ms of
    CPU in-process that way and 195-210 ms this way, byte for byte the same (docs/performance.md).
    pydantic validates the dicts itself, by the aliases (the column names); the fields are
    written under their names."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    fingerprint: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: datetime = Field(..., alias="starts_at")
    endsAt: datetime | None = Field(None, alias="ends_at")
    generatorURL: str = Field("", alias="generator_url")
    notification_count: int


# What AlertOut reads of an alert: its fields, by their aliases.
ALERT_OUT_COLUMNS = tuple(field.alias or name for name, field in AlertOut.model_fields.items())


class EvidenceOut(Schema):
    id: int
    collector: str
    kind: str
    status: str
    reason: str
    entity: EntityOut | None
    title: str


class IncidentSummary(Schema):
    id: int
    title: str
    status: str
    severity: str
    service: str
    namespace: str | None
    cluster: str
    opened_at: datetime
    acknowledged_at: datetime | None
    mitigated_at: datetime | None
    resolved_at: datetime | None
    updated_at: datetime
    alert_count: int
    firing_count: int
    url: str

    @staticmethod
    def resolve_cluster(obj: Incident) -> str:
        return obj.cluster.name

    @staticmethod
    def resolve_namespace(obj: Incident) -> str | None:
        return obj.namespace or None

    @staticmethod
    def resolve_url(obj: Incident, context: dict) -> str:
        return context["request"].build_absolute_uri(obj.get_absolute_url())


class IncidentDetail(IncidentSummary):
    labels: dict[str, str]
    timeline_url: str
    alerts: list[AlertOut]
    evidence: list[EvidenceOut]
    analysis: dict | None = None

    @staticmethod
    def resolve_timeline_url(obj: Incident, context: dict) -> str:
        return context["request"].build_absolute_uri(obj.get_timeline_url())

    @staticmethod
    def resolve_alerts(obj: Incident) -> list[dict]:
        return list(obj.alerts.values(*ALERT_OUT_COLUMNS))

    @staticmethod
    def resolve_evidence(obj: Incident) -> list[Evidence]:
        return list(obj.evidence.all())

    @staticmethod
    def resolve_analysis(obj: Incident) -> dict | None:
        """The latest analysis; null until analysis starts (DESIGN)."""
        from assistant.presentation import analysis_json

        return analysis_json(obj)


class IncidentPage(Schema):
    count: int
    next: str | None
    previous: str | None
    results: list[IncidentSummary]


class IncidentFilters(Schema):
    status: Literal["open", "acknowledged", "mitigated", "resolved"] | None = None
    severity: str | None = None
    label: list[str] = Field(default_factory=list, description="key:value, repeatable, ANDed")
    # Bounded so the offset fits the database's integers (a page past 64 bits was a 500).
    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(50, ge=1, le=200)


def parse_label_filters(values: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, wanted = value.partition(":")
        if not sep or not key:
            raise HttpError(400, f"label: {value!r} must be key:value")
        pairs.append((key, wanted))
    return pairs


def filter_incidents(
    queryset: QuerySet, *, status: str | None, severity: str | None, labels: list[tuple[str, str]]
) -> QuerySet:
    """Shared by the page and the API: each label pair must match some alert of the incident."""
    if status:
        queryset = queryset.filter(status=status)
    if severity:
        queryset = queryset.filter(severity=severity)
    for key, wanted in labels:
        # A key lookup built from an expression, so label names with "__" stay literal; the cast
        # makes SQLite compare text rather than JSON.
        value = Cast(KeyTextTransform(key, "labels"), TextField())
        matching = Alert.objects.annotate(_v=value).filter(incident=OuterRef("pk"), _v=wanted)
        queryset = queryset.filter(Exists(matching))
    return queryset


def _page_url(request: HttpRequest, page: int) -> str:
    params = request.GET.copy()
    params["page"] = str(page)
    return request.build_absolute_uri(
        f"{request.path}?{urlencode(list(params.lists()), doseq=True)}"
    )


@router.get("/incidents", response=IncidentPage)
def list_incidents(request: HttpRequest, filters: Query[IncidentFilters]) -> dict:
    """Incidents, newest first."""
    _require_view(request)
    queryset = filter_incidents(
        Incident.objects.select_related("cluster"),
        status=filters.status,
        severity=filters.severity,
        labels=parse_label_filters(filters.label),
    ).order_by("-opened_at", "-id")
    count = queryset.count()
    start = (filters.page - 1) * filters.page_size
    results = list(queryset[start : start + filters.page_size])
    return {
        "count": count,
        "next": _page_url(request, filters.page + 1) if start + filters.page_size < count else None,
        "previous": _page_url(request, filters.page - 1) if filters.page > 1 else None,
        "results": results,
    }


@router.get("/incidents/{incident_id}", response=IncidentDetail)
def get_incident(request: HttpRequest, incident_id: int) -> Incident:
    """One incident with its alerts, evidence and analysis."""
    _require_view(request)
    incident = Incident.objects.select_related("cluster").filter(pk=incident_id).first()
    if incident is None:
        raise HttpError(404, "No such incident")
    return incident

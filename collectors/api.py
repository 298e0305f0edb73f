"""Machine endpoints, each with its own integration kind's bearer token.

`POST /api/v1/deploys`: change events from CI/CD (`deploy`); `POST /api/v1/gpu-snapshots`: what
the NVML node agent read (`agent`).

Both are idempotent where the sender names the moment: a deploy with `at` that is already
recorded (every field the same) and a snapshot of a node with a `taken_at` already stored answer
200 with the stored one instead of 201 with a copy, so a sender retrying after a timeout records
nothing twice. Without a time, each request is a new event "now".

Free text (a deploy's description, url and author) is redacted (collectors.redaction) before it is
stored: CI systems paste URLs with tokens in them.

Times that are not representable in UTC (9999-12-31T23:59:59-23:59) are refused naming the
field (422), never a 500; NUL characters, which PostgreSQL cannot store, are refused with 400
before the view (vigil/middleware.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Router, Schema, Status
from ninja.security import HttpBearer
from pydantic import AfterValidator, StringConstraints, field_validator

from incidents.hooks import authenticate_integration
from incidents.models import Integration

from .models import DeployEvent, GpuSnapshot
from .redaction import redact_text


class IntegrationBearer(HttpBearer):
    """An active integration of one kind; user keys and other kinds' tokens are refused."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def authenticate(self, request: HttpRequest, token: str) -> Integration | None:
        return authenticate_integration(request, self.kind)


def aware_or_now(moment: datetime | None) -> datetime:
    """Machines send times with or without an offset, or none at all: store them as UTC."""
    moment = moment or timezone.now()
    return timezone.make_aware(moment, UTC) if timezone.is_naive(moment) else moment


def _in_utc(moment: datetime) -> datetime:
    """Aware times as UTC (naive ones are UTC already, see aware_or_now)."""
    if timezone.is_naive(moment):
        return moment
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("is out of range once converted to UTC") from exc


Moment = Annotated[datetime, AfterValidator(_in_utc)]


def _redacted(text: str | None) -> str:
    return redact_text(text or "")[0]


router = Router(tags=["deploys"])


class DeployIn(Schema):
    service: str = Field(min_length=1, max_length=253, description="Deployment or StatefulSet name")
    namespace: str | None = Field(None, max_length=253)
    version: str = Field(min_length=1, max_length=500)
    previous_version: str | None = Field(None, max_length=500)
    model: str | None = Field(None, max_length=500)
    at: Moment | None = Field(None, description="RFC 3339; default now")
    author: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=10000)
    url: str | None = Field(None, max_length=2000)


class DeployOut(Schema):
    id: int
    cluster: str
    service: str
    namespace: str | None
    version: str
    at: datetime


@router.post(
    "/deploys",
    response={200: DeployOut, 201: DeployOut},
    auth=IntegrationBearer(Integration.Kind.DEPLOY),
)
def create_deploy(request: HttpRequest, body: DeployIn) -> Status:
    """Record a rollout so the assistant can line it up against the symptoms (201); the same
    event with the same `at` again answers 200 with the stored one."""
    integration: Integration = request.auth
    fields = {
        "cluster": integration.cluster,
        "service": body.service,
        "namespace": body.namespace or "",
        "version": body.version,
        "previous_version": body.previous_version or "",
        "model": body.model or "",
        "at": aware_or_now(body.at),
        "author": _redacted(body.author)[:200],
        "description": _redacted(body.description),
        "url": _redacted(body.url)[:2000],
    }
    event = DeployEvent.objects.filter(**fields).first() if body.at else None
    created = event is None
    if created:
        event = DeployEvent.objects.create(integration=integration, **fields)
    return Status(
        201 if created else 200,
        {
            "id": event.pk,
            "cluster": integration.cluster.name,
            "service": event.service,
            "namespace": event.namespace or None,
            "version": event.version,
            "at": event.at,
        },
    )


# Bounds: a snapshot is one node's GPUs, so anything far past these is a bug or an attack.
MAX_GPUS = 64
MAX_XID_EVENTS = 256
ShortText = Annotated[str, StringConstraints(max_length=64)]
Message = Annotated[str, StringConstraints(max_length=500)]
UINT64 = 2**64 - 1


class XidEventIn(Schema):
    code: int = Field(ge=0, le=100_000, description="Xid number (reference §3.1)")
    at: Moment = Field(description="When the agent received the event (RFC 3339)")


class GpuIn(Schema):
    """One GPU as NVML reports it; `None` means the query is not supported on this GPU."""

    index: int = Field(ge=0, le=255)
    uuid: str | None = Field(None, max_length=96)
    name: str | None = Field(None, max_length=200)
    temperature_c: int | None = Field(None, ge=-100, le=300)
    power_w: float | None = Field(None, ge=0, le=100_000)
    power_limit_w: float | None = Field(None, ge=0, le=100_000)
    utilization_pct: int | None = Field(None, ge=0, le=100)
    memory_utilization_pct: int | None = Field(None, ge=0, le=100)
    memory_used_bytes: int | None = Field(None, ge=0, le=UINT64)
    memory_total_bytes: int | None = Field(None, ge=0, le=UINT64)
    clocks_event_reasons: list[ShortText] | None = Field(
        None, max_length=32, description="Decoded names: SwPowerCap, HwSlowdown, …"
    )
    clocks_event_reasons_mask: int | None = Field(None, ge=0, le=UINT64)
    ecc_volatile_double_bit: int | None = Field(None, ge=0, le=UINT64)
    ecc_volatile_single_bit: int | None = Field(None, ge=0, le=UINT64)
    retired_pages_single_bit: int | None = Field(None, ge=0, le=UINT64)
    retired_pages_double_bit: int | None = Field(None, ge=0, le=UINT64)
    retired_pages_pending: bool | None = None
    remapped_rows_correctable: int | None = Field(None, ge=0, le=UINT64)
    remapped_rows_uncorrectable: int | None = Field(None, ge=0, le=UINT64)
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    xid_events: list[XidEventIn] | None = Field(
        None, max_length=MAX_XID_EVENTS, description="None: this GPU cannot report Xid events"
    )
    errors: dict[ShortText, Message] = Field(
        default_factory=dict,
        max_length=64,
        description="Queries that failed for a reason other than 'not supported' (e.g. GPU is lost)",
    )


class GpuSnapshotIn(Schema):
    node: str = Field(min_length=1, max_length=253, description="Kubernetes Node name")
    taken_at: Moment | None = Field(None, description="RFC 3339; default now")
    gpus: list[GpuIn] = Field(max_length=MAX_GPUS)
    driver_version: str | None = Field(None, max_length=80)
    cuda_version: str | None = Field(None, max_length=20)
    agent_version: str | None = Field(None, max_length=40)

    @field_validator("gpus")
    @classmethod
    def _indexes_are_unique(cls, gpus: list[GpuIn]) -> list[GpuIn]:
        """Two entries for one index would make 'GPU 3 is hot' ambiguous."""
        seen: set[int] = set()
        for gpu in gpus:
            if gpu.index in seen:
                raise ValueError(f"duplicate GPU index {gpu.index}")
            seen.add(gpu.index)
        return gpus


class GpuSnapshotOut(Schema):
    id: int
    node: str
    gpus: int


@router.post(
    "/gpu-snapshots",
    response={200: GpuSnapshotOut, 201: GpuSnapshotOut},
    auth=IntegrationBearer(Integration.Kind.AGENT),
    tags=["gpu"],
)
def create_gpu_snapshot(request: HttpRequest, body: GpuSnapshotIn) -> Status:
    """Keep a node's NVML reading so GPU hypotheses can cite Xids, ECC and throttling (201); a
    reading of the node with the same `taken_at` again answers 200 with the stored one."""
    integration: Integration = request.auth
    taken_at = aware_or_now(body.taken_at)
    if body.taken_at:
        stored = GpuSnapshot.objects.filter(
            cluster=integration.cluster, node=body.node, taken_at=taken_at
        ).first()
        if stored is not None:
            return Status(200, {"id": stored.pk, "node": stored.node, "gpus": stored.gpu_count})
    snapshot = GpuSnapshot.objects.create(
        cluster=integration.cluster,
        integration=integration,
        node=body.node,
        taken_at=taken_at,
        gpus=[gpu.model_dump(mode="json") for gpu in body.gpus],
        driver_version=body.driver_version or "",
        cuda_version=body.cuda_version or "",
        agent_version=body.agent_version or "",
    )
    return Status(201, {"id": snapshot.pk, "node": snapshot.node, "gpus": len(body.gpus)})

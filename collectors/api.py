"""`POST /api/v1/deploys`: change events from CI/CD, with a `deploy` integration's bearer token."""

from __future__ import annotations

from datetime import UTC, datetime

from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Router, Schema, Status
from ninja.security import HttpBearer

from incidents.hooks import authenticate_integration
from incidents.models import Integration

from .models import DeployEvent


class IntegrationBearer(HttpBearer):
    """An active integration of one kind; user keys and other kinds' tokens are refused."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def authenticate(self, request: HttpRequest, token: str) -> Integration | None:
        return authenticate_integration(request, self.kind)


router = Router(tags=["deploys"])


class DeployIn(Schema):
    service: str = Field(min_length=1, max_length=253, description="Deployment or StatefulSet name")
    namespace: str | None = Field(None, max_length=253)
    version: str = Field(min_length=1, max_length=500)
    previous_version: str | None = Field(None, max_length=500)
    model: str | None = Field(None, max_length=500)
    at: datetime | None = Field(None, description="RFC 3339; default now")
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


@router.post("/deploys", response={201: DeployOut}, auth=IntegrationBearer(Integration.Kind.DEPLOY))
def create_deploy(request: HttpRequest, body: DeployIn) -> Status:
    """Record a rollout so the assistant can line it up against the symptoms."""
    integration: Integration = request.auth
    at = body.at or timezone.now()
    if timezone.is_naive(at):
        at = timezone.make_aware(at, UTC)
    event = DeployEvent.objects.create(
        cluster=integration.cluster,
        integration=integration,
        service=body.service,
        namespace=body.namespace or "",
        version=body.version,
        previous_version=body.previous_version or "",
        model=body.model or "",
        at=at,
        author=body.author or "",
        description=body.description or "",
        url=body.url or "",
    )
    return Status(
        201,
        {
            "id": event.pk,
            "cluster": integration.cluster.name,
            "service": event.service,
            "namespace": event.namespace or None,
            "version": event.version,
            "at": event.at,
        },
    )

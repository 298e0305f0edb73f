"""`POST /hooks/alertmanager`: store the raw body first, then ingest.

Status codes follow Alertmanager's retry rules (it retries 5xx, drops 4xx and redirects):
401 bad token, 413 too large, 400 malformed (the delivery stays, marked rejected), 503 when the
database is unavailable, 2xx once the body is stored.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .alertmanager import PayloadError
from .ingest import process_delivery
from .models import Integration, WebhookDelivery
from .tokens import bearer_from_header, find_by_secret, touch_last_used

logger = logging.getLogger(__name__)


def _error(status: int, message: str, **extra) -> JsonResponse:
    response = JsonResponse({"error": message, **extra}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="vigil"'
    if status == 503:
        response["Retry-After"] = "10"
    return response


def authenticate_integration(request: HttpRequest, kind: str) -> Integration | None:
    """The active integration of `kind` whose token the request carries, or None."""
    secret = bearer_from_header(request.headers.get("Authorization", ""), "Bearer")
    queryset = Integration.objects.select_related("cluster").filter(kind=kind, is_active=True)
    integration = find_by_secret(queryset, "token_hash", secret)
    if integration is not None:
        touch_last_used(integration)
    return integration


def _read_limited_body(request: HttpRequest, limit: int) -> bytes | None:
    """The body, or None when it is over `limit` (checked before reading when the length is known)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    body = request.read(limit + 1)
    return None if len(body) > limit else body


@csrf_exempt
@require_POST
def alertmanager_hook(request: HttpRequest) -> JsonResponse:
    try:
        integration = authenticate_integration(request, Integration.Kind.ALERTMANAGER)
    except DatabaseError:
        logger.exception("database unavailable while authenticating a webhook")
        return _error(503, "database unavailable, retry later")
    if integration is None:
        return _error(401, "missing or invalid bearer token for an alertmanager integration")

    limit = settings.VIGIL_WEBHOOK_MAX_BYTES
    body = _read_limited_body(request, limit)
    if body is None:
        return _error(413, f"body larger than VIGIL_WEBHOOK_MAX_BYTES ({limit} bytes)")

    try:
        delivery = WebhookDelivery.objects.create(
            integration=integration,
            body=body,
            content_type=request.content_type or "",
            remote_addr=request.META.get("REMOTE_ADDR") or None,
        )
    except DatabaseError:
        logger.exception("database unavailable while storing a webhook delivery")
        return _error(503, "database unavailable, retry later")
    return _ingest_stored(delivery)


def _ingest_stored(delivery: WebhookDelivery) -> JsonResponse:
    """The body is safe in the database now; every outcome from here on keeps it."""
    try:
        result = process_delivery(delivery)
    except PayloadError as exc:
        return _error(400, exc.message, field=exc.field, delivery=delivery.pk)
    except DatabaseError:
        # Stored but not ingested: the beat sweep will process it. Alertmanager need not retry.
        logger.exception("ingest of delivery %s deferred to the sweep", delivery.pk)
        return JsonResponse(
            {"status": "stored", "delivery": delivery.pk, "detail": "processing deferred"},
            status=202,
        )
    except Exception as exc:
        logger.exception("ingest of delivery %s failed", delivery.pk)
        _mark_failed(delivery, exc)
        return _error(
            500,
            "ingest failed; the delivery is stored for reprocess_deliveries",
            delivery=delivery.pk,
        )
    return JsonResponse(
        {
            "status": "ok",
            "delivery": delivery.pk,
            "incidents": sorted(result.incident_ids),
            "alerts_created": result.alerts_created,
            "alerts_updated": result.alerts_updated,
        }
    )


def _mark_failed(delivery: WebhookDelivery, exc: Exception) -> None:
    try:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=WebhookDelivery.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000]
        )
    except DatabaseError:
        logger.exception("could not mark delivery %s failed", delivery.pk)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database readiness for load balancers and compose health checks."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return _error(503, "database unavailable")
    return JsonResponse({"status": "ok"})

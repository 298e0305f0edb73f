"""`POST /hooks/alertmanager`: store the raw body first, then ingest.

Status codes follow Alertmanager's retry rules (it retries 5xx, drops 4xx and redirects):
401 bad token, 413 too large, 400 malformed (the delivery stays, marked rejected), 503 when the
database is unavailable, 2xx once the body is stored.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, IntegrityError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .alertmanager import PayloadError, scrub
from .ingest import process_delivery
from .models import Integration, WebhookDelivery
from .tokens import bearer_from_header, find_by_secret, hash_secret, touch_last_used

logger = logging.getLogger(__name__)


def _error(status: int, message: str, **extra) -> JsonResponse:
    response = JsonResponse({"error": message, **extra}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="vigil"'
    if status == 503:
        response["Retry-After"] = "10"
    return response


# Integrations found by token, per process, for VIGIL_INTEGRATION_CACHE_SECONDS: a busy
# Alertmanager sends many requests a second, and the lookup was one query on each. Only tokens
# that authenticated are kept (a wrong token always costs its query), keyed by the token's
# SHA-256. Saving or deleting an Integration or a Cluster clears the cache of the process that
# did it at once; other processes (the other gunicorn workers) see a deactivation, a rotated
# token or a deletion within the TTL.
_INTEGRATIONS: dict[tuple[str, str], tuple[float, Integration]] = {}
_INTEGRATIONS_MAX = 1000


def forget_integrations(**kwargs) -> None:
    """Signal receiver (incidents.apps): an integration or a cluster changed."""
    _INTEGRATIONS.clear()


def authenticate_integration(request: HttpRequest, kind: str) -> Integration | None:
    """The active integration of `kind` whose token the request carries, or None."""
    secret = bearer_from_header(request.headers.get("Authorization", ""), "Bearer")
    if not secret or len(secret) > 200:
        return None
    key = (kind, hash_secret(secret))
    ttl = settings.VIGIL_INTEGRATION_CACHE_SECONDS
    now = time.monotonic()
    cached = _INTEGRATIONS.get(key)
    if cached is not None and cached[0] > now:
        integration = cached[1]
    else:
        queryset = Integration.objects.select_related("cluster").filter(kind=kind, is_active=True)
        integration = find_by_secret(queryset, "token_hash", secret)
        if integration is None:
            _INTEGRATIONS.pop(key, None)
            return None
        if ttl > 0:
            if len(_INTEGRATIONS) >= _INTEGRATIONS_MAX:
                _INTEGRATIONS.clear()
            _INTEGRATIONS[key] = (now + ttl, integration)
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

    body, scrubbed = scrub(body)  # secrets redacted before anything is stored
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
    return _ingest_stored(delivery, scrubbed=scrubbed)


# Concurrent deliveries of one group (Alertmanager's retries, a resolution overtaking its
# firing) can collide in ingest: a unique constraint, a deadlock, or the open incident it was
# about to join resolved meanwhile. Ingest is one transaction, so trying it again is safe.
INGEST_ATTEMPTS = 3


def _is_collision(exc: Exception) -> bool:
    from psycopg import errors

    if isinstance(exc, IntegrityError | ObjectDoesNotExist):
        return True
    return isinstance(exc.__cause__, errors.DeadlockDetected | errors.SerializationFailure)


def _process(delivery: WebhookDelivery, *, scrubbed: bool = False):
    for attempt in range(1, INGEST_ATTEMPTS + 1):
        try:
            # scrubbed: the body was redacted just now, parsing it need not redact it again.
            return process_delivery(delivery, scrubbed=scrubbed)
        except (DatabaseError, ObjectDoesNotExist) as exc:
            if attempt == INGEST_ATTEMPTS or not _is_collision(exc):
                raise
            logger.info("ingest of delivery %s collided (%s); again", delivery.pk, exc)


def _ingest_stored(delivery: WebhookDelivery, *, scrubbed: bool = False) -> JsonResponse:
    """The body is safe in the database now; every outcome from here on keeps it."""
    try:
        result = _process(delivery, scrubbed=scrubbed)
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

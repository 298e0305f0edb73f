"""`POST /hooks/alertmanager`: the raw body is stored, with what ingest made of it or alone.

Status codes follow Alertmanager's retry rules (it retries 5xx, drops 4xx and redirects):
401 bad token, 413 too large, 400 malformed (the delivery stays, marked rejected), 503 when the
database is unavailable, 2xx once the body is stored.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import ingest, lane
from .alertmanager import AlertmanagerNotification, PayloadError, parse_notification, scrub
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

    body, scrubbed, decoded = scrub(body)  # secrets redacted before anything is stored
    stored = {
        "integration": integration,
        "body": body,
        "content_type": request.content_type or "",
        "remote_addr": request.META.get("REMOTE_ADDR") or None,
    }
    try:
        # scrubbed: the body was redacted just now, parsing it need not redact it again.
        notification = parse_notification(body, scrubbed=scrubbed, decoded=decoded)
    except PayloadError as exc:
        return _store_rejected(stored, exc)
    return _store_and_ingest(stored, notification)


# Concurrent deliveries of one group (Alertmanager's retries, a resolution overtaking its
# firing) can collide in ingest: a unique constraint, a deadlock, or the open incident it was
# about to join resolved meanwhile. Ingest is one transaction, so trying it again is safe.
INGEST_ATTEMPTS = 3


def _is_collision(exc: Exception) -> bool:
    from psycopg import errors

    if isinstance(exc, IntegrityError | ObjectDoesNotExist):
        return True
    return isinstance(exc.__cause__, errors.DeadlockDetected | errors.SerializationFailure)


def _store_and_ingest(stored: dict, notification: AlertmanagerNotification) -> JsonResponse:
    """The delivery and what it changes, committed together: one commit per webhook.

    The body is never lost for it: should ingest fail, the transaction is rolled back and the
    body stored on its own (`_store_for_later`), for the sweep or reprocess_deliveries; only
    when even that fails does Alertmanager get a 503 and send it again. (Measured with `make
    bench`: a commit of its own for the delivery, then the ingest's, cost a fsync and two round
    trips more per webhook.)

    First, the commonest notifications, exact repeats (Alertmanager's repeat_interval, a
    storm's tail) and new firing alerts of a group with an open incident (alone, or with the
    group's stored ones), are stored by one statement, its own transaction (incidents.lane);
    anything else it leaves untouched for the general path, telling it when none of the
    instances was stored (a first try then skips reading them: ingest_notification's
    `none_stored`).
    """
    # Inside a caller's transaction (tests, a management command), a savepoint keeps a failed
    # attempt from aborting it; in a request (autocommit) the statement is the transaction.
    savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with savepoint:
            tried = lane.store(stored, notification)
    except DatabaseError:
        logger.info("the lane failed; the general path takes the delivery", exc_info=True)
        tried = lane.Tried()
    if tried.stored is not None:
        return _ingested(*tried.stored)
    for attempt in range(1, INGEST_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                delivery = WebhookDelivery.objects.create(
                    **stored,
                    status=WebhookDelivery.Status.PROCESSED,
                    attempts=1,
                    processed_at=timezone.now(),
                    alert_count=len(notification.alerts),
                )
                result = ingest.ingest_notification(
                    cluster=stored["integration"].cluster,
                    notification=notification,
                    repeats_tried=True,
                    # What the lane saw holds for a first try; a collision means it no longer does.
                    none_stored=tried.none_stored and attempt == 1,
                )
        except (DatabaseError, ObjectDoesNotExist) as exc:
            if attempt < INGEST_ATTEMPTS and _is_collision(exc):
                logger.info("ingest of a delivery collided (%s); again", exc)
                continue
            logger.exception("ingest of a delivery failed; storing it for the sweep")
            return _store_for_later(stored, exc, failed=False)
        except Exception as exc:
            logger.exception("ingest of a delivery failed")
            return _store_for_later(stored, exc, failed=True)
        return _ingested(delivery.pk, result)
    raise AssertionError("unreachable")  # pragma: no cover


def _ingested(delivery_id: int, result: ingest.IngestResult) -> JsonResponse:
    return JsonResponse(
        {
            "status": "ok",
            "delivery": delivery_id,
            "incidents": sorted(result.incident_ids),
            "alerts_created": result.alerts_created,
            "alerts_updated": result.alerts_updated,
        }
    )


def _store_alone(stored: dict, **fields) -> WebhookDelivery | None:
    """The body stored without ingest, or None when the database cannot take it (then 503)."""
    try:
        return WebhookDelivery.objects.create(**stored, **fields)
    except DatabaseError:
        logger.exception("database unavailable while storing a webhook delivery")
        return None


def _store_rejected(stored: dict, exc: PayloadError) -> JsonResponse:
    """A malformed body is kept, marked rejected, for reprocess_deliveries after a fix."""
    delivery = _store_alone(
        stored,
        status=WebhookDelivery.Status.REJECTED,
        error=str(exc),
        attempts=1,
        processed_at=timezone.now(),
    )
    if delivery is None:
        return _error(503, "database unavailable, retry later")
    return _error(400, exc.message, field=exc.field, delivery=delivery.pk)


def _store_for_later(stored: dict, exc: Exception, *, failed: bool) -> JsonResponse:
    """Ingest failed and was rolled back: keep the body alone.

    A database error (PostgreSQL restarting, a connection cut) leaves it `received` for the
    beat sweep, so Alertmanager need not retry (202); any other error marks it failed for
    `reprocess_deliveries` after a fix (500). Nothing stored at all: 503, Alertmanager retries.
    """
    delivery = _store_alone(
        stored,
        status=WebhookDelivery.Status.FAILED if failed else WebhookDelivery.Status.RECEIVED,
        error=f"{type(exc).__name__}: {exc}"[:4000] if failed else "",
        attempts=1 if failed else 0,
    )
    if delivery is None:
        return _error(503, "database unavailable, retry later")
    if failed:
        return _error(
            500,
            "ingest failed; the delivery is stored for reprocess_deliveries",
            delivery=delivery.pk,
        )
    return JsonResponse(
        {"status": "stored", "delivery": delivery.pk, "detail": "processing deferred"},
        status=202,
    )


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database readiness for load balancers and compose health checks."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return _error(503, "database unavailable")
    return JsonResponse({"status": "ok"})

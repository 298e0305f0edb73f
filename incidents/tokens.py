"""Secrets for machines and users: random, shown once, stored as SHA-256, compared in constant time.

SHA-256 rather than a password hasher: the tokens are 256-bit random strings, so a slow hash adds
nothing but latency on the webhook's hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.db.models import Model
from django.utils import timezone

INTEGRATION_PREFIX = "vgi_"
USER_KEY_PREFIX = "vgk_"


def new_secret(prefix: str) -> str:
    """The prefix lets secret scanners and humans tell a Vigil token at a glance."""
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:10]


def bearer_from_header(header: str, scheme: str) -> str | None:
    """The credential of an `Authorization: <scheme> <credential>` header, or None."""
    parts = header.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != scheme.lower():
        return None
    return parts[1].strip() or None


def find_by_secret(queryset, field: str, secret: str | None) -> Model | None:
    """Look the row up by the secret's hash and confirm with a constant-time comparison."""
    if not secret or len(secret) > 200:
        return None
    digest = hash_secret(secret)
    row = queryset.filter(**{field: digest}).first()
    if row is None or not hmac.compare_digest(getattr(row, field), digest):
        return None
    return row


def touch_last_used(row: Model, every_seconds: int = 60) -> None:
    """Record use at most once a minute, so a busy token does not write on every request."""
    now = timezone.now()
    last = getattr(row, "last_used_at", None)
    if last is None or (now - last).total_seconds() > every_seconds:
        type(row).objects.filter(pk=row.pk).update(last_used_at=now)
        row.last_used_at = now

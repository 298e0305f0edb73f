"""The JSON API at /api/v1/ (OpenAPI at /api/v1/schema): one NinjaAPI, one router per app.

User endpoints take the browser session (with CSRF) or `Authorization: Token <key>`; machine
endpoints (deploys, GPU snapshots) take an integration's bearer token and nothing else.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.security import APIKeyHeader, django_auth

from assistant.actions_api import router as actions_router
from assistant.api import router as assistant_router
from collectors.api import router as collectors_router
from incidents.api import router as incidents_router
from incidents.models import ApiToken
from incidents.tokens import bearer_from_header, find_by_secret, touch_last_used


class UserTokenAuth(APIKeyHeader):
    """`Authorization: Token <key>` of a user; integration tokens are not accepted here."""

    param_name = "Authorization"

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        secret = bearer_from_header(key or "", "Token")
        token = find_by_secret(ApiToken.objects.select_related("user"), "key_hash", secret)
        if token is None or not token.user.is_active:
            return None
        touch_last_used(token)
        request.user = token.user
        return token.user


api = NinjaAPI(
    title="Vigil API",
    version="1",
    description="Incidents, their alerts, evidence and analyses; deploy events from CI/CD.",
    auth=[UserTokenAuth(), django_auth],
    openapi_url="/schema",
    docs_url=None,  # the interactive docs load scripts from a CDN, which the CSP forbids
    urls_namespace="api",
)
api.add_router("/", incidents_router)
api.add_router("/", collectors_router)
api.add_router("/", assistant_router)
api.add_router("/", actions_router)

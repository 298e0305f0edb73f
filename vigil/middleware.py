"""Input no view can store: refused with 400 before it reaches a view, and the safety net after.

PostgreSQL refuses NUL in text and jsonb (`DataError`), and SQLite stores it, so a `%00` in a
filter, a form field or a JSON string used to be a 500 on PostgreSQL (found by
tests/security/test_bad_input.py). Two layers:

* a request carrying NUL — in its query string, or in a form or JSON body (`%00`, a raw NUL
  byte, or an unescaped JSON `\\u0000`) — is answered 400 before any view runs. Machine hooks
  that read their body themselves (the Alertmanager webhook, which keeps every delivery and
  replaces NUL instead, and Slack's signed events) are exempt;
* a `DataError` out of any view (a value the database refuses: too long, out of range) is the
  request's fault, not the server's: 400 rather than 500, and logged. An unavailable database
  raises OperationalError/InterfaceError, never DataError, so outages still answer 5xx.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from django.conf import settings
from django.db import DataError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

EXEMPT_PREFIXES = ("/hooks/", "/slack/")
# `\u0000` preceded by an even number of backslashes is an escape of NUL, not the text "\u0000".
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_CHECKED_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/plain")


def _refusal(request: HttpRequest, message: str) -> HttpResponse:
    if request.path.startswith("/api/") or "json" in (request.content_type or ""):
        return JsonResponse({"detail": message}, status=400)
    return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")


def carries_nul(request: HttpRequest) -> str:
    """Where the request carries a NUL character ("" when it does not)."""
    query = request.META.get("QUERY_STRING", "")
    if "%00" in query or "\x00" in query:
        return "the query string"
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return ""
    if (request.content_type or "") not in _CHECKED_TYPES:
        return ""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= 0 or length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        return ""  # nothing to check, or refused by Django as too big when the view reads it
    body = request.body
    if b"\x00" in body:
        return "the body"
    if request.content_type == "application/x-www-form-urlencoded":
        return "the body" if b"%00" in body else ""
    if b"\\u0000" in body and _JSON_NUL.search(body):
        return "the body"
    return ""


class BadInputMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(EXEMPT_PREFIXES):
            where = carries_nul(request)
            if where:
                return _refusal(request, f"NUL characters are not accepted ({where})")
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DataError):
            logger.warning("refused %s %s: %s", request.method, request.path, exception)
            return _refusal(
                request, "a value of this request is out of the range the database holds"
            )
        return None

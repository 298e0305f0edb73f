"""The Alertmanager webhook skips the browser's middleware.

The hook is called by a machine with a bearer token, reads its own body and answers JSON: it
needs no session, CSRF check, user, messages, CSP, X-Frame-Options or htmx, and no URL
resolution for its two fixed paths. `HookFastPathMiddleware` sits right after SecurityMiddleware
and WhiteNoise (settings.MIDDLEWARE), so the hook keeps what those give every response (the
HTTPS redirect exemption, nosniff, referrer and opener policies) and calls the view directly;
every other request goes down the whole stack as before. Measured with `python -m bench
profile`: the middleware below it cost the hook about as much as a query.

The Host header is still checked against ALLOWED_HOSTS, and the answer given a Content-Length
(what CommonMiddleware did for it; without it gunicorn's threaded workers chunk keep-alive
answers).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import reverse


class HookFastPathMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        from incidents.hooks import alertmanager_hook

        self.get_response = get_response
        self.hook = alertmanager_hook
        path = reverse("hook-alertmanager")  # both spellings are routed (vigil/urls.py)
        self.paths = frozenset({path.rstrip("/"), path.rstrip("/") + "/"})

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in self.paths:
            request.get_host()  # DisallowedHost (400) for a Host not in ALLOWED_HOSTS
            response = self.hook(request)
            if not response.has_header("Content-Length"):  # as CommonMiddleware does
                response.headers["Content-Length"] = str(len(response.content))
            return response
        return self.get_response(request)

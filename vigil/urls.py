"""Top-level routes: pages, the Alertmanager hook, Slack events, the JSON API, the admin."""

import os

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from incidents.hooks import alertmanager_hook, healthz
from incidents.slack_events import slack_events
from incidents.throttle import throttled_login
from vigil.api import api

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="incident-list", permanent=False)),
    # Both spellings answer directly: Alertmanager drops redirects.
    path("hooks/alertmanager", alertmanager_hook, name="hook-alertmanager"),
    path("hooks/alertmanager/", alertmanager_hook),
    path("healthz", healthz, name="healthz"),
    path("slack/events", slack_events, name="slack-events"),
    path("api/v1/", api.urls),
    # Both logins are throttled (incidents/throttle.py): 429 after too many failures.
    path("accounts/login/", throttled_login(auth_views.LoginView.as_view()), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/login/", throttled_login(admin.site.login)),
    path("admin/", admin.site.urls),
    path("", include("assistant.urls")),
    path("", include("incidents.urls")),
]

if os.environ.get("VIGIL_BENCH_CEILING") == "1":
    # `make bench` only (bench/ingest.py): a do-nothing view behind the same middleware, served by
    # the same gunicorn, is the ceiling the webhook's requests/s are compared with. Off otherwise.
    from django.http import JsonResponse
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    def bench_ceiling(request):
        return JsonResponse({"status": "ok"})

    urlpatterns.append(path("bench/ceiling", bench_ceiling))

"""Top-level routes: pages, the Alertmanager hook, the JSON API, the admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from incidents.hooks import alertmanager_hook, healthz
from vigil.api import api

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="incident-list", permanent=False)),
    # Both spellings answer directly: Alertmanager drops redirects.
    path("hooks/alertmanager", alertmanager_hook, name="hook-alertmanager"),
    path("hooks/alertmanager/", alertmanager_hook),
    path("healthz", healthz, name="healthz"),
    path("api/v1/", api.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("assistant.urls")),
    path("", include("incidents.urls")),
]

from django.urls import path

from . import views

urlpatterns = [
    path("incidents/", views.incident_list, name="incident-list"),
    path("incidents/<int:incident_id>/", views.incident_detail, name="incident-detail"),
    path("incidents/<int:incident_id>/timeline", views.incident_timeline, name="incident-timeline"),
    path(
        "incidents/<int:incident_id>/refresh-evidence",
        views.incident_refresh_evidence,
        name="incident-refresh-evidence",
    ),
    path(
        "incidents/<int:incident_id>/reanalyse", views.incident_reanalyse, name="incident-reanalyse"
    ),
    path(
        "incidents/<int:incident_id>/<slug:action>",
        views.incident_action,
        name="incident-action",
    ),
]

"""The review of an analysis, under its incident: /incidents/<id>/analyses/<aid>/…"""

from django.urls import path

from . import views

urlpatterns = [
    path(
        "incidents/<int:incident_id>/analyses/<int:analysis_id>/approve",
        views.analysis_approve,
        name="analysis-approve",
    ),
    path(
        "incidents/<int:incident_id>/analyses/<int:analysis_id>/reject",
        views.analysis_reject,
        name="analysis-reject",
    ),
    path(
        "incidents/<int:incident_id>/analyses/<int:analysis_id>/summary",
        views.analysis_summary,
        name="analysis-summary",
    ),
    path(
        "incidents/<int:incident_id>/analyses/<int:analysis_id>/versions",
        views.analysis_versions,
        name="analysis-versions",
    ),
]

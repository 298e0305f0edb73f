"""The assistant's pages: the review of an analysis, the actions and their audit.

/incidents/<id>/analyses/<aid>/… (views.py), /incidents/<id>/actions/… and /incidents/<id>/audit
(action_views.py), and the audit of every incident at /audit/.
"""

from django.urls import path

from . import action_views, views

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
    # Remediation actions: the card, its steps, adding one from the catalogue.
    path("incidents/<int:incident_id>/actions/new", action_views.action_add, name="action-add"),
    path(
        "incidents/<int:incident_id>/actions/<int:action_id>",
        action_views.action_card,
        name="action-card",
    ),
    path(
        "incidents/<int:incident_id>/actions/<int:action_id>/params",
        action_views.action_params,
        name="action-params",
    ),
    path(
        "incidents/<int:incident_id>/actions/<int:action_id>/preview",
        action_views.action_preview,
        name="action-preview",
    ),
    path(
        "incidents/<int:incident_id>/actions/<int:action_id>/approve",
        action_views.action_approve,
        name="action-approve",
    ),
    path(
        "incidents/<int:incident_id>/actions/<int:action_id>/reject",
        action_views.action_reject,
        name="action-reject",
    ),
    path(
        "incidents/<int:incident_id>/actions/<int:action_id>/cancel",
        action_views.action_cancel,
        name="action-cancel",
    ),
    path(
        "incidents/<int:incident_id>/actions/<int:action_id>/expire-silence",
        action_views.action_expire_silence,
        name="action-expire-silence",
    ),
    # The audit: who did what to which action, with the exact requests sent.
    path("incidents/<int:incident_id>/audit", action_views.incident_audit, name="incident-audit"),
    path("audit/", action_views.audit, name="audit"),
]

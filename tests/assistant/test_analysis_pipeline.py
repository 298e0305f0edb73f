"""From collected evidence to a stored Analysis: API shape, page, re-analyse, after collection."""

from __future__ import annotations

import types

import pytest

from assistant import engine
from assistant.base import Candidate, Proposal
from assistant.models import Analysis
from collectors.base import Entity
from collectors.models import Evidence
from incidents.models import Incident
from tests.incidents.payloads import firing, group, post

pytestmark = pytest.mark.django_db
POD = Entity("Pod", "llm", "p-1")
DEPLOY = Entity("Deployment", "llm", "chat-api")


@pytest.fixture
def incident(client, am_token) -> Incident:
    post(client, group(firing("A", pod="p-1")), am_token)
    incident = Incident.objects.get()
    Evidence.objects.create(
        incident=incident,
        collector="kubernetes",
        kind="pod_status",
        title="pod p-1",
        entity_kind="Pod",
        entity_namespace="llm",
        entity_name="p-1",
        data={"phase": "Running"},
    )
    return incident


@pytest.fixture
def oom_rule(monkeypatch):
    def evaluate(facts):
        (ev,) = facts.of_kind("pod_status")
        return [
            Candidate(
                "oom-killed",
                DEPLOY,
                0.9,
                [ev.id],
                "p-1 was OOMKilled (exit 137) at 10:02.",
                [
                    Proposal(
                        "patch-resources",
                        DEPLOY,
                        {"container": "app", "limits": {"memory": "6Gi"}},
                        "raise the limit",
                    ),
                ],
            )
        ]

    monkeypatch.setattr(
        engine, "rule_modules", lambda: [types.SimpleNamespace(__name__="r", evaluate=evaluate)]
    )


def test_the_analysis_is_stored_with_ranked_proposals_and_on_the_timeline(incident, oom_rule):
    analysis = engine.run_analysis(incident.pk)
    assert (analysis.status, analysis.source) == ("ready", "rules")
    (hypothesis,) = analysis.hypotheses
    assert hypothesis["entity"] == {"kind": "Deployment", "namespace": "llm", "name": "chat-api"}
    assert hypothesis["evidence"] == [Evidence.objects.get().pk]
    (action,) = analysis.actions.all()
    assert (action.action, action.target, action.rank) == ("patch-resources", DEPLOY.as_dict(), 0)
    assert incident.timeline.filter(kind="analysis_ready").exists()


def test_the_api_returns_the_latest_analysis_in_the_documented_shape(client_as, incident, oom_rule):
    engine.run_analysis(incident.pk)
    body = client_as("viewer").get(f"/api/v1/incidents/{incident.pk}").json()
    analysis = body["analysis"]
    assert set(analysis) == {"id", "status", "source", "summary", "hypotheses", "actions"} | {
        "review",
        "revision",
        "model",
        "llm",
    }
    assert analysis["review"]["status"] == "draft" and analysis["revision"] == 1
    assert analysis["hypotheses"][0]["category"] == "oom-killed"
    (action,) = analysis["actions"]
    assert set(action) == {"id", "action", "target", "params", "status", "rationale"} | {
        "preview",
        "preview_error",
        "decided",
        "outcome",
        "error",
        "proposed_by",
        "attempts",
        "started_at",
        "finished_at",
    }
    assert action["status"] == "proposed"
    cited = analysis["hypotheses"][0]["evidence"]
    assert {e["id"] for e in body["evidence"]} >= set(cited)


def test_a_re_analysis_supersedes_untouched_proposals_but_keeps_what_someone_acted_on(
    client_as, incident, oom_rule
):
    first = engine.run_analysis(incident.pk)
    acted = first.actions.get()
    acted.status = "approved"
    acted.save()
    engine.run_analysis(incident.pk)  # the same proposal again, untouched, in the new analysis
    engine.run_analysis(incident.pk)
    body = client_as("viewer").get(f"/api/v1/incidents/{incident.pk}").json()
    listed = [(a["id"], a["status"]) for a in body["analysis"]["actions"]]
    newest = incident.analyses.first().actions.get()
    assert listed == [(newest.pk, "proposed"), (acted.pk, "approved")]


def test_each_shown_action_cites_its_own_analysis_which_is_read_once(
    client_as, incident, oom_rule, django_assert_num_queries, django_user_model
):
    """An action someone acted on stays on the page after a re-analysis, citing the hypothesis
    of the analysis that proposed it, not the latest one's; that older analysis is read once
    for all its actions, and not at all when no older action is shown. So are the people who
    acted on them: one query for all, none while nobody did."""
    from assistant.presentation import actions_of
    from tests.assistant.test_action_pages import card_html

    first = engine.run_analysis(incident.pk)
    with django_assert_num_queries(1):
        assert [p.analysis for p in actions_of(incident, first)] == [first]
    older_evidence = Evidence.objects.create(
        incident=incident, collector="kubernetes", kind="k8s_events", title="events", data={}
    )
    first.hypotheses[0]["evidence"] = [older_evidence.pk]
    first.save(update_fields=["hypotheses"])
    ana, bo = (django_user_model.objects.create(username=name) for name in ("ana", "bo"))
    acted = first.actions.get()
    acted.status, acted.decided_by, acted.decided_at = "approved", ana, incident.opened_at
    acted.save()
    also = first.actions.create(
        incident=incident, action="restart-pods", status="rejected", proposed_by=bo, decided_by=ana
    )
    latest = engine.run_analysis(incident.pk)
    (current,) = latest.actions.all()

    with django_assert_num_queries(3):
        shown = actions_of(incident, latest)
        assert [(p.pk, p.analysis.pk) for p in shown] == [
            (current.pk, latest.pk),
            (acted.pk, first.pk),
            (also.pk, first.pk),
        ]
        people = [(p.proposed_by, p.decided_by, p.edited_by, p.previewed_by) for p in shown]
        assert people == [(None, None, None, None), (None, ana, None, None), (bo, ana, None, None)]
    assert shown[1].analysis is shown[2].analysis

    page = client_as("viewer").get(f"/incidents/{incident.pk}/").content.decode()
    newest_pod = f'href="#evidence-{Evidence.objects.get(title="pod p-1").pk}"'
    older_events = f'href="#evidence-{older_evidence.pk}"'
    assert newest_pod in card_html(page, current) and older_events not in card_html(page, current)
    assert older_events in card_html(page, acted) and newest_pod not in card_html(page, acted)
    assert "Approved by <strong>ana</strong>" in card_html(page, acted)
    assert "added by <strong>bo</strong>" in card_html(page, also)


def test_the_page_shows_the_draft_and_links_citations_to_evidence_panels(
    client_as, incident, oom_rule
):
    engine.run_analysis(incident.pk)
    page = client_as("viewer").get(f"/incidents/{incident.pk}/").content.decode()
    assert "Rule-based analysis" in page and "oom-killed" in page
    assert f'href="#evidence-{Evidence.objects.get().pk}"' in page
    assert "patch-resources" in page and "recommended" in page
    assert 'data-action="reanalyse"' not in page  # viewers cannot re-run it


def test_reanalyse_is_for_responders_and_makes_a_new_analysis(client_as, incident, oom_rule):
    assert client_as("viewer").post(f"/incidents/{incident.pk}/reanalyse").status_code == 403
    response = client_as("responder").post(
        f"/incidents/{incident.pk}/reanalyse", headers={"HX-Request": "true"}
    )
    assert response.status_code == 200 and b'id="analysis"' in response.content
    assert Analysis.objects.filter(incident=incident, status="ready").count() == 1


def test_a_finished_collection_round_enqueues_the_analysis(incident, monkeypatch):
    from assistant import tasks
    from collectors.signals import collection_finished

    published = []
    monkeypatch.setattr(
        tasks, "publish_on_commit", lambda task, *a, **k: published.append((task.name, a))
    )
    collection_finished.send(sender=Incident, incident_id=incident.pk)
    assert published == [("assistant.tasks.analyse_incident", (incident.pk,))]


def test_a_failing_analysis_is_recorded_not_raised(incident, monkeypatch):
    def broken(incident):
        raise RuntimeError("facts unreadable")

    monkeypatch.setattr(engine, "facts_for", broken)
    analysis = engine.run_analysis(incident.pk)
    assert analysis.status == "failed" and "facts unreadable" in analysis.error
    assert incident.timeline.filter(kind="analysis_failed").exists()


def test_the_page_polls_for_the_analysis_of_a_newer_collection_round(client_as, incident, oom_rule):
    from django.utils import timezone

    engine.run_analysis(incident.pk)
    Incident.objects.filter(pk=incident.pk).update(
        collection_started_at=timezone.now(), collection_finished_at=None
    )
    part = client_as("viewer").get(
        f"/incidents/{incident.pk}/?part=analysis", headers={"HX-Request": "true"}
    )
    assert b'hx-trigger="every 3s"' in part.content  # a round is running: its analysis will follow

    Incident.objects.filter(pk=incident.pk).update(collection_finished_at=timezone.now())
    engine.run_analysis(incident.pk)  # the analysis of that round
    part = client_as("viewer").get(
        f"/incidents/{incident.pk}/?part=analysis", headers={"HX-Request": "true"}
    )
    assert b"hx-trigger" not in part.content

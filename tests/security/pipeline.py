"""A replayed incident carrying hostile text, through the real pipeline, and every surface it
reaches: the database, the pages, the API, Slack's payloads and the LLM prompt.

`replayed_incident` replays scenarios/01-bad-deploy.yaml (the Kubernetes stand-in serving its
objects and pod logs; no Prometheus) with extra lines in the failing pod's log, extra labels and
annotations on its alerts and text in its deploy events; posts the deploys and the alerts through
the real endpoints; runs a collection round (the real collectors against the stand-in) and the
rules' analysis. `surfaces` then gathers what each consumer of the incident receives.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connection

from incidents.models import Incident
from replay.scenario import load_scenario
from replay.world import ReplayWorld
from tests.incidents.payloads import post

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
SCENARIO = ROOT / "scenarios" / "01-bad-deploy.yaml"
FAILING_POD = "chat-api-6f4d9b8c7d-4kq2v"


def corpus_lines(name: str) -> list[str]:
    """The non-blank, non-comment lines of corpus/<name>."""
    lines = (CORPUS / name).read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("# ") and line != "#"]


def secrets_corpus() -> list[tuple[str, str]]:
    """(secret, the line it appears in) from corpus/secrets.txt."""
    pairs = []
    for line in corpus_lines("secrets.txt"):
        secret, template = line.split("\t")
        pairs.append((secret, template.replace("{}", secret)))
    return pairs


@contextmanager
def replayed_incident(
    client,
    *,
    log_lines: list[str] = (),
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    deploy_text: str = "",
    pod_env: dict[str, str] | None = None,
    generator_url: str = "",
) -> Iterator[tuple[ReplayWorld, Incident]]:
    from assistant import engine
    from collectors.tasks import collect_now

    scenario = copy.deepcopy(load_scenario(SCENARIO))
    log = next(
        entry
        for entry in scenario.logs
        if entry["pod"] == FAILING_POD and not entry.get("previous")
    )
    at = log["lines"][-1]["at"]  # a minute or two before "now", inside the collection window
    log["lines"] = [*log["lines"], *({"at": at, "text": text} for text in log_lines)]
    for alert in scenario.alerts:
        alert["labels"] = {**alert["labels"], **(labels or {})}
        alert["annotations"] = {**(alert.get("annotations") or {}), **(annotations or {})}
        if generator_url:
            alert["generatorURL"] = generator_url
    if pod_env:
        pod = next(
            o
            for o in scenario.objects
            if o["kind"] == "Pod" and o["metadata"]["name"] == FAILING_POD
        )
        container = pod["spec"]["containers"][0]
        container["env"] = [
            *container.get("env", []),
            *({"name": k, "value": v} for k, v in pod_env.items()),
        ]
    with ReplayWorld(scenario, with_metrics=False) as world:
        _, alertmanager_token, deploy_token = world.register_cluster()
        for body in scenario.deploy_bodies(world.now):
            if deploy_text:
                body["description"] = f"{body.get('description', '')} {deploy_text}"
            response = client.post(
                "/api/v1/deploys",
                data=json.dumps(body),
                content_type="application/json",
                headers={"Authorization": f"Bearer {deploy_token}"},
            )
            assert response.status_code == 201, response.content
        notification = scenario.alert_notification(world.now, world.replay_id)
        response = post(client, notification, alertmanager_token)
        assert response.status_code == 200, response.content
        incident = Incident.objects.get(pk=response.json()["incidents"][0])
        collect_now(incident.pk)
        engine.run_analysis(incident.pk, enqueue_narrative=False)
        incident.refresh_from_db()
        yield world, incident


@dataclass
class Surfaces:
    """What each consumer of an incident receives, as text."""

    database: str = ""
    pages: dict[str, str] = field(default_factory=dict)
    api: str = ""
    slack: str = ""
    prompt: str = ""


def database_dump() -> str:
    """Every value of every row of every table (the webhook's stored bodies included)."""
    values = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from the schema
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("utf-8", "replace")
                    values.append(str(value))
    return "\n".join(values)


def page_urls(incident: Incident) -> dict[str, str]:
    analysis = incident.analyses.order_by("-id").first()
    urls = {
        "incident page": f"/incidents/{incident.pk}/",
        "evidence panel": f"/incidents/{incident.pk}/?part=evidence",
        "analysis card": f"/incidents/{incident.pk}/?part=analysis",
        "live part": f"/incidents/{incident.pk}/?part=live",
        "timeline": f"/incidents/{incident.pk}/timeline",
        "incident list": "/incidents/",
        "audit": f"/incidents/{incident.pk}/audit",
    }
    if analysis is not None:
        urls["versions"] = f"/incidents/{incident.pk}/analyses/{analysis.pk}/versions"
    for index, action in enumerate(incident.actions.order_by("pk"), 1):
        urls[f"action card {index}"] = f"/incidents/{incident.pk}/actions/{action.pk}"
    return urls


def render_pages(client, incident: Incident) -> dict[str, str]:
    pages = {}
    for name, url in page_urls(incident).items():
        htmx = "?part=" in url
        response = client.get(url, headers={"HX-Request": "true"} if htmx else {})
        assert response.status_code == 200, (url, response.status_code)
        pages[name] = response.content.decode()
    return pages


def prompt_text(incident: Incident) -> str:
    """The messages the LLM would be sent for the incident's analysis, joined."""
    from assistant.facts import facts_for
    from assistant.llm.prompt import build_prompt
    from assistant.presentation import action_json

    analysis = incident.analyses.order_by("-id").first()
    proposals = [action_json(p) for p in analysis.actions.filter(proposed_by__isnull=True)]
    prompt = build_prompt(facts_for(incident), analysis.rules_hypotheses, proposals)
    return "\n\n".join(str(m.content) for m in prompt.messages)


def slack_payloads(settings, incident: Incident) -> str:
    """Every request body the real Slack client sent to the stand-in for the incident."""
    from incidents import slack
    from tests.incidents.slack_support import configure
    from tests.slack_standin import SlackStandin

    with SlackStandin() as standin:
        configure(settings, standin)
        settings.VIGIL_SLACK_MAX_AGE = __import__("datetime").timedelta(days=1)
        latest = incident.timeline.order_by("-id").first()
        slack.announce(latest.pk)
        calls = [c.json for c in standin.calls("chat.postMessage")]
        calls += [c.json for c in standin.calls("chat.update")]
    assert calls, "nothing was announced"
    return json.dumps(calls, ensure_ascii=False)


def surfaces(client, settings, incident: Incident) -> Surfaces:
    api = client.get(f"/api/v1/incidents/{incident.pk}").content.decode()
    return Surfaces(
        database=database_dump(),
        pages=render_pages(client, incident),
        api=api,
        slack=slack_payloads(settings, incident),
        prompt=prompt_text(incident),
    )

"""Shared setup of the Slack tests: settings pointing at the stand-in, incidents, expected blocks."""

from __future__ import annotations

from typing import Any

from assistant.models import Analysis
from incidents import slack
from incidents.models import Incident, SlackMessage, TimelineEvent
from tests.incidents.payloads import firing, group, post
from tests.slack_standin import SlackStandin

BASE = "https://vigil.example.com"
TOKEN = "xoxb-standin-token"
CHANNEL = "C0DEFAULT"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
HYPOTHESES = [
    {
        "category": "kv-cache-saturation",
        "entity": {"kind": "Deployment", "namespace": "llm", "name": "chat-api"},
        "confidence": 0.87,
        "evidence": [1, 2],
        "explanation": "KV cache at 99% while requests queue: <prompt> & long contexts",
    },
    {
        "category": "bad-deploy",
        "entity": {"kind": "Deployment", "namespace": "llm", "name": "chat-api"},
        "confidence": 0.4,
        "evidence": [3],
        "explanation": "v2.4.0 rolled out 10 minutes earlier",
    },
]


def configure(settings: Any, standin: SlackStandin, *, mode: str = "bot") -> SlackStandin:
    """Bot mode (token + default channel) or webhook mode, both against the stand-in."""
    settings.VIGIL_BASE_URL = BASE
    settings.VIGIL_SLACK_API_URL = standin.api_url
    settings.VIGIL_SLACK_BOT_TOKEN = TOKEN if mode == "bot" else ""
    settings.VIGIL_SLACK_CHANNEL = CHANNEL if mode == "bot" else ""
    settings.VIGIL_SLACK_WEBHOOK_URL = standin.webhook_url if mode == "webhook" else ""
    settings.VIGIL_SLACK_ROUTES = []
    settings.VIGIL_SLACK_UNFURL_CHANNELS = []
    settings.VIGIL_SLACK_SIGNING_SECRET = SECRET
    settings.VIGIL_SLACK_TIMEOUT = 5
    settings.VIGIL_SLACK_MAX_ATTEMPTS = 3
    settings.VIGIL_SLACK_MAX_RETRY_WAIT = 300
    return standin


def open_incident(client: Any, token: str, name: str = "KVCacheHigh", **labels: str) -> Incident:
    """An incident opened through the real hook (its on-commit tasks do not run in these tests)."""
    response = post(client, group(firing(name, **labels)), token)
    assert response.status_code == 200, response.content
    (incident_id,) = response.json()["incidents"]
    return Incident.objects.select_related("cluster").get(pk=incident_id)


def event_of(incident: Incident, kind: str) -> TimelineEvent:
    return TimelineEvent.objects.filter(incident=incident, kind=kind).latest("at", "id")


def ready_analysis(
    incident: Incident, hypotheses: list[dict] | None = None
) -> tuple[Analysis, TimelineEvent]:
    """A ready rules analysis and its timeline event, as assistant.engine writes them."""
    hypotheses = HYPOTHESES if hypotheses is None else hypotheses
    analysis = Analysis.objects.create(
        incident=incident,
        status=Analysis.Status.READY,
        hypotheses=hypotheses,
        rules_hypotheses=hypotheses,
        summary="Most likely kv-cache-saturation.",
    )
    event = TimelineEvent.objects.create(
        incident=incident,
        kind=TimelineEvent.Kind.ANALYSIS_READY,
        actor="vigil",
        summary="Analysis ready (rules)",
        payload={"analysis": analysis.pk, "source": "rules"},
    )
    return analysis, event


def permalink(event: TimelineEvent) -> str:
    return f"{BASE}/incidents/{event.incident_id}/timeline?event={event.pk}#event-{event.pk}"


def announce(event: TimelineEvent) -> str:
    """What the slack_announce task runs."""
    return slack.announce(event.pk)


def status_of(event: TimelineEvent) -> str:
    return SlackMessage.objects.get(event=event).status


def parent_blocks(
    incident: Incident, url: str, *, status: str = ":red_circle: open", top: str = ""
) -> list[dict]:
    """The parent message's blocks for the test incident (KVCacheHigh in llm, one alert)."""
    incident.refresh_from_db()
    opened = int(incident.opened_at.timestamp())
    fallback = incident.opened_at.strftime("%Y-%m-%d %H:%M UTC")
    context = f"Opened <!date^{opened}^{{date_short_pretty}} {{time}}|{fallback}>"
    if top:
        context += f" · Top hypothesis: {top}"
    return [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"#{incident.pk} {incident.title}"},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Status*\n{status}"},
                {"type": "mrkdwn", "text": f"*Severity*\n{incident.severity}"},
                {"type": "mrkdwn", "text": f"*Service*\n{incident.service or '-'}"},
                {"type": "mrkdwn", "text": f"*Namespace*\n{incident.namespace}"},
                {
                    "type": "mrkdwn",
                    "text": f"*Alerts*\n{incident.firing_count} firing of {incident.alert_count}",
                },
                {"type": "mrkdwn", "text": f"*Cluster*\n{incident.cluster.name}"},
            ],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open timeline"},
                    "url": url,
                    "action_id": "open_timeline",
                    "value": str(incident.pk),
                    "style": "primary",
                }
            ],
        },
    ]

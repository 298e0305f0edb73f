"""What Vigil posts to Slack, exactly: the parent, its thread, its updates, routing, webhook mode.

The real slack_sdk clients talk to the stand-in (tests/slack_standin.py); every payload is
compared whole, as Slack would receive it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core.cache import cache
from django.utils import timezone

from assistant import remediation
from assistant.models import ActionProposal
from incidents import services, slack
from incidents.models import Incident, SlackMessage, SlackThread, TimelineEvent
from incidents.tasks import slack_sweep
from tests.incidents.payloads import firing, group, post, resolved
from tests.incidents.slack_support import (
    CHANNEL,
    TOKEN,
    announce,
    configure,
    event_of,
    open_incident,
    parent_blocks,
    permalink,
    ready_analysis,
    status_of,
)
from tests.slack_standin import SlackStandin

pytestmark = pytest.mark.django_db
Kind = TimelineEvent.Kind


@pytest.fixture
def standin(settings):
    with SlackStandin() as standin:
        yield configure(settings, standin)


@pytest.fixture
def incident(client, am_token, standin):
    return open_incident(client, am_token, severity="critical", service="chat-api")


def test_an_opened_incident_posts_one_message_whose_button_opens_its_timeline(standin, incident):
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    assert announce(opened) == "sent"

    (call,) = standin.calls()
    assert call.method == "chat.postMessage"
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    url = f"https://vigil.example.com/incidents/{incident.pk}/timeline?event={opened.pk}#event-{opened.pk}"
    assert call.json == {
        "channel": CHANNEL,
        "text": f"[critical] Incident #{incident.pk}: KVCacheHigh summary (open)",
        "blocks": parent_blocks(incident, url),
        "unfurl_links": False,
        "unfurl_media": False,
    }
    assert call.json["blocks"][1]["fields"][:4] == [
        {"type": "mrkdwn", "text": "*Status*\n:red_circle: open"},
        {"type": "mrkdwn", "text": "*Severity*\ncritical"},
        {"type": "mrkdwn", "text": "*Service*\nchat-api"},
        {"type": "mrkdwn", "text": "*Namespace*\nllm"},
    ]
    thread = SlackThread.objects.get(incident=incident)
    assert (thread.channel, thread.ts, thread.parent_event_id) == (
        CHANNEL,
        "1700000000.000001",
        opened.pk,
    )
    message = SlackMessage.objects.get(event=opened)
    assert (message.status, message.channel, message.ts, message.attempts) == (
        "sent",
        CHANNEL,
        "1700000000.000001",
        1,
    )


def test_analysis_ready_replies_in_the_thread_and_updates_the_parent(
    client, standin, incident, personas
):
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    announce(opened)
    analysis, event = ready_analysis(incident)
    standin.forget()

    assert announce(event) == "sent"

    reply, update = standin.calls()
    assert reply.method == "chat.postMessage"
    assert reply.json == {
        "channel": CHANNEL,
        "thread_ts": "1700000000.000001",
        "text": (
            f"Analysis ready · incident #{incident.pk}: *Top hypothesis:* kv-cache-saturation of "
            "Deployment llm/chat-api (87%)\nKV cache at 99% while requests queue: &lt;prompt&gt; "
            "&amp; long contexts"
        ),
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": (
                        "*Analysis ready*\n*Top hypothesis:* kv-cache-saturation of Deployment "
                        "llm/chat-api (87%)\nKV cache at 99% while requests queue: &lt;prompt&gt; "
                        "&amp; long contexts"
                    ),
                },
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": "Source: deterministic rules · 1 more hypothesis in Vigil",
                    }
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Review"},
                        "url": permalink(event),
                        "action_id": "review_analysis",
                        "value": str(analysis.pk),
                        "style": "primary",
                    }
                ],
            },
        ],
        "unfurl_links": False,
        "unfurl_media": False,
    }
    # The parent now shows the top hypothesis, and still opens the opening event.
    assert update.method == "chat.update"
    assert update.json == {
        "channel": CHANNEL,
        "ts": "1700000000.000001",
        "text": f"[critical] Incident #{incident.pk}: KVCacheHigh summary (open)",
        "blocks": parent_blocks(
            incident,
            permalink(opened),
            top="kv-cache-saturation of Deployment llm/chat-api (87%) · rules",
        ),
    }
    assert SlackMessage.objects.get(event=event).thread_ts == "1700000000.000001"
    # "Review" lands on the event, which links to the analysis and its review controls.
    client.force_login(personas["responder"])
    row = _highlighted_row(client.get(_path(permalink(event))).content.decode())
    review = f"/incidents/{incident.pk}/#analysis"
    assert f'<a class="goto-link" href="{review}">Review the analysis</a>' in row
    page = client.get(_path(review)).content.decode()
    assert 'id="analysis"' in page and ">Approve<" in page


def test_an_llm_narrative_is_announced_with_its_model_and_its_own_ranking(standin, incident):
    announce(event_of(incident, Kind.INCIDENT_OPENED))
    analysis, _ = ready_analysis(incident)
    analysis.hypotheses = list(reversed(analysis.rules_hypotheses))
    analysis.source, analysis.model = "llm", "gpt-test"
    analysis.save()
    narrated = TimelineEvent.objects.create(
        incident=incident,
        kind=Kind.ANALYSIS_NARRATED,
        actor="vigil",
        summary="Narrative written by gpt-test",
        payload={"analysis": analysis.pk, "model": "gpt-test"},
    )
    standin.forget()
    announce(narrated)

    replies = standin.calls("chat.postMessage")
    # The rules' analysis_ready went first (in timeline order), then the narrative.
    assert [r.json["blocks"][0]["text"]["text"].split("\n")[0] for r in replies] == [
        "*Analysis ready*",
        "*Analysis narrated*",
    ]
    narrative = replies[1].json["blocks"]
    assert narrative[0]["text"]["text"].startswith(
        "*Analysis narrated*\n*Top hypothesis:* bad-deploy of Deployment llm/chat-api (40%)"
    )
    assert narrative[1]["elements"][0]["text"] == (
        "Source: LLM narrative (gpt-test) · 1 more hypothesis in Vigil"
    )
    assert narrative[2]["elements"][0]["url"] == permalink(narrated)


def _path(url: str) -> str:
    """The path and query of an absolute Vigil URL (what the test client requests)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _highlighted_row(html: str) -> str:
    match = re.search(r'<li id="event-\d+" class="[^"]*\bhighlighted\b.*?</li>', html, re.S)
    assert match, "no highlighted event on the page"
    return match.group(0)


def test_an_action_awaiting_approval_deep_links_to_its_preview(client, standin, incident, personas):
    announce(event_of(incident, Kind.INCIDENT_OPENED))
    analysis, ready = ready_analysis(incident)
    announce(ready)
    proposal = ActionProposal.objects.create(
        incident=incident,
        analysis=analysis,
        action="none",
        params={"steps": "Drain the queue, then restart chat-api."},
        rationale="runbook",
    )
    remediation.preview(proposal, personas["responder"])
    previewed = event_of(incident, Kind.ACTION_PREVIEWED)
    standin.forget()

    announce(previewed)

    (reply,) = standin.calls("chat.postMessage")
    assert reply.json["thread_ts"] == "1700000000.000001"
    assert reply.json["blocks"] == [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (
                    "*Action awaiting approval*\n`none (runbook steps)`\nDry run: Nothing "
                    "automated: the runbook steps below are for the engineer to carry out"
                ),
            },
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "Previewed by responder · an approver decides in Vigil",
                }
            ],
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Review action"},
                    "url": permalink(previewed),
                    "action_id": "review_action",
                    "value": str(proposal.pk),
                    "style": "primary",
                }
            ],
        },
    ]
    assert permalink(previewed).endswith(f"?event={previewed.pk}#event-{previewed.pk}")
    # Following the button as an approver: the highlighted event links to the proposal's card,
    # where the Approve button is.
    client.force_login(personas["approver"])
    timeline = client.get(_path(permalink(previewed))).content.decode()
    row = _highlighted_row(timeline)
    card = f"/incidents/{incident.pk}/#action-{proposal.pk}"
    assert f'<a class="goto-link" href="{card}">Open action #{proposal.pk}</a>' in row
    page = client.get(_path(card)).content.decode()
    assert f'id="action-{proposal.pk}"' in page and ">Approve<" in page

    # A second dry run of the same waiting action (an expired preview) is no news.
    remediation.preview(proposal, personas["responder"])
    again = event_of(incident, Kind.ACTION_PREVIEWED)
    assert again.pk != previewed.pk
    standin.forget()
    assert announce(again) == "skipped"
    assert standin.calls("chat.postMessage") == []


def test_an_executed_action_is_announced_with_its_result(standin, incident, personas):
    announce(event_of(incident, Kind.INCIDENT_OPENED))
    proposal = ActionProposal.objects.create(
        incident=incident, action="none", params={"steps": "Restart chat-api by hand."}
    )
    remediation.preview(proposal, personas["responder"])
    remediation.approve(proposal, personas["approver"])
    remediation.run(proposal.pk)
    succeeded = event_of(incident, Kind.ACTION_SUCCEEDED)
    standin.forget()

    announce(succeeded)

    # The preview (awaiting approval when it was made) is announced first, in timeline order,
    # unless the action has moved on: by now it has, so only the result is posted.
    (reply,) = standin.calls("chat.postMessage")
    assert reply.json["blocks"] == [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (
                    "*:white_check_mark: Action succeeded*\nnone (runbook steps) succeeded: "
                    "runbook steps acknowledged"
                ),
            },
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open timeline"},
                    "url": permalink(succeeded),
                    "action_id": "open_timeline",
                    "value": str(proposal.pk),
                }
            ],
        },
    ]
    assert status_of(event_of(incident, Kind.ACTION_PREVIEWED)) == "skipped"


def test_a_failed_action_says_so(standin, incident):
    announce(event_of(incident, Kind.INCIDENT_OPENED))
    failed = TimelineEvent.objects.create(
        incident=incident,
        kind=Kind.ACTION_FAILED,
        actor="vigil",
        summary="rollout-undo on Deployment llm/chat-api failed: forbidden <403>",
        payload={"action": 7},
    )
    standin.forget()
    announce(failed)
    (reply,) = standin.calls("chat.postMessage")
    assert reply.json["blocks"][0]["text"]["text"] == (
        "*:x: Action failed*\nrollout-undo on Deployment llm/chat-api failed: forbidden &lt;403&gt;"
    )
    assert reply.json["blocks"][1]["elements"][0]["value"] == "7"


def test_resolving_replies_and_the_parent_shows_resolved(standin, incident):
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    announce(opened)
    standin.forget()
    event = services.incident_resolve(incident=incident, by="responder", note="rolled back")

    announce(event)

    reply, update = standin.calls()
    assert reply.json["blocks"][0] == {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": "*:white_check_mark: Resolved*\nResolved by responder: rolled back",
        },
    }
    assert reply.json["blocks"][1]["elements"][0]["text"].startswith("Open for ")
    assert reply.json["blocks"][2]["elements"][0]["url"] == permalink(event)
    assert update.method == "chat.update"
    assert update.json["blocks"] == parent_blocks(
        incident, permalink(opened), status=":white_check_mark: resolved"
    )
    assert SlackThread.objects.get(incident=incident).status == "resolved"


def test_acknowledging_only_updates_the_parent(standin, incident):
    announce(event_of(incident, Kind.INCIDENT_OPENED))
    standin.forget()
    event = services.incident_acknowledge(incident=incident, by="responder")
    announce(event)
    (update,) = standin.calls()
    assert update.method == "chat.update"
    assert update.json["blocks"][1]["fields"][0]["text"] == (
        "*Status*\n:large_orange_circle: acknowledged"
    )
    assert SlackMessage.objects.get(event=event).ts == "1700000000.000001"


def test_auto_resolution_is_announced_by_the_sweep(
    standin, client, am_token, incident, settings, monkeypatch
):
    # Ingest bulk-creates the auto-resolution: no signal, so the sweep finds it.
    import incidents.tasks

    announce(event_of(incident, Kind.INCIDENT_OPENED))
    post(client, group(resolved("KVCacheHigh", severity="critical", service="chat-api")), am_token)
    resolved_event = event_of(incident, Kind.INCIDENT_RESOLVED)
    settings.VIGIL_SWEEP_GRACE = timedelta(0)
    published = []
    monkeypatch.setattr(
        incidents.tasks, "publish", lambda task, *args: published.append((task.name, args)) or True
    )

    thread = SlackThread.objects.get(incident=incident)
    assert slack_sweep() == {"announcements": 1, "unfurls": 0, "parents": 1}
    assert published == [
        ("incidents.tasks.slack_announce", (resolved_event.pk,)),
        ("incidents.tasks.slack_refresh_parent", (thread.pk,)),
    ]
    standin.forget()
    announce(resolved_event)
    assert standin.calls("chat.postMessage")[0].json["blocks"][0]["text"]["text"] == (
        "*:white_check_mark: Resolved*\nResolved: all of its alerts have resolved"
    )
    assert slack_sweep() == {"announcements": 0, "unfurls": 0, "parents": 0}


def test_alerts_that_join_later_reach_the_parent_through_the_sweep(
    standin, client, am_token, incident
):
    """Joining alerts announce nothing, yet change the parent's "N firing of M"."""
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    announce(opened)
    thread = SlackThread.objects.get(incident=incident)
    labels = {"severity": "critical", "service": "chat-api"}
    joined = group(*[firing("KVCacheHigh", pod=f"p{i}", **labels) for i in range(3)])
    assert post(client, joined, am_token).json()["incidents"] == [incident.pk]
    standin.forget()

    assert slack.parents_to_refresh() == [thread.pk]
    assert slack.refresh_parent(thread.pk) == "refreshed"
    (update,) = standin.calls()
    assert update.method == "chat.update"
    assert update.json["blocks"] == parent_blocks(incident, permalink(opened))
    assert update.json["blocks"][1]["fields"][4]["text"] == "*Alerts*\n4 firing of 4"
    assert slack.parents_to_refresh() == []

    # A repeat changes nothing the parent shows: no call.
    standin.forget()
    post(client, joined, am_token)
    for thread_id in slack.parents_to_refresh():
        assert slack.refresh_parent(thread_id) == "refreshed"
    assert standin.calls() == []
    assert slack.parents_to_refresh() == []


def test_a_parent_refresh_waits_for_slack_and_never_races_a_sender(
    standin, client, am_token, incident
):
    announce(event_of(incident, Kind.INCIDENT_OPENED))
    thread = SlackThread.objects.get(incident=incident)
    post(client, group(firing("KVCacheHigh", pod="p9", severity="critical")), am_token)
    standin.forget()
    SlackThread.objects.filter(pk=thread.pk).update(
        lease_until=timezone.now() + timedelta(seconds=30)
    )
    assert slack.refresh_parent(thread.pk) == "busy"  # the lease holder updates the parent
    assert standin.calls() == []
    SlackThread.objects.filter(pk=thread.pk).update(lease_until=None)
    standin.rate_limit("chat.update", retry_after=7)
    assert slack.refresh_parent(thread.pk) == "later"
    assert slack.parents_to_refresh() == [thread.pk]  # the next sweep tries again
    assert slack.refresh_parent(thread.pk) == "later"  # not before Slack's wait is over
    assert len(standin.calls("chat.update")) == 1
    cache.clear()  # the wait is over
    assert slack.refresh_parent(thread.pk) == "refreshed"
    assert slack.parents_to_refresh() == []


def test_alert_text_cannot_inject_slack_markup(standin, client, am_token):
    incident = open_incident(client, am_token, "Evil<!channel>", namespace="a&b<c>")
    incident.title = "Ping <!channel> & <https://evil.example|click>"
    incident.save()
    announce(event_of(incident, Kind.INCIDENT_OPENED))
    (call,) = standin.calls()
    mrkdwn_parts = str([call.json["text"], call.json["blocks"][1:]])
    assert "<!channel>" not in mrkdwn_parts
    assert "<https://evil" not in mrkdwn_parts
    assert call.json["text"] == (
        f"[warning] Incident #{incident.pk}: Ping &lt;!channel&gt; &amp; "
        "&lt;https://evil.example|click&gt; (open)"
    )
    assert call.json["blocks"][1]["fields"][3] == {
        "type": "mrkdwn",
        "text": "*Namespace*\na&amp;b&lt;c&gt;",
    }
    # plain_text (the header) is not parsed by Slack: it stays as written.
    assert call.json["blocks"][0]["text"]["text"] == (
        f"#{incident.pk} Ping <!channel> & <https://evil.example|click>"
    )


def test_incidents_are_routed_by_their_alerts_labels(standin, client, am_token, settings):
    settings.VIGIL_SLACK_ROUTES = [
        ("team", "ml-platform", "C0ML"),
        ("namespace", "llm", "C0LLM"),
    ]
    by_namespace = open_incident(client, am_token, "A", namespace="llm")
    by_team = open_incident(client, am_token, "B", namespace="llm", team="ml-platform")
    default = open_incident(client, am_token, "C", namespace="search")
    for incident in (by_namespace, by_team, default):
        announce(event_of(incident, Kind.INCIDENT_OPENED))
    assert [c.json["channel"] for c in standin.calls("chat.postMessage")] == [
        "C0LLM",
        "C0ML",  # the first route that matches wins, in configuration order
        CHANNEL,
    ]


def test_without_a_default_channel_unrouted_incidents_are_not_announced(
    standin, client, am_token, settings
):
    settings.VIGIL_SLACK_CHANNEL = ""
    settings.VIGIL_SLACK_ROUTES = [("namespace", "llm", "C0LLM")]
    incident = open_incident(client, am_token, "C", namespace="search")
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    assert announce(opened) == "skipped"
    assert standin.calls() == []
    assert SlackMessage.objects.get(event=opened).error == (
        "no route matched and VIGIL_SLACK_CHANNEL is not set"
    )


def test_a_redelivered_task_never_posts_twice(standin, incident):
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    _, ready = ready_analysis(incident)
    for _ in range(3):
        announce(opened)
        announce(ready)
    # The analysis existed before the parent was posted, so the parent shows it: no update.
    assert [c.method for c in standin.calls()] == ["chat.postMessage", "chat.postMessage"]
    assert SlackMessage.objects.filter(incident=incident, status="sent").count() == 2


def test_a_reply_whose_parent_was_not_posted_yet_posts_the_parent_first(standin, incident):
    # The analysis task runs before the opened one (two workers, events close together).
    opened = event_of(incident, Kind.INCIDENT_OPENED)
    _, ready = ready_analysis(incident)
    announce(ready)
    announce(opened)
    parent, reply = standin.calls("chat.postMessage")
    assert "thread_ts" not in parent.json
    assert parent.json["blocks"][3]["elements"][0]["url"] == permalink(opened)
    assert reply.json["thread_ts"] == "1700000000.000001"
    assert status_of(opened) == status_of(ready) == "sent"


def test_webhook_mode_posts_one_message_per_announcement_without_threads(
    settings, client, am_token
):
    with SlackStandin() as standin:
        configure(settings, standin, mode="webhook")
        incident = open_incident(client, am_token, severity="critical")
        opened = event_of(incident, Kind.INCIDENT_OPENED)
        announce(opened)
        _, ready = ready_analysis(incident)
        announce(ready)
        acknowledged = services.incident_acknowledge(incident=incident, by="responder")
        assert announce(acknowledged) == "skipped"

        first, second = standin.calls()
        assert {first.method, second.method} == {"webhook"}
        assert first.json == {
            "text": f"[critical] Incident #{incident.pk}: KVCacheHigh summary (open)",
            "blocks": parent_blocks(incident, permalink(opened)),
            "unfurl_links": False,
            "unfurl_media": False,
        }
        # A message of its own names its incident; nothing threads, nothing is updated.
        assert "thread_ts" not in second.json
        assert second.json["blocks"][0] == {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"Incident #{incident.pk} KVCacheHigh summary"}
            ],
        }
        assert second.json["blocks"][-1]["elements"][0]["url"] == permalink(ready)
        assert SlackThread.objects.get(incident=incident).ts == ""


def test_an_incident_recorded_already_resolved_is_not_announced(standin, client, am_token):
    # Only resolutions of alerts never seen firing: Vigil keeps a record, nothing was open.
    response = post(client, group(resolved("NeverFired")), am_token)
    incident = Incident.objects.get(pk=response.json()["incidents"][0])
    assert incident.status == "resolved"
    assert announce(event_of(incident, Kind.INCIDENT_OPENED)) == "skipped"
    assert standin.calls() == []


def test_switching_from_webhook_to_bot_routes_the_incident_again(
    settings, client, am_token, standin
):
    configure(settings, standin, mode="webhook")
    incident = open_incident(client, am_token)
    announce(event_of(incident, Kind.INCIDENT_OPENED))
    configure(settings, standin, mode="bot")
    announce(services.incident_acknowledge(incident=incident, by="responder"))
    assert [c.method for c in standin.calls()] == ["webhook", "chat.postMessage"]
    assert SlackThread.objects.get(incident=incident).channel == CHANNEL
